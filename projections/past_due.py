"""The past-due queue (the portal's Past due page): every past-due invoice, oldest
due first, with what is still owed, how many days overdue it is on a given day,
and the last notice the ledger queued about it (the notifications read model's
delivery rows); and its aging, the same invoices in buckets of days overdue.

One SQL query for the whole queue, the last notice joined in (never a query per
invoice). The queue is the working set of unpaid invoices, not the invoice
history, so it is read whole and the buckets are summed from the same rows in
exact decimals (a text decimal summed by SQLite would be a float)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from projections.base import Store, decode

# (label, first day, last day) of days overdue; None: no upper bound.
BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-30", 0, 30),
    ("31-60", 31, 60),
    ("61-90", 61, 90),
    ("90+", 91, None),
)


@dataclass(frozen=True)
class LastNotice:
    audience: str
    channel: str
    recipient: str
    status: str
    at: datetime


@dataclass(frozen=True)
class PastDueRow:
    number: str
    stripe_id: str
    entity_id: str
    entity_name: str
    currency: str
    total: Decimal
    amount_due: Decimal
    due_date: date | None
    days_overdue: int
    last_notice: LastNotice | None


@dataclass(frozen=True)
class AgingBucket:
    label: str
    low: int
    high: int | None
    count: int = 0
    amounts: dict[str, Decimal] = field(default_factory=dict)  # currency -> amount due

    def holds(self, days: int) -> bool:
        return self.low <= days and (self.high is None or days <= self.high)


@dataclass(frozen=True)
class PastDueQueue:
    today: date
    rows: list[PastDueRow]
    buckets: list[AgingBucket]

    @property
    def currencies(self) -> list[str]:
        return sorted({r.currency for r in self.rows})

    def totals(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for r in self.rows:
            out[r.currency] = out.get(r.currency, Decimal(0)) + r.amount_due
        return out


def days_overdue(due_date: date | None, today: date) -> int:
    """Whole days since the due date; never negative (an invoice marked past due
    by a sweep run before its due date in another timezone counts as 0)."""
    return 0 if due_date is None else max((today - due_date).days, 0)


def aging(rows: Sequence[PastDueRow]) -> list[AgingBucket]:
    """The rows counted and summed per bucket of days overdue, per currency."""
    counts = {label: 0 for label, _, _ in BUCKETS}
    amounts: dict[str, dict[str, Decimal]] = {label: {} for label, _, _ in BUCKETS}
    shapes = [AgingBucket(label, low, high) for label, low, high in BUCKETS]
    for r in rows:
        bucket = next(b for b in shapes if b.holds(r.days_overdue))
        counts[bucket.label] += 1
        per = amounts[bucket.label]
        per[r.currency] = per.get(r.currency, Decimal(0)) + r.amount_due
    return [
        AgingBucket(b.label, b.low, b.high, counts[b.label], dict(sorted(amounts[b.label].items())))
        for b in shapes
    ]


# The last notice of each invoice: a correlated subquery on the notices'
# (invoice, position) index, so one index probe per past-due invoice.
_SQL = (
    "SELECT i.number, i.stripe_id, i.entity_id, i.entity_name, i.currency, i.total, "
    "i.credited, i.amount_paid, i.due_date, "
    "n.audience, n.channel, n.recipient, n.status, n.updated_at "
    "FROM {p}proj_invoices i "
    "LEFT JOIN {p}proj_notification_deliveries n ON n.notification_id = ("
    "SELECT m.notification_id FROM {p}proj_notification_deliveries m "
    "WHERE m.invoice_stripe_id = i.stripe_id ORDER BY m.position DESC LIMIT 1) "
    "WHERE i.status = ? ORDER BY i.due_date, i.seq"
)


def past_due_queue(store: Store, today: date) -> PastDueQueue:
    """Every past-due invoice, the longest overdue first, as of `today`."""
    with store.reading() as tx:
        raw = tx.execute(_SQL, ("past_due",))
    b = store.backend

    def dec(value: Any, type_: str) -> Any:
        return decode(value, type_, b)

    rows = []
    for r in raw:
        due = dec(r[8], "date")
        last = None
        if r[9] is not None:
            last = LastNotice(r[9], r[10], r[11], r[12], dec(r[13], "timestamp"))
        total = dec(r[5], "decimal")
        rows.append(
            PastDueRow(
                number=r[0] or r[1],
                stripe_id=r[1],
                entity_id=r[2],
                entity_name=r[3],
                currency=r[4],
                total=total,
                amount_due=total - dec(r[6], "decimal") - dec(r[7], "decimal"),
                due_date=due,
                days_overdue=days_overdue(due, today),
                last_notice=last,
            )
        )
    return PastDueQueue(today, rows, aging(rows))
