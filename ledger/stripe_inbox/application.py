"""Commands and queries on the Stripe inbox and the sync cursor.

`receive_stripe_events` is the webhook endpoint's acknowledgement: it stores a
batch of events in one transaction (so an endpoint under load commits many
webhooks at once), each at most once, ever: the event id is the aggregate's
natural key and a receipt key in the ledger's source index, in the same
transaction; a batch refused because one of its events was already there is
looked up and the rest stored."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, cast
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from ledger.application import MAX_CONFLICT_RETRIES, ConcurrentChange, LedgerBase, topics_of
from ledger.errors import NotFound
from ledger.sources import Source, SourceKind
from ledger.stripe_inbox.domain import (
    Disposition,
    IncomingStripeEvent,
    StripeEvent,
    SyncCursor,
    SyncPosition,
)

RECENT_RECEIPTS = 100_000


def _missing(event_id: str) -> NotFound:
    return NotFound(f"no Stripe event {event_id!r} was received")


def receipt_key(event_id: str) -> str:
    """The event's key in the ledger's source index: one receipt per Stripe event."""
    return f"stripe_inbox:{event_id}"


@dataclass(frozen=True)
class PendingStripeEvent:
    """An event waiting for its invoice to be re-read (or, for `sync`, one that
    failed before)."""

    event_id: str
    type: str
    invoice_id: str
    created: int
    position: int  # its notification id: the order billtrail received events in
    disposition: Disposition
    version: int  # of its aggregate, as last seen: settling it appends the next


@dataclass(frozen=True)
class Settlement:
    """What became of one event: processed (with the observation it was covered
    by), ignored (with a reason) or failed (with the error)."""

    event_id: str
    disposition: Disposition
    invoice_id: str = ""
    changed: bool = False
    observed_with: str = ""
    detail: str = ""
    # The aggregate's version the decision was made on (from the inbox tail): lets
    # the settlement be appended without loading the event, payload and all. None:
    # load it and decide.
    version: int | None = None
    # Where the decision came from, when it differs from the batch's source.
    source: Source | None = None


_INBOX_TOPICS = topics_of(
    StripeEvent.Received, StripeEvent.Processed, StripeEvent.Ignored, StripeEvent.Failed
)


class InboxTail:
    """Follows the log and keeps the inbox's unsettled events, so a worker reads
    only what is new after its first pass. `include_failed`: failed events count as
    pending (for `sync`, which retries them; a live worker would loop on them)."""

    def __init__(self, ledger: StripeInboxCommands, *, include_failed: bool = False) -> None:
        self.ledger = ledger
        self.include_failed = include_failed
        self.position = 0
        self._pending: dict[UUID, PendingStripeEvent] = {}

    def refresh(self, page: int = 1000) -> list[PendingStripeEvent]:
        recorder = self.ledger.recorder
        while True:
            notes = recorder.select_notifications(
                start=self.position, limit=page, topics=_INBOX_TOPICS, inclusive_of_start=False
            )
            if not notes:
                break
            for note in notes:
                self._apply(note.id, self.ledger.mapper.to_domain_event(note))
            self.position = notes[-1].id
        return sorted(self._pending.values(), key=lambda p: p.position)

    def _apply(self, position: int, event: Any) -> None:
        # Settlements name their aggregate, not the Stripe event id.
        key: UUID = event.originator_id
        if isinstance(event, StripeEvent.Received):
            if event.invoice_id is not None:
                self._pending[key] = PendingStripeEvent(
                    event.event_id,
                    event.type,
                    event.invoice_id,
                    event.created,
                    position,
                    Disposition.RECEIVED,
                    event.originator_version,
                )
            return
        found = self._pending.get(key)
        if found is None:
            return
        if isinstance(event, StripeEvent.Failed) and self.include_failed:
            self._pending[key] = replace(
                found, disposition=Disposition.FAILED, version=event.originator_version
            )
        else:
            del self._pending[key]


class StripeInboxCommands(LedgerBase):
    # Receiving ----------------------------------------------------------------------

    def receive_stripe_events(
        self, incoming: Sequence[IncomingStripeEvent], source: Source | None = None
    ) -> list[bool]:
        """Store the events the ledger does not have yet, in one transaction. Returns,
        for each one given, whether this call stored it (False: already received, by
        an earlier call or earlier in the same batch). `source`: where the batch came
        from (a sync run); by default each event is its own source."""
        firsts: dict[str, IncomingStripeEvent] = {}
        for event in incoming:
            if event.event_id not in self._recent_receipts:
                firsts.setdefault(event.event_id, event)
        # Optimistic: most webhooks are new, so write first and look only when the
        # write is refused (saves a read transaction per batch on the hot path).
        stored = self._store_receipts(list(firsts.values()), source, check_first=False)
        result: list[bool] = []
        for event in incoming:
            result.append(event.event_id in stored)
            stored.discard(event.event_id)  # a second copy in the batch is a duplicate
        return result

    def receive_stripe_event(
        self, incoming: IncomingStripeEvent, source: Source | None = None
    ) -> bool:
        return self.receive_stripe_events([incoming], source)[0]

    def _store_receipts(
        self, fresh: list[IncomingStripeEvent], source: Source | None, *, check_first: bool
    ) -> set[str]:
        if check_first and fresh:
            known = self.ledger_recorder.existing_sources([receipt_key(e.event_id) for e in fresh])
            for e in fresh:
                if receipt_key(e.event_id) in known:
                    self._remember_receipt(e.event_id)
            fresh = [e for e in fresh if receipt_key(e.event_id) not in known]
        if not fresh:
            return set()
        at = self.clock()

        def receipt(e: IncomingStripeEvent) -> list[StripeEvent.Event]:
            return StripeEvent.receipt(e, source or Source(SourceKind.STRIPE_EVENT, e.event_id), at)

        try:
            self.save(
                *[event for e in fresh for event in receipt(e)],
                source_keys=[receipt_key(e.event_id) for e in fresh],
            )
        except IntegrityError:
            if not check_first:
                # Some were stored before (a redelivery) or meanwhile (another
                # writer): the whole batch was refused. Look, then store the rest.
                return self._store_receipts(fresh, source, check_first=True)
        else:
            for e in fresh:
                self._remember_receipt(e.event_id)
            return {e.event_id for e in fresh}
        # Stored meanwhile by another writer, between the look and the write: one at
        # a time, then.
        stored: set[str] = set()
        for e in fresh:
            try:
                self.save(*receipt(e), source_keys=[receipt_key(e.event_id)])
            except IntegrityError:
                continue
            self._remember_receipt(e.event_id)
            stored.add(e.event_id)
        return stored

    @cached_property
    def _recent_receipts(self) -> OrderedDict[str, None]:
        """Event ids this process stored or saw stored lately: a redelivery of one of
        them is answered without touching the database. (Only ever a shortcut: the
        ledger is append-only, so an event once stored stays stored.)"""
        return OrderedDict()

    def _remember_receipt(self, event_id: str) -> None:
        recent = self._recent_receipts
        recent[event_id] = None
        if len(recent) > RECENT_RECEIPTS:
            recent.popitem(last=False)

    # Settling ----------------------------------------------------------------------

    def settle_stripe_events(
        self, settlements: Sequence[Settlement], source: Source | None = None
    ) -> int:
        """Record what became of each event, each under its own source or else
        `source`. Settling an event already processed or ignored changes nothing.
        Returns how many changed. Settlements decided on a known version (processed
        or ignored) go in one transaction without loading their events; the others
        (failures, or when another worker got there first) are loaded and decided
        in a second."""
        if any((s.source or source) is None for s in settlements):
            raise ValueError("every settlement needs a source")
        known = [
            s
            for s in settlements
            if s.version is not None and s.disposition is not Disposition.FAILED
        ]
        rest = [s for s in settlements if s not in known]
        recorded = 0
        if known:
            try:
                recorded += self._settle_known(known, source)
            except IntegrityError:
                rest = list(settlements)  # settled meanwhile: load and decide them all
        return recorded + self._settle_loaded(rest, source)

    def _settle_loaded(self, settlements: Sequence[Settlement], source: Source | None) -> int:
        if not settlements:
            return 0
        for _ in range(MAX_CONFLICT_RETRIES):
            at = self.clock()
            changed: list[StripeEvent] = []
            for s in settlements:
                event = self.stripe_event(s.event_id)
                if _settle(event, s, s.source or cast(Source, source), at):
                    changed.append(event)
            if not changed:
                return 0
            try:
                self.save(*changed)
            except IntegrityError:
                continue  # a concurrent settlement: reload and decide again
            return len(changed)
        raise ConcurrentChange("Stripe events kept changing while being settled; try again")

    def _settle_known(self, settlements: Sequence[Settlement], source: Source | None) -> int:
        """Append each settlement after the version it was decided on, without
        loading the events (each carries its whole payload). The version is the
        optimistic check: if anything was appended since, the save fails as a
        whole and nothing is recorded. Only for events known to be received or
        failed, from which processing and ignoring are always allowed."""
        at = self.clock()
        events: list[StripeEvent.Event] = []
        for s in settlements:
            assert s.version is not None
            common: dict[str, Any] = {
                "originator_id": StripeEvent.create_id(s.event_id),
                "originator_version": s.version + 1,
                "timestamp": at,
                "source": s.source or source,
            }
            # The event classes' fields are made by the library's metaclass at run time.
            if s.disposition is Disposition.PROCESSED:
                processed: Any = StripeEvent.Processed
                events.append(
                    processed(
                        invoice_id=s.invoice_id,
                        changed=s.changed,
                        observed_with=s.observed_with,
                        **common,
                    )
                )
            else:
                ignored: Any = StripeEvent.Ignored
                events.append(ignored(reason=s.detail, **common))
        self.save(*events)
        return len(events)

    # Queries -------------------------------------------------------------------------

    def stripe_event(self, event_id: str) -> StripeEvent:
        return self.load(StripeEvent, StripeEvent.create_id(event_id), lambda: _missing(event_id))

    def has_stripe_event(self, event_id: str) -> bool:
        return bool(self.ledger_recorder.existing_sources([receipt_key(event_id)]))

    def stripe_inbox_tail(self, *, include_failed: bool = False) -> InboxTail:
        return InboxTail(self, include_failed=include_failed)

    def pending_stripe_events(self, *, include_failed: bool = False) -> list[PendingStripeEvent]:
        """Events received and not yet settled, in the order received."""
        return self.stripe_inbox_tail(include_failed=include_failed).refresh()

    # The sync cursor -----------------------------------------------------------------

    def sync_position(self, name: str) -> SyncPosition:
        cursor_id = SyncCursor.create_id(name)
        if not self.exists(cursor_id):
            return SyncPosition()
        cursor = self.load(SyncCursor, cursor_id, lambda: NotFound(f"no sync cursor {name!r}"))
        return cursor.position

    def move_sync_cursor(self, name: str, position: SyncPosition, source: Source) -> bool:
        """Record where the sync stands; nothing when it has not moved."""
        cursor_id = SyncCursor.create_id(name)
        if not self.exists(cursor_id):
            at = self.clock()
            cursor = SyncCursor.start(name, source, at)
            cursor.move(position, source, at)
            if self._create(cursor):
                return True
        at = self.clock()
        return self._change(
            SyncCursor,
            cursor_id,
            "move_sync_cursor",
            source,
            lambda c: c.move(position, source, at),
            lambda: NotFound(f"no sync cursor {name!r}"),
        )


def _settle(event: StripeEvent, s: Settlement, source: Source, at: Any) -> bool:
    if s.disposition is Disposition.PROCESSED:
        return event.process(s.invoice_id, s.changed, s.observed_with, source, at)
    if s.disposition is Disposition.IGNORED:
        return event.ignore(s.detail, source, at)
    if s.disposition is Disposition.FAILED:
        return event.fail(s.detail, source, at)
    raise ValueError(f"cannot settle an event as {s.disposition}")
