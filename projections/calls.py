"""Every recorded call, for the Calls page and dispute evidence: clustered by entity
and day so a period's calls are one range read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from eventsourcing.utils import get_topic

from ledger.usage.domain import Usage
from projections.base import (
    POSTGRES,
    SQLITE,
    Col,
    Delivered,
    Projection,
    Store,
    Table,
    Tx,
    decode,
    timestamp_text,
)

CALLS = Table(
    name="proj_calls",
    cols=(
        Col("entity_id", "text", False),
        Col("day", "date", False),
        Col("started_at", "timestamp", False),
        Col("call_id", "text", False),
        Col("duration_seconds", "int", False),
        Col("source", "text", False),
        Col("position", "bigint", False),
    ),
    key=("entity_id", "day", "started_at", "call_id"),
)

DAYS = Table(
    name="proj_calls_days",
    cols=(
        Col("aggregate_id", "text", False),
        Col("entity_id", "text", False),
        Col("day", "date", False),
    ),
    key=("aggregate_id",),
)


def _started(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class CallsProjection(Projection):
    name = "calls"
    version = 1
    tables = (CALLS, DAYS)
    topics = tuple(get_topic(c) for c in (Usage.Begun, Usage.CallsRecorded))

    def process(self, tx: Tx, page: Sequence[Delivered]) -> None:
        days: dict[str, tuple[str, date]] = {}
        new_days = []
        for d in page:
            if isinstance(d.event, Usage.Begun):
                key = d.event.originator_id.hex
                days[key] = (d.event.entity_id, d.event.day)
                new_days.append(
                    {"aggregate_id": key, "entity_id": d.event.entity_id, "day": d.event.day}
                )
        missing = sorted(
            {d.event.originator_id.hex for d in page if d.event.originator_id.hex not in days}
        )
        for row in tx.select_in(DAYS, "aggregate_id", missing):
            days[row["aggregate_id"]] = (row["entity_id"], row["day"])
        tx.insert(DAYS, new_days)
        rows: list[tuple[Any, ...]] = []
        pg = tx.backend == POSTGRES
        for d in page:
            if not isinstance(d.event, Usage.CallsRecorded):
                continue
            entity_id, day = days[d.event.originator_id.hex]
            day_value = day if pg else day.isoformat()
            source = str(d.event.source)
            for call_id, started_at, seconds in d.event.calls:
                # Stored calls carry UTC second-precision "...Z" text; SQLite keeps the
                # read models' fixed-width timestamp text so text order is time order.
                started: Any = _started(started_at) if pg else started_at[:-1] + ".000000Z"
                rows.append((entity_id, day_value, started, call_id, seconds, source, d.id))
        tx.copy_rows("proj_calls", CALLS.col_names, rows)


@dataclass(frozen=True)
class CallRow:
    call_id: str
    entity_id: str
    day: date
    started_at: datetime
    duration_seconds: int
    source: str


@dataclass(frozen=True)
class CallPage:
    rows: list[CallRow]
    next_cursor: tuple[date, datetime, str] | None


def calls_of(
    store: Store,
    entity_id: str,
    start: date,
    end: date,
    *,
    limit: int = 500,
    after: tuple[date, datetime, str] | None = None,
) -> CallPage:
    """An entity's calls on the (local) days [start, end), in time order, a page at a
    time: pass `next_cursor` back as `after`."""
    select = (
        "SELECT call_id, entity_id, day, started_at, duration_seconds, source "
        "FROM {p}proj_calls WHERE entity_id = ? AND "
    )
    order = " ORDER BY entity_id, day, started_at, call_id LIMIT ?"
    with store.reading() as tx:
        sqlite = tx.backend == SQLITE

        def day(v: date) -> Any:
            return v.isoformat() if sqlite else v

        rows: list[tuple[Any, ...]] = []
        first_day = start
        if after is not None:
            # Two plain range reads, never a row-value comparison: SQLite does not
            # bound an index range by `(day, started_at, call_id) > (...)`, so a
            # deep page would re-read every call before it.
            a_day, a_started, a_call = after
            started: Any = timestamp_text(a_started) if sqlite else a_started
            rows = tx.execute(
                select + "day = ? AND started_at >= ? AND (started_at > ? OR call_id > ?)" + order,
                [entity_id, day(a_day), started, started, a_call, limit + 1],
            )
            first_day = a_day + timedelta(days=1)
        if len(rows) <= limit:
            rows += tx.execute(
                select + "day >= ? AND day < ?" + order,
                [entity_id, day(max(first_day, start)), day(end), limit + 1 - len(rows)],
            )
    result = [
        CallRow(
            r[0],
            r[1],
            decode(r[2], "date", store.backend),
            decode(r[3], "timestamp", store.backend),
            int(r[4]),
            r[5],
        )
        for r in rows[:limit]
    ]
    cursor = None
    if len(rows) > limit:
        last = result[-1]
        cursor = (last.day, last.started_at, last.call_id)
    return CallPage(result, cursor)
