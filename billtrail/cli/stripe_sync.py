"""`billtrail sync [--since DATE]`: backfill and repair the ledger from Stripe's
invoices and events lists (adapters.stripe.sync), resumable from the cursor the
ledger keeps. A progress display on a terminal only; one summary line on stdout."""

from __future__ import annotations

import sys
from datetime import date, datetime
from typing import Any

import click

from billtrail import bootstrap
from billtrail.cli import UsageFailure, cli, user_errors
from billtrail.settings import Settings
from ledger.errors import LedgerError


class TerminalProgress:
    """Counters for the lists (Stripe gives no totals), a bar for the processing
    (its total is known); on stderr, so stdout stays the summary."""

    def __init__(self) -> None:
        self.phase = ""
        self.bar: Any = None
        self.shown = 0

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if phase != self.phase:
            self.close()
            self.phase, self.shown = phase, 0
        if total is None:
            click.echo(f"\r{phase}: {done} read", nl=False, err=True)
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=phase, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
        elif self.phase:
            click.echo("", err=True)


def _silent(phase: str, done: int, total: int | None) -> None:
    pass


def parse_since(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageFailure(f"--since: not a date (YYYY-MM-DD): {text!r}") from None


@cli.command("sync")
@click.option(
    "--since",
    metavar="DATE",
    help="Also re-read every invoice created on or after DATE (UTC), to repair.",
)
@user_errors(LedgerError)
def sync(since: str | None) -> None:
    """Backfill and repair the ledger from Stripe's invoices and events lists."""
    # Imported here, not with the module: every command registers, few call Stripe.
    import stripe

    from adapters.stripe.client import close_client, limiter_for
    from adapters.stripe.sync import run_sync

    day = parse_since(since)
    if day is not None and day > datetime.now().date():  # noqa: DTZ005 - a calendar day
        raise UsageFailure(f"--since: {day} is in the future")
    settings = Settings.from_env()
    app = bootstrap.ledger(settings, projections=True)
    client = bootstrap.stripe_client(settings)
    progress = TerminalProgress() if sys.stderr.isatty() else None
    try:
        report = run_sync(
            app,
            client,
            since=day,
            limiter=limiter_for(settings.stripe_api_key),
            progress=progress or _silent,
        )
    except stripe.AuthenticationError as exc:
        raise UsageFailure(f"Stripe refused STRIPE_API_KEY: {exc.user_message or exc}") from exc
    except stripe.StripeError as exc:
        raise UsageFailure(
            f"sync stopped, Stripe answered: {exc.user_message or exc}; "
            "run it again to resume where it stopped"
        ) from exc
    finally:
        if progress is not None:
            progress.close()
        close_client(client)
        app.close()
    if report.restarted:
        click.echo(
            "billtrail: warning: the last event synced is older than Stripe keeps; "
            "every invoice was re-read",
            err=True,
        )
    click.echo(f"sync {report.run}: {report.summary()}")
