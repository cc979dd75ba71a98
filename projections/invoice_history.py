"""Invoice status history with valid-time ranges: one row per status an invoice
held, valid from the day the status took effect (the issue date, the day it was paid,
the day the monitor found it past due, ...) until the day the next one did, half
open, in UTC days. The whole invoice list as it stood on a past date joins these
rows (`InvoiceQuery(as_of=...)` in projections.invoices).

Effective days can arrive out of order (a payment made on the 9th reported after the
past-due sweep of the 10th): a status never takes effect before the one recorded
before it, so the ranges of one invoice never overlap; a status superseded on the
same day has an empty range and is in no day's list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from eventsourcing.utils import get_topic

from ledger.invoices.domain import Invoice
from projections.base import Col, Delivered, Projection, Store, Table, Tx, utc_day

HISTORY = Table(
    name="proj_invoice_status",
    cols=(
        Col("invoice_id", "text", False),
        Col("seq_no", "int", False),
        Col("status", "text", False),
        Col("valid_from", "date", False),
        Col("valid_to", "date"),
        Col("recorded_at", "timestamp", False),
        Col("source", "text", False),
        Col("position", "bigint", False),
    ),
    key=("invoice_id", "seq_no"),
)


def status_change(e: Any) -> tuple[str, date] | None:
    """The status an event starts and the day it takes effect, if it changes one."""
    if isinstance(e, Invoice.Drafted):
        # Stripe drafts an invoice when its period ends; an invoice recorded later
        # (a backfill) was a draft from then, not from the day the ledger learnt it.
        return "draft", min(utc_day(e.timestamp), e.period.end)
    if isinstance(e, Invoice.Issued):
        return "open", e.issue_date
    if isinstance(e, Invoice.Paid):
        return "paid", utc_day(e.paid_at)
    if isinstance(e, Invoice.BecamePastDue):
        return "past_due", e.on
    if isinstance(e, Invoice.Voided):
        return "void", utc_day(e.voided_at)
    if isinstance(e, Invoice.MarkedUncollectible):
        return "uncollectible", utc_day(e.marked_at)
    return None


class InvoiceHistoryProjection(Projection):
    name = "invoice_history"
    version = 1
    tables = (HISTORY,)
    topics = tuple(
        get_topic(c)
        for c in (
            Invoice.Drafted,
            Invoice.Issued,
            Invoice.Paid,
            Invoice.BecamePastDue,
            Invoice.Voided,
            Invoice.MarkedUncollectible,
        )
    )

    def process(self, tx: Tx, page: Sequence[Delivered]) -> None:
        current: dict[str, dict[str, Any]] = {}
        to_load = sorted(
            {d.event.originator_id.hex for d in page if not isinstance(d.event, Invoice.Drafted)}
        )
        for i in range(0, len(to_load), 500):
            clause, params = tx.in_list(to_load[i : i + 500])
            for row in tx.select(HISTORY, f"invoice_id {clause} AND valid_to IS NULL", params):
                current[row["invoice_id"]] = row
        written: dict[tuple[str, int], dict[str, Any]] = {}
        for d in page:
            change = status_change(d.event)
            if change is None:
                continue
            status, day = change
            key = d.event.originator_id.hex
            previous = current.get(key)
            seq_no = 1
            if previous is not None:
                day = max(day, previous["valid_from"])
                previous["valid_to"] = day
                written[(key, previous["seq_no"])] = previous
                seq_no = previous["seq_no"] + 1
            row = {
                "invoice_id": key,
                "seq_no": seq_no,
                "status": status,
                "valid_from": day,
                "valid_to": None,
                "recorded_at": d.event.timestamp,
                "source": str(d.event.source),
                "position": d.id,
            }
            current[key] = written[(key, seq_no)] = row
        tx.upsert(HISTORY, written.values())


@dataclass(frozen=True)
class StatusSpan:
    status: str
    valid_from: date
    valid_to: date | None
    recorded_at: datetime
    source: str


def invoice_status_history(store: Store, stripe_id: str) -> list[StatusSpan]:
    """The statuses of one invoice in order, each with its valid-time range."""
    key = Invoice.create_id(stripe_id).hex
    with store.reading() as tx:
        rows = tx.select(HISTORY, "invoice_id = ?", (key,), "ORDER BY seq_no")
    return [
        StatusSpan(r["status"], r["valid_from"], r["valid_to"], r["recorded_at"], r["source"])
        for r in rows
    ]


def status_on(store: Store, stripe_id: str, day: date) -> str | None:
    """The invoice's status on `day` (None before it existed)."""
    for span in invoice_status_history(store, stripe_id):
        if span.valid_from <= day and (span.valid_to is None or day < span.valid_to):
            return span.status
    return None


__all__ = ["HISTORY", "InvoiceHistoryProjection", "StatusSpan", "invoice_status_history"]
