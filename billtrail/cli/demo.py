"""`billtrail demo`: build the demo world and say how to use it."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from billtrail import bootstrap
from billtrail.cli import cli, user_errors
from billtrail.cli.serve import serve_portal
from billtrail.settings import SANDBOX_API_KEY, Settings
from ledger.errors import LedgerError

STATE_FILE = "stripe-sandbox.json"


@contextmanager
def stripe_for_demo(settings: Settings, directory: Path) -> Iterator[tuple[object, str]]:
    """A Stripe client: on STRIPE_API_BASE when it is set, else on a sandbox run in
    process, whose state is saved in DIR at the end (for `billtrail stripe-sandbox
    --state`). Yields the client and a line saying where Stripe is."""
    from adapters.stripe.client import close_client, make_client

    if settings.stripe_api_base:
        where = f"Stripe: {settings.stripe_api_base} (STRIPE_API_BASE)"
        if _reset_sandbox(settings.stripe_api_base):
            where += ", a sandbox, reset first: the world is built from scratch"
        client = make_client(settings.stripe_api_key, settings.stripe_api_base)
        try:
            yield client, where
        finally:
            close_client(client)
        return
    from adapters.stripe.sandbox import start_sandbox

    state = directory / STATE_FILE
    state.unlink(missing_ok=True)
    running = start_sandbox()
    client = make_client(running.api_key, running.url)
    try:
        yield client, f"Stripe: the sandbox in process; its state is saved in {state}"
    finally:
        close_client(client)
        running.sandbox.state_file = state  # saved once, as the sandbox stops
        running.stop()


@contextmanager
def stripe_while_serving(settings: Settings, directory: Path, portal: str) -> Iterator[Settings]:
    """The settings the portal serves the demo with: Stripe where the world was built.
    On STRIPE_API_BASE as it is; else the sandbox again, from the state the build
    saved, with its webhooks sent to the portal (so an admin's action on an invoice
    comes back from Stripe as it would in production), until the portal stops."""
    if settings.stripe_api_base:
        yield settings
        return
    from adapters.stripe.client import close_client, make_client
    from adapters.stripe.sandbox import start_sandbox
    from adapters.stripe.sync import EVENT_TYPES

    running = start_sandbox(state_file=directory / STATE_FILE)
    client = make_client(running.api_key, running.url)
    try:
        # The types billtrail follows (sync's list); the SDK types each as a literal.
        followed: Any = list(EVENT_TYPES)
        endpoint = client.v1.webhook_endpoints.create(
            {"url": f"{portal}stripe/webhook", "enabled_events": followed}
        )
        assert endpoint.secret is not None  # Stripe shows it once, on creation
        env = {
            **settings.env,
            "STRIPE_API_BASE": running.url,
            "STRIPE_API_KEY": running.api_key,
            "STRIPE_WEBHOOK_SECRET": endpoint.secret,
        }
        try:
            yield Settings.from_env(env)
        finally:
            # The saved state must not keep sending webhooks to a portal that is gone.
            client.v1.webhook_endpoints.delete(endpoint.id)
    finally:
        close_client(client)
        running.stop()


def serve_demo(settings: Settings, directory: Path, host: str, port: int) -> None:
    """Serve the demo's portal until Ctrl-C or SIGTERM; either way the sandbox stops
    and saves its state."""
    portal = f"http://{host}:{port}/"

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # what the development server stops on

    # SIGINT too: a shell starting the demo in the background would ignore Ctrl-C.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with stripe_while_serving(settings, directory, portal) as serving:
            click.echo(f"\nThe portal on {portal}  (Ctrl-C stops it)")
            serve_portal(serving, host, port)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _reset_sandbox(base: str) -> bool:
    """Empty the sandbox at `base` (True), or leave alone what is not one (False):
    the demo builds its world from scratch, in Stripe as in its database, or the
    invoices of earlier runs (same entity ids) would come back through `sync`."""
    import urllib.error

    from adapters.stripe.sandbox import SandboxControl, SandboxControlError

    try:
        SandboxControl(base).reset()
    except (SandboxControlError, urllib.error.URLError, ValueError):
        return False
    return True


@cli.command("demo")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--no-serve", is_flag=True, help="build the world and exit")
@user_errors(LedgerError)
def demo(directory: Path, seed: int, port: int, no_serve: bool) -> None:
    """Build a realistic quarter of billing in DIR/billtrail.db, from scratch, with
    Stripe (the sandbox in process, or STRIPE_API_BASE when set: a sandbox there is
    reset first) billing it."""
    from billtrail.demo import STORY_STARTS, SimulatedClock, add_logins, build_world

    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "billtrail.db"
    for stale in (db, db.with_name("billtrail.db-wal"), db.with_name("billtrail.db-shm")):
        stale.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    env = {**os.environ, "BILLTRAIL_DATABASE_URL": url, "BILLTRAIL_VAR_DIR": str(directory)}
    env.pop("BILLTRAIL_SEAL_KEY", None)
    settings = Settings.from_env(env)
    # The story starts before the quarter it bills (recorded times included).
    clock = SimulatedClock(STORY_STARTS)
    started = time.monotonic()
    app = bootstrap.ledger(settings, clock=clock)
    try:
        with stripe_for_demo(settings, directory) as (client, where):
            report = build_world(
                app,
                clock,
                directory,
                seed,
                client,  # type: ignore[arg-type]
                say=click.echo,
                ledger_factory=lambda: bootstrap.ledger(settings, clock=clock),
                # Each run's keys are its own: a long-lived sandbox has seen others.
                key_prefix=f"demo-{uuid.uuid4().hex[:8]}/",
            )
        logins = add_logins(app)
        checked = app.verify_seal().checked
    finally:
        app.close()
    click.echo(
        f"built in {time.monotonic() - started:.1f}s: {report.entities} entities, "
        f"{report.calls_written} calls with {report.duplicates_planted} duplicates planted, "
        f"{report.meter_events} meter events pushed, {report.webhooks} webhooks received, "
        f"{checked} events sealed"
    )
    click.echo(where)
    for correction in report.corrections:
        click.echo(f"correction: {correction}")
    for finding in report.findings:
        click.echo(f"reconcile: {finding}")
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(report.statuses.items()))
    click.echo(f"invoices: {sum(report.statuses.values())} ({statuses})")
    click.echo("\nUse it with the other commands:")
    click.echo(f"  export BILLTRAIL_DATABASE_URL={url}")
    click.echo(f"  export BILLTRAIL_VAR_DIR={directory}")
    if not settings.stripe_api_base:
        click.echo(f"  billtrail stripe-sandbox --state {directory / STATE_FILE} &")
        click.echo(
            f"  export STRIPE_API_BASE=http://127.0.0.1:12111 STRIPE_API_KEY={SANDBOX_API_KEY}"
        )
    click.echo(
        "  billtrail entities list; billtrail invoices list; billtrail history rate "
        "harbour-dental-group; billtrail verify"
    )
    click.echo("\nPortal logins (passwords made for this run):")
    for login in logins:
        entity = f" of {login.entity_id}" if login.entity_id else ""
        click.echo(f"  {login.role}{entity}: {login.email}  password: {login.password}")
    if no_serve:
        click.echo("  serve it with: billtrail serve")
        return
    serve_demo(settings, directory, "127.0.0.1", port)
