"""`billtrail scheduler` (the jobs, as their own process), `billtrail sweep
past-due` (the daily sweep by hand, then delivery of what it queued) and
`billtrail notifications` (the notices recorded: proof of dunning, and those that
failed for good)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from datetime import datetime
from types import FrameType
from typing import Any

import click

from billtrail import bootstrap
from billtrail.cli import UsageFailure, cli, user_errors
from billtrail.cli.ledger_commands import open_ledger, parse_date
from billtrail.settings import Settings
from ledger.errors import LedgerError
from ledger.notifications.domain import DeliveryStatus, Notification
from scheduler.runner import Jobs, SchedulerProcess
from scheduler.webhooks import entity_webhook_secret

# A manual run waits this long for a scheduler that is running the same job.
MANUAL_WAIT = 60.0


def _log_to_stderr() -> None:
    """The jobs' one-line reports (and warnings) on stderr, as the process's log."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("billtrail scheduler: %(message)s"))
    for name in ("scheduler", "ledger", "projections"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _warnings(settings: Settings) -> list[str]:
    found = []
    if settings.smtp_url is None:
        found.append("BILLTRAIL_SMTP_URL is not set: email notices wait in the outbox")
    if not settings.admin_emails:
        found.append(
            "BILLTRAIL_ADMIN_EMAILS is not set: admins see past-due invoices in the portal only"
        )
    if not settings.secret_key:
        found.append("BILLTRAIL_SECRET_KEY is not set: customer webhooks cannot be signed")
    return found


@cli.command("scheduler")
@click.option(
    "--once", is_flag=True, help="Do what is owed now (a missed sweep, the notices due) and exit."
)
@user_errors(LedgerError)
def scheduler_command(once: bool) -> None:
    """Run the scheduled jobs: the daily past-due sweep, notice delivery every minute.
    Stops on Ctrl-C or SIGTERM, after the job that is running."""
    settings = Settings.from_env()
    jobs = bootstrap.scheduler_jobs(settings)
    process: SchedulerProcess | None = None
    try:
        _log_to_stderr()
        for warning in _warnings(settings):
            click.echo(f"billtrail scheduler: warning: {warning}", err=True)
        if once:
            jobs.start_up()
            return
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        process = SchedulerProcess(jobs)
        process.start()
        click.echo(
            f"billtrail scheduler: running ({jobs.ledger.backend}); "
            f"past-due sweep daily at {settings.sweep_at.strftime('%H:%M')} "
            f"{settings.timezone.key}; jobs: {', '.join(process.job_ids())}",
            err=True,
        )
        while not stop.wait(1.0):
            pass
        click.echo("billtrail scheduler: stopping", err=True)
    finally:
        if process is not None:
            process.shutdown()
        jobs.ledger.close()


@cli.group("sweep")
def sweep_group() -> None:
    """The scheduler's sweeps, run by hand."""


@sweep_group.command("past-due")
@click.option("--today", help="The day to sweep as (default: today in BILLTRAIL_TIMEZONE).")
@user_errors(LedgerError)
def sweep_past_due(today: str | None) -> None:
    """Move every open invoice whose due date is before TODAY to past due, queue its
    notices, then deliver what is due. Running it again for the same day does nothing
    more."""
    settings = Settings.from_env()
    day = parse_date(today, "--today") if today else datetime.now(settings.timezone).date()
    jobs: Jobs = bootstrap.scheduler_jobs(settings)
    try:
        for warning in _warnings(settings):
            click.echo(f"billtrail: warning: {warning}", err=True)
        outcome = jobs.past_due_sweep(day, wait=MANUAL_WAIT)
        if outcome is None:
            raise UsageFailure("the scheduler kept the past-due sweep busy; try again later")
        report = jobs.deliver_outbox(wait=MANUAL_WAIT)
    finally:
        jobs.ledger.close()
    click.echo(
        f"past-due sweep {day}: {len(outcome.marked)} invoice(s) moved to past due, "
        f"{len(outcome.queued)} notice(s) queued"
    )
    click.echo(f"delivered: {report}" if report else "delivered: nothing (the scheduler is on it)")


# notifications -------------------------------------------------------------------


@cli.group("notifications")
def notifications_group() -> None:
    """Notices to admins and customers, and how each delivery went."""


def notification_document(n: Notification) -> dict[str, Any]:
    return {
        "id": str(n.id),
        "invoice": n.invoice_stripe_id,
        "number": n.notice.number,
        "entity_id": n.notice.entity_id,
        "transition": n.transition,
        "audience": n.audience,
        "channel": n.channel,
        "recipient": n.recipient,
        "queued_at": n.created_on.isoformat(),
        "status": n.status.value,
        "attempts": n.attempts,
        "sent_at": n.sent_at.isoformat() if n.sent_at else None,
        "detail": n.detail or n.last_error,
    }


@notifications_group.command("list")
@click.option("--invoice", "ref", help="Only the notices about this invoice (number or Stripe id).")
@click.option("--failed", is_flag=True, help="Only the notices that failed for good.")
@click.option("--json", "as_json", is_flag=True, help="Last line: a JSON array.")
@user_errors(LedgerError)
def notifications_list(ref: str | None, failed: bool, as_json: bool) -> None:
    """Every notice about an invoice (the proof of dunning: channel, recipient, when,
    outcome), or every notice that failed for good."""
    if not ref and not failed:
        raise UsageFailure("give --invoice REF or --failed")
    with open_ledger() as (_, app):
        if ref:
            notes = app.notifications_of_invoice(app.find_invoice(ref).stripe_id)
        else:
            notes = app.undeliverable_notifications()
        if failed:
            notes = [n for n in notes if n.status is DeliveryStatus.GAVE_UP]
        docs = [notification_document(n) for n in notes]
    if as_json:
        click.echo(json.dumps(docs, sort_keys=True))
        return
    for d in docs:
        click.echo(
            f"{d['number']:<14} {d['audience']:<8} {d['channel']:<7} {d['status']:<9} "
            f"{d['attempts']:>2}  {d['recipient'] or '-'}  {d['detail']}"
        )
    click.echo(f"{len(docs)} notice(s)", err=True)


@notifications_group.command("webhook-secret")
@click.argument("entity")
@user_errors(LedgerError)
def webhook_secret(entity: str) -> None:
    """Print ENTITY's webhook signing secret, to hand to the customer."""
    with open_ledger() as (settings, app):
        app.entity(entity)
    if not settings.secret_key:
        raise UsageFailure("BILLTRAIL_SECRET_KEY is not set: webhooks are not signed")
    click.echo(entity_webhook_secret(settings.secret_key, entity))
