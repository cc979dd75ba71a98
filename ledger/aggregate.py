"""The base of billtrail's aggregates: every event carries its `source`, and every
command takes the instant it is recorded at (`at`) from the application's clock, so
event bodies never read the clock themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from ledger.sources import Source


class LedgerAggregate(Aggregate):
    TOPIC = "billtrail:LedgerAggregate"

    class Event(Aggregate.Event):
        source: Source

    class Created(Event, Aggregate.Created):
        TOPIC = "billtrail:LedgerAggregate.Created"

    def _record(self, event_class: type[Aggregate.Event], at: datetime, **kwargs: Any) -> None:
        self.trigger_event(event_class, timestamp=at, **kwargs)
