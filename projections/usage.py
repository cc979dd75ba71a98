"""Usage per entity per day (calls, duplicates rejected, seconds, what was reported
to Stripe); a billing period's usage is the sum of its days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from eventsourcing.utils import get_topic

from ledger.usage.domain import Usage
from projections.base import SQLITE, Col, Delivered, FoldProjection, Store, Table, Tx

USAGE_DAYS = Table(
    name="proj_usage_days",
    cols=(
        Col("aggregate_id", "text", False),
        Col("entity_id", "text", False),
        Col("day", "date", False),
        Col("calls", "bigint", False),
        Col("duplicates", "bigint", False),
        Col("duration_seconds", "bigint", False),
        Col("reported_quantity", "bigint", False),
        Col("reports", "int", False),
        Col("updated_at", "timestamp", False),
        Col("position", "bigint", False),
    ),
    key=("aggregate_id",),
    unique=(("entity_id", "day"),),
)


class UsageProjection(FoldProjection):
    name = "usage"
    version = 1
    table = USAGE_DAYS
    tables = (USAGE_DAYS,)
    creates = (Usage.Begun,)
    topics = tuple(get_topic(c) for c in (Usage.Begun, Usage.CallsRecorded, Usage.UsageReported))

    def apply(self, row: dict[str, Any] | None, d: Delivered, tx: Tx) -> dict[str, Any] | None:
        e = d.event
        if isinstance(e, Usage.Begun):
            row = {
                "aggregate_id": e.originator_id.hex,
                "entity_id": e.entity_id,
                "day": e.day,
                "calls": 0,
                "duplicates": 0,
                "duration_seconds": 0,
                "reported_quantity": 0,
                "reports": 0,
            }
        elif row is None:
            return None
        else:
            row = dict(row)
            if isinstance(e, Usage.CallsRecorded):
                row["calls"] += len(e.calls)
                row["duplicates"] += len(e.duplicates)
                row["duration_seconds"] += sum(int(c[2]) for c in e.calls)
            elif isinstance(e, Usage.UsageReported):
                row["reported_quantity"] += e.quantity
                row["reports"] += 1
        row["updated_at"], row["position"] = e.timestamp, d.id
        return row


@dataclass(frozen=True)
class UsageDay:
    day: date
    calls: int
    duplicates: int
    duration_seconds: int
    reported_quantity: int


@dataclass(frozen=True)
class UsageTotal:
    entity_id: str
    start: date
    end: date  # exclusive
    calls: int
    duplicates: int
    duration_seconds: int
    reported_quantity: int
    days: list[UsageDay]


def usage_for_period(store: Store, entity_id: str, start: date, end: date) -> UsageTotal:
    """An entity's usage per day over [start, end) and its sum."""
    with store.reading() as tx:
        s, e = (start.isoformat(), end.isoformat()) if tx.backend == SQLITE else (start, end)
        rows = tx.select(
            USAGE_DAYS, "entity_id = ? AND day >= ? AND day < ?", (entity_id, s, e), "ORDER BY day"
        )
    days = [
        UsageDay(
            r["day"], r["calls"], r["duplicates"], r["duration_seconds"], r["reported_quantity"]
        )
        for r in rows
    ]
    return UsageTotal(
        entity_id,
        start,
        end,
        sum(d.calls for d in days),
        sum(d.duplicates for d in days),
        sum(d.duration_seconds for d in days),
        sum(d.reported_quantity for d in days),
        days,
    )
