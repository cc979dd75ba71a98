"""`billtrail projections run|rebuild|status` and `billtrail invoices list`, which
reads the invoice read model."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal, InvalidOperation
from types import FrameType

import click

from billtrail import bootstrap
from billtrail.cli import UsageFailure, cli, user_errors
from billtrail.settings import Settings
from ledger.app import Ledger
from projections.invoices import STATUSES, InvalidQuery, InvoiceQuery, InvoiceRow, list_invoices
from projections.runner import PAGE, Runner, UnknownProjection


@contextmanager
def open_runner(page: int = PAGE) -> Iterator[tuple[Ledger, Runner]]:
    settings = Settings.from_env()
    app = bootstrap.ledger(settings)
    try:
        yield app, Runner(app, page=page)
    finally:
        app.close()


page_option = click.option(
    "--page",
    type=click.IntRange(1, 100_000),
    default=PAGE,
    show_default=True,
    help="Events per transaction.",
)


@cli.group("projections")
def projections_group() -> None:
    """The read models: follow the ledger's log, rebuild, show lag."""


@projections_group.command("run")
@click.option("--once", is_flag=True, help="Catch up to the head of the log and exit.")
@click.option(
    "--interval",
    type=click.FloatRange(0.05, 3600),
    default=0.5,
    show_default=True,
    help="Seconds between polls (SQLite; PostgreSQL is notified of each write).",
)
@page_option
@user_errors()
def run(once: bool, interval: float, page: int) -> None:
    """Keep the read models up to date: on PostgreSQL follow the log live, on
    SQLite poll it."""
    with open_runner(page) as (app, runner):
        if once:
            applied = runner.catch_up()
            head = app.recorder.max_notification_id() or 0
            click.echo(f"caught up: {applied} events applied, position {head}")
            return

        def stop(signum: int, frame: FrameType | None) -> None:
            runner.stop()

        signal.signal(signal.SIGTERM, stop)
        click.echo(f"projections: following the log ({app.backend}); Ctrl-C stops", err=True)
        try:
            if app.backend == "postgres":
                runner.follow()
            else:
                runner.poll(interval)
        except KeyboardInterrupt:
            runner.stop()


@projections_group.command("rebuild")
@click.argument("name", required=False)
@page_option
@user_errors(UnknownProjection)
def rebuild(name: str | None, page: int) -> None:
    """Rebuild one read model (or all) from the start of the log. Resumable: if it
    stops half way, `run` (or `run --once`) finishes it."""
    with open_runner(page) as (app, runner):
        names = [name] if name else None
        runner.select(names)
        head = app.recorder.max_notification_id() or 0
        with click.progressbar(
            length=max(head, 1), label=f"rebuilding {name or 'all'}", file=sys.stderr
        ) as bar:
            done = [0]

            def progress(position: int, _head: int) -> None:
                bar.update(max(0, position - done[0]))
                done[0] = max(done[0], position)

            applied = runner.rebuild(names, progress)
        click.echo(f"rebuilt {name or 'all'}: {applied} events applied up to {head}")


@projections_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@user_errors()
def status(as_json: bool) -> None:
    """Each read model's position in the log, its lag, and the events it has still
    to apply."""
    with open_runner() as (_app, runner):
        rows = runner.status()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "projection": s.projection,
                        "tracking_name": s.tracking_name,
                        "position": s.position,
                        "head": s.head,
                        "lag": s.lag,
                        "pending": s.pending,
                    }
                    for s in rows
                ]
            )
        )
        return
    click.echo(f"{'PROJECTION':<16} {'POSITION':>10} {'HEAD':>10} {'LAG':>8} {'PENDING':>8}")
    for s in rows:
        click.echo(f"{s.projection:<16} {s.position:>10} {s.head:>10} {s.lag:>8} {s.pending:>8}")


# invoices ----------------------------------------------------------------------


@cli.group("invoices")
def invoices_group() -> None:
    """Invoices, from the invoice read model."""


def _date(text: str | None, what: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageFailure(f"{what} must be a date like 2026-02-01, not {text!r}") from None


def _amount(text: str | None, what: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UsageFailure(f"{what} must be an amount like 12.50, not {text!r}") from None
    if not value.is_finite():
        raise UsageFailure(f"{what} must be an amount like 12.50, not {text!r}")
    return value


@invoices_group.command("list")
@click.option("--status", help=f"One of: {', '.join(STATUSES)}.")
@click.option("--entity", "entity_id", help="Entity id.")
@click.option("--from", "from_", help="Issued on or after this date.")
@click.option("--to", help="Issued on or before this date.")
@click.option("--search", help="Text in the invoice number or the entity's name.")
@click.option("--as-of", "as_of", help="The list as it stood on this date.")
@click.option("--min-total", help="Total at least this amount.")
@click.option("--max-total", help="Total at most this amount.")
@click.option("--sort", type=click.Choice(["date", "total"]), default="date", show_default=True)
@click.option("--asc", is_flag=True, help="Oldest (or smallest) first.")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Last line: a JSON array of invoices.")
@user_errors(InvalidQuery)
def list_command(
    status: str | None,
    entity_id: str | None,
    from_: str | None,
    to: str | None,
    search: str | None,
    as_of: str | None,
    min_total: str | None,
    max_total: str | None,
    sort: str,
    asc: bool,
    limit: int | None,
    as_json: bool,
) -> None:
    """List invoices, newest first."""
    query = InvoiceQuery(
        entity_id=entity_id,
        status=status.lower().replace("-", "_") if status else None,
        issued_from=_date(from_, "--from"),
        issued_to=_date(to, "--to"),
        total_min=_amount(min_total, "--min-total"),
        total_max=_amount(max_total, "--max-total"),
        search=search,
        as_of=_date(as_of, "--as-of"),
        sort=sort,
        descending=not asc,
    )
    with open_runner() as (app, runner):
        if app.backend == "sqlite":
            # The embedded mode has no follower process: bring the list up to date.
            runner.catch_up()
        rows = _all_rows(runner, query, limit)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows]))
        return
    for r in rows:
        click.echo(
            f"{r.number or '(draft)':<20} {r.status:<13} {_iso(r.issue_date):<10} "
            f"{_iso(r.due_date):<10} {r.total:>14} {r.currency.upper():<3}  "
            f"{r.entity_name} ({r.entity_id})"
        )
    click.echo(f"{len(rows)} invoice{'s' if len(rows) != 1 else ''}", err=True)


def _iso(day: date | None) -> str:
    return day.isoformat() if day else "-"


def _all_rows(runner: Runner, query: InvoiceQuery, limit: int | None) -> list[InvoiceRow]:
    rows: list[InvoiceRow] = []
    after: str | None = None
    while limit is None or len(rows) < limit:
        want = 1000 if limit is None else min(1000, limit - len(rows))
        page = list_invoices(runner.store, query, limit=want, after=after)
        rows += page.rows
        if page.next_cursor is None:
            break
        after = page.next_cursor
    return rows
