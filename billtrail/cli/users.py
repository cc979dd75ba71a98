"""`billtrail users`: the portal's logins (admins, and customers bound to one entity)."""

from __future__ import annotations

import sys

import click

from billtrail.cli import UsageFailure, cli, user_errors
from billtrail.cli.ledger_commands import cli_source, emit_json, open_ledger
from ledger.errors import LedgerError


def read_password() -> str:
    """The password: typed twice at a terminal, else the first line of stdin (so
    it never appears in the process list or the shell's history)."""
    if sys.stdin.isatty():
        password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        return password
    line = sys.stdin.readline()
    if not line:
        raise UsageFailure('give the password on stdin, e.g. `printf %s "$PW" | billtrail ...`')
    return line.rstrip("\r\n")


@cli.group()
def users() -> None:
    """Portal logins and API tokens."""


@users.command("add")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(["admin", "customer"]))
@click.option("--entity", "entity_id", default=None, help="the customer's billable entity")
@user_errors(LedgerError)
def users_add(email: str, role: str, entity_id: str | None) -> None:
    """Add a login; the password is read from stdin."""
    password = read_password()
    with open_ledger() as (_, app):
        user = app.add_user(email, role, password, cli_source("users-add"), entity_id=entity_id)
    click.echo(user.email)


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
@user_errors(LedgerError)
def users_list(as_json: bool) -> None:
    """Every login, with its role and entity."""
    with open_ledger() as (_, app):
        rows = [
            {"email": u.email, "role": u.role, "entity_id": u.entity_id, "disabled": u.disabled}
            for u in app.users()
        ]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        state = " (disabled)" if row["disabled"] else ""
        entity = f" {row['entity_id']}" if row["entity_id"] else ""
        click.echo(f"{row['email']}\t{row['role']}{entity}{state}")


@users.command("password")
@click.argument("email")
@user_errors(LedgerError)
def users_password(email: str) -> None:
    """Set a new password (read from stdin)."""
    password = read_password()
    with open_ledger() as (_, app):
        app.change_password(email, password, cli_source("users-password"))
    click.echo(f"password changed for {email.strip().lower()}")


@users.command("disable")
@click.argument("email")
@click.option("--reason", required=True)
@user_errors(LedgerError)
def users_disable(email: str, reason: str) -> None:
    """Disable a login: its sessions and API tokens stop working at once."""
    with open_ledger() as (_, app):
        changed = app.disable_user(email, reason, cli_source("users-disable"))
    click.echo("disabled" if changed else "already disabled")


@users.command("token")
@click.argument("email")
@click.option("--label", default="api", show_default=True, help="what the token is for")
@user_errors(LedgerError)
def users_token(email: str, label: str) -> None:
    """Issue an API bearer token for the user; printed once, stored only as a hash."""
    with open_ledger() as (_, app):
        token = app.issue_api_token(email, label, cli_source("users-token"))
    click.echo(token)
