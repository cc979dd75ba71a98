"""The Stripe inbox: every Stripe event billtrail received, kept raw with its
SHA-256, and what became of it; and the cursor of the pull sync.

A `StripeEvent` is keyed by Stripe's event id, so receiving the same event twice
(a webhook retry, a redelivery, the same event found again by `sync`) collides on
the aggregate id and is stored once. Its life: `Received` (the acknowledgement:
the payload exactly as it came, and its digest), then one of `Processed` (the
invoice it is about was re-read from Stripe and observed), `Ignored` (nothing for
the ledger in it: an event type billtrail does not follow, a customer that is not
one of billtrail's, an invoice Stripe no longer has) or `Failed` (the re-read
invoice could not be recorded; kept visible and retried by `sync`).

A `SyncCursor` is where a pull sync stands in Stripe's lists, so a run that stops
halfway resumes where it stopped and the next run only reads what is new."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from ledger.aggregate import LedgerAggregate
from ledger.errors import LedgerError
from ledger.sources import Source
from ledger.values import natural_id


class InvalidStripeEvent(LedgerError):
    pass


class Channel(StrEnum):
    """How an event reached billtrail."""

    WEBHOOK = "webhook"  # POSTed by Stripe, signature verified
    EVENTS_LIST = "events_list"  # read from GET /v1/events by `sync`


class Disposition(StrEnum):
    RECEIVED = "received"  # stored, not yet processed
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


def sha256_hex(payload: str) -> str:
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IncomingStripeEvent:
    """What the adapter hands the ledger to store: the raw payload and the few
    fields read from it that the ledger indexes on. `invoice_id` is the invoice the
    event is about (None: the event is not about an invoice; it is stored and
    marked ignored with `ignore_reason`)."""

    event_id: str
    type: str
    object_id: str | None
    invoice_id: str | None
    created: int
    livemode: bool
    payload: str
    sha256: str
    channel: str
    ignore_reason: str = ""

    def __post_init__(self) -> None:
        if not self.event_id.startswith("evt_"):
            raise InvalidStripeEvent(f"not a Stripe event id: {self.event_id!r}")
        if not self.type:
            raise InvalidStripeEvent(f"Stripe event {self.event_id} has no type")
        Channel(self.channel)
        # The digest is what an auditor checks the stored payload against: it must be
        # the digest of exactly these bytes, not of some other rendering of them.
        if sha256_hex(self.payload) != self.sha256:
            raise InvalidStripeEvent(f"the SHA-256 given for {self.event_id} is not the payload's")
        if self.invoice_id is None and not self.ignore_reason:
            raise InvalidStripeEvent(f"{self.event_id}: an event about no invoice needs a reason")


class StripeEvent(LedgerAggregate):
    TOPIC = "billtrail:StripeEvent"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:StripeEvent.Created"

    class Received(Created):
        """Stored as it arrived (`payload` is the body, byte for byte as UTF-8)."""

        TOPIC = "billtrail:StripeEvent.Received"
        event_id: str
        type: str
        object_id: str | None
        invoice_id: str | None
        created: int
        livemode: bool
        channel: str
        payload: str
        sha256: str

    class Processed(Event):
        """The invoice was re-read from Stripe and observed. `observed_with` names the
        source the observation was recorded under (this event, a newer event of the
        same invoice whose re-read covered it, or a sync run)."""

        TOPIC = "billtrail:StripeEvent.Processed"
        invoice_id: str
        changed: bool
        observed_with: str

        def apply(self, aggregate: Any) -> None:
            aggregate.disposition = Disposition.PROCESSED
            aggregate.detail = ""

    class Ignored(Event):
        TOPIC = "billtrail:StripeEvent.Ignored"
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.disposition = Disposition.IGNORED
            aggregate.detail = self.reason

    class Failed(Event):
        TOPIC = "billtrail:StripeEvent.Failed"
        error: str

        def apply(self, aggregate: Any) -> None:
            aggregate.disposition = Disposition.FAILED
            aggregate.detail = self.error

    def __init__(
        self,
        event_id: str,
        type: str,
        object_id: str | None,
        invoice_id: str | None,
        created: int,
        livemode: bool,
        channel: str,
        payload: str,
        sha256: str,
        source: Source,
    ) -> None:
        self.event_id = event_id
        self.type = type
        self.object_id = object_id
        self.invoice_id = invoice_id
        self.created = created
        self.livemode = livemode
        self.channel = channel
        self.payload = payload
        self.sha256 = sha256
        self.disposition = Disposition.RECEIVED
        self.detail = ""

    @staticmethod
    def create_id(event_id: str) -> UUID:
        return natural_id("stripe_event", event_id)

    @classmethod
    def receive(cls, incoming: IncomingStripeEvent, source: Source, at: datetime) -> StripeEvent:
        event = cls._create(
            cls.Received,
            id=cls.create_id(incoming.event_id),
            event_id=incoming.event_id,
            type=incoming.type,
            object_id=incoming.object_id,
            invoice_id=incoming.invoice_id,
            created=incoming.created,
            livemode=incoming.livemode,
            channel=incoming.channel,
            payload=incoming.payload,
            sha256=incoming.sha256,
            source=source,
            timestamp=at,
        )
        if incoming.invoice_id is None:
            event.ignore(incoming.ignore_reason, source, at)
        return event

    @classmethod
    def receipt(
        cls, incoming: IncomingStripeEvent, source: Source, at: datetime
    ) -> list[StripeEvent.Event]:
        """The events `receive` records, made directly: the webhook endpoint stores
        them by the hundred and has no use for the aggregate object. (Replaying them
        builds the same aggregate as `receive`; the tests hold the two together.)"""
        originator_id = cls.create_id(incoming.event_id)
        # The event classes' fields are made by the library's metaclass at run time.
        received: Any = cls.Received
        events: list[StripeEvent.Event] = [
            received(
                originator_topic=get_topic(cls),
                originator_id=originator_id,
                originator_version=cls.INITIAL_VERSION,
                timestamp=at,
                event_id=incoming.event_id,
                type=incoming.type,
                object_id=incoming.object_id,
                invoice_id=incoming.invoice_id,
                created=incoming.created,
                livemode=incoming.livemode,
                channel=incoming.channel,
                payload=incoming.payload,
                sha256=incoming.sha256,
                source=source,
            )
        ]
        if incoming.invoice_id is None:
            ignored: Any = cls.Ignored
            events.append(
                ignored(
                    originator_id=originator_id,
                    originator_version=cls.INITIAL_VERSION + 1,
                    timestamp=at,
                    reason=incoming.ignore_reason,
                    source=source,
                )
            )
        return events

    @property
    def payload_intact(self) -> bool:
        return sha256_hex(self.payload) == self.sha256

    def process(
        self, invoice_id: str, changed: bool, observed_with: str, source: Source, at: datetime
    ) -> bool:
        if self.disposition in (Disposition.PROCESSED, Disposition.IGNORED):
            return False  # settled once; a second worker's or a retried settlement is no news
        self._record(
            self.Processed,
            at,
            invoice_id=invoice_id,
            changed=changed,
            observed_with=observed_with,
            source=source,
        )
        return True

    def ignore(self, reason: str, source: Source, at: datetime) -> bool:
        if self.disposition in (Disposition.PROCESSED, Disposition.IGNORED):
            return False
        self._record(self.Ignored, at, reason=reason, source=source)
        return True

    def fail(self, error: str, source: Source, at: datetime) -> bool:
        if self.disposition in (Disposition.PROCESSED, Disposition.IGNORED):
            return False
        if self.disposition is Disposition.FAILED and self.detail == error:
            return False  # the same failure again is not a new fact
        self._record(self.Failed, at, error=error, source=source)
        return True


@dataclass(frozen=True)
class SyncPosition:
    """Where a pull sync stands. Stripe lists newest first, so:

    - `events_after`: the newest event already stored; the next run reads only the
      events after it (oldest first, with `ending_before`).
    - `events_head` / `events_listing_after`: a first full read of the events list
      (newest first) in progress: the newest event when it started, and the last
      one stored; when it completes, `events_after` becomes `events_head`.
    - `invoices_listing_after` / `invoices_listing_since`: a read of the invoices
      list in progress (the last invoice observed, and the `created` bound it was
      asked with); `invoices_listed`: a complete read has happened once."""

    events_after: str | None = None
    events_head: str | None = None
    events_listing_after: str | None = None
    invoices_listing_after: str | None = None
    invoices_listing_since: int | None = None
    invoices_listed: bool = False


class SyncCursor(LedgerAggregate):
    TOPIC = "billtrail:SyncCursor"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:SyncCursor.Created"

    class Started(Created):
        TOPIC = "billtrail:SyncCursor.Started"
        name: str

    class Moved(Event):
        TOPIC = "billtrail:SyncCursor.Moved"
        events_after: str | None
        events_head: str | None
        events_listing_after: str | None
        invoices_listing_after: str | None
        invoices_listing_since: int | None
        invoices_listed: bool

        def apply(self, aggregate: Any) -> None:
            aggregate.position = SyncPosition(
                events_after=self.events_after,
                events_head=self.events_head,
                events_listing_after=self.events_listing_after,
                invoices_listing_after=self.invoices_listing_after,
                invoices_listing_since=self.invoices_listing_since,
                invoices_listed=self.invoices_listed,
            )

    def __init__(self, name: str, source: Source) -> None:
        self.name = name
        self.position = SyncPosition()

    @staticmethod
    def create_id(name: str) -> UUID:
        return natural_id("sync_cursor", name)

    @classmethod
    def start(cls, name: str, source: Source, at: datetime) -> SyncCursor:
        if not name:
            raise LedgerError("a sync cursor needs a name")
        return cls._create(
            cls.Started, id=cls.create_id(name), name=name, source=source, timestamp=at
        )

    def move(self, position: SyncPosition, source: Source, at: datetime) -> bool:
        if position == self.position:
            return False  # an unchanged cursor is not recorded: a no-op sync records nothing
        self._record(
            self.Moved,
            at,
            events_after=position.events_after,
            events_head=position.events_head,
            events_listing_after=position.events_listing_after,
            invoices_listing_after=position.invoices_listing_after,
            invoices_listing_since=position.invoices_listing_since,
            invoices_listed=position.invoices_listed,
            source=source,
        )
        return True
