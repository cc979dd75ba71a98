"""The past-due sweep's two halves outside the ledger: which invoices to look at
(the invoice list's open invoices due before the day, read after catching the list
up with the log) and which day a scheduler that was down has still to sweep.

The ledger decides each candidate again on the invoice itself, so the list only
has to be complete, not exact."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from ledger.app import Ledger
from ledger.notifications.application import SweepOutcome
from ledger.sources import Source, SourceKind
from projections.base import Store, encode
from projections.runner import Runner

INVOICES = "invoices"


def sweep_source(today: date) -> Source:
    """One source per swept day, whoever runs it (the daily job, a catch-up on start,
    `billtrail sweep past-due`): the events of a day's sweep all name the same run."""
    return Source(SourceKind.SCHEDULER_RUN, f"past-due/{today.isoformat()}")


def overdue_invoices(store: Store, today: date) -> list[str]:
    """Stripe ids of the open invoices whose due date is before `today`, in the order
    first recorded (from the invoice list's table, through its status index)."""
    with store.reading() as tx:
        rows = tx.execute(
            "SELECT stripe_id FROM {p}proj_invoices WHERE status = ? AND due_date < ? ORDER BY seq",
            ("open", encode(today, "date", tx.backend)),
        )
    return [str(r[0]) for r in rows]


def run_past_due_sweep(
    ledger: Ledger, runner: Runner, today: date, admins: tuple[str, ...]
) -> SweepOutcome:
    # Read-your-writes: an invoice observed a moment ago must be in the list.
    runner.catch_up([INVOICES])
    candidates = overdue_invoices(runner.store, today)
    return ledger.sweep_past_due(today, sweep_source(today), candidates, admins)


def missed_sweep_day(last_swept: date | None, now_local: datetime, sweep_at: time) -> date | None:
    """The day a scheduler starting at `now_local` still owes a sweep for: the day of
    the latest scheduled sweep time that has passed, unless that day (or a later one)
    was swept already. None: nothing missed."""
    latest = now_local.date()
    if now_local.time() < sweep_at:
        latest -= timedelta(days=1)
    if last_swept is not None and last_swept >= latest:
        return None
    return latest
