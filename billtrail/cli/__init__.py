"""The `billtrail` command line. Each command parses its arguments, asks
`bootstrap` for the pieces it needs, calls one application command or query and
prints. A user's mistake is one line on stderr and exit code 2; a problem found
by `verify` or `explain` is exit code 1."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from billtrail.settings import SettingsError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_PROBLEM = 1
EXIT_USAGE = 2


class UsageFailure(click.ClickException):
    """Bad input from the user: one line on stderr, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"billtrail: {self.format_message()}", err=True)


def user_errors(*kinds: type[BaseException]) -> Callable[[F], F]:
    """Turn the listed exception kinds (plus bad settings) into UsageFailure."""

    def decorate(fn: F) -> F:
        caught: tuple[type[BaseException], ...] = (SettingsError, *kinds)

        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except caught as exc:
                raise UsageFailure(str(exc)) from exc

        return wrapper  # type: ignore[return-value]

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """billtrail: the invoices back office and its audit ledger."""


def _register_commands() -> None:
    # Each module adds its commands to `cli`; imported here, not at import time of
    # this module, so `billtrail --help` stays cheap and nothing runs on import.
    from billtrail.cli import (  # noqa: F401
        demo,
        explain,
        ledger_commands,
        projections,
        sandbox,
        scheduler,
        serve,
        stripe_commands,
        stripe_sync,
        users,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point. Click's own usage errors are folded into one line as well."""
    _register_commands()
    try:
        rv = cli.main(args=argv, prog_name="billtrail", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("billtrail: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        message = exc.format_message().replace("\n", " ")
        click.echo(f"billtrail: {message}", err=True)
        sys.exit(exc.exit_code if isinstance(exc, UsageFailure) else EXIT_USAGE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)
