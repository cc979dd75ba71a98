"""Usage: the calls one entity handled on one day (in the entity's time zone).
Keyed by entity and day, so the count of a billing period is the sum of its days.
A call id is counted once, ever: the application checks the whole ledger's call
index before recording, and the index's unique key refuses it in the same
transaction if another writer got there first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple
from uuid import UUID

from ledger.aggregate import LedgerAggregate
from ledger.errors import DuplicateCall, LedgerError
from ledger.sources import Source
from ledger.values import natural_id

# A call as stored inside CallsRecorded: [call_id, started_at (UTC, ISO 8601 with
# "Z"), duration_seconds]. Plain arrays of str and int keep a thousand calls per event
# cheap to encode and decode.
StoredCall = list[Any]


class Call(NamedTuple):
    """One call. A tuple, so it is stored as a plain JSON array (see StoredCall)."""

    call_id: str
    started_at: str
    duration_seconds: int

    def stored(self) -> StoredCall:
        return list(self)

    @classmethod
    def from_stored(cls, row: StoredCall) -> Call:
        return cls(str(row[0]), str(row[1]), int(row[2]))


@dataclass(frozen=True)
class UsageReport:
    quantity: int
    identifier: str
    reported_at: datetime
    kind: str
    source: Source


class InvalidUsageReport(LedgerError):
    pass


class Usage(LedgerAggregate):
    TOPIC = "billtrail:Usage"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:Usage.Created"

    class Begun(Created):
        TOPIC = "billtrail:Usage.Begun"
        entity_id: str
        day: date

    class CallsRecorded(Event):
        """New calls for the day, and the call ids rejected as duplicates of calls the
        ledger already had (counted, not recorded)."""

        TOPIC = "billtrail:Usage.CallsRecorded"
        calls: list[StoredCall]
        duplicates: list[str]

        def apply(self, aggregate: Any) -> None:
            aggregate.duration_seconds += sum(row[2] for row in self.calls)
            aggregate.calls += len(self.calls)
            aggregate.duplicates += len(self.duplicates)

    class UsageReported(Event):
        """A meter event was sent to Stripe for this day (kind: report or correction)."""

        TOPIC = "billtrail:Usage.UsageReported"
        quantity: int
        identifier: str
        reported_at: datetime
        kind: str

        def apply(self, aggregate: Any) -> None:
            aggregate.reports.append(
                UsageReport(
                    self.quantity, self.identifier, self.reported_at, self.kind, self.source
                )
            )

    def __init__(self, entity_id: str, day: date, source: Source) -> None:
        self.entity_id = entity_id
        self.day = day
        self.calls = 0
        self.duplicates = 0
        self.duration_seconds = 0
        self.reports: list[UsageReport] = []

    @staticmethod
    def create_id(entity_id: str, day: date) -> UUID:
        return natural_id("usage", entity_id, day.isoformat())

    @classmethod
    def begin(cls, entity_id: str, day: date, source: Source, at: datetime) -> Usage:
        return cls._create(
            cls.Begun,
            id=cls.create_id(entity_id, day),
            entity_id=entity_id,
            day=day,
            source=source,
            timestamp=at,
        )

    @property
    def reported_quantity(self) -> int:
        """What Stripe's meter holds for this day: the sum of every report."""
        return sum(r.quantity for r in self.reports)

    def record_calls(
        self, calls: list[Call], duplicates: list[str], source: Source, at: datetime
    ) -> bool:
        if not calls and not duplicates:
            return False
        # That a call id was never counted before, on any day, is the ledger's call
        # index's rule (ledger.persistence), enforced in the same transaction as this
        # event; a day holds counts, not ids, so loading it stays cheap.
        if len({call[0] for call in calls}) != len(calls):
            seen: set[str] = set()
            for call in calls:
                if call[0] in seen:
                    raise DuplicateCall(f"call {call[0]} appears twice for {self.day}")
                seen.add(call[0])
        # Call is a tuple: stored as a JSON array without a per-call conversion.
        self._record(
            self.CallsRecorded, at, calls=list(calls), duplicates=list(duplicates), source=source
        )
        return True

    def report_usage(
        self, quantity: int, identifier: str, reported_at: datetime, source: Source, at: datetime
    ) -> bool:
        """Record a push to Stripe. The first is a report; later ones carry the
        difference and are corrections."""
        if any(r.identifier == identifier for r in self.reports):
            return False
        if quantity == 0 and self.reports:
            raise InvalidUsageReport(f"a correction of {self.day} must change the quantity")
        kind = "correction" if self.reports else "report"
        self._record(
            self.UsageReported,
            at,
            quantity=quantity,
            identifier=identifier,
            reported_at=reported_at,
            kind=kind,
            source=source,
        )
        return True
