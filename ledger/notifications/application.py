"""Commands and queries on notifications: the past-due sweep that marks invoices
and queues their notices in the same save, the outbox (notices due for delivery),
and recording each delivery attempt and its outcome.

Exactly once per invoice and transition: a notice's id is its natural key, and it
is created only in the save that records the transition, which happens once. A
delivery is claimed by recording `DeliveryAttempted` at the aggregate's next
version, so of two deliverers (threads or processes) only one can claim a given
attempt; the other's save fails on the version and it moves on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from ledger.application import MAX_CONFLICT_RETRIES, ConcurrentChange, topics_of
from ledger.entities.application import EntityCommands
from ledger.errors import NotFound, UnknownInvoice
from ledger.invoices.domain import Invoice, Status
from ledger.notifications.domain import (
    DEFAULT_RETRY,
    DeliveryStatus,
    Notification,
    PastDueSweeps,
    RetryPolicy,
    past_due_notifications,
)
from ledger.sources import Source


def _unknown_invoice(stripe_id: str) -> UnknownInvoice:
    return UnknownInvoice(f"no invoice {stripe_id!r}")


@dataclass(frozen=True)
class SweepOutcome:
    """What one past-due sweep did: the invoices it moved to past due and the
    notices it queued (ids). Both empty when the same sweep already ran."""

    day: date
    marked: list[str] = field(default_factory=list)
    queued: list[UUID] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """What a sender reports for one attempt. `permanent`: retrying cannot help
    (a mailbox that does not exist, a malformed address)."""

    ok: bool
    detail: str
    permanent: bool = False


@dataclass(frozen=True)
class DueNotice:
    notification_id: UUID
    channel: str
    due_at: datetime
    position: int


_OUTBOX_TOPICS = topics_of(
    Notification.Queued,
    Notification.DeliveryAttempted,
    Notification.DeliveryFailed,
    Notification.Sent,
    Notification.GaveUp,
    Notification.Withdrawn,
)


def _missing_notification(notification_id: UUID) -> NotFound:
    return NotFound(f"no notification {notification_id}")


class NotificationOutbox:
    """Follows the log and keeps the notices still to deliver with when each is
    due, so a long-running deliverer reads only what is new after its first pass."""

    def __init__(self, ledger: NotificationCommands) -> None:
        self.ledger = ledger
        self.position = 0
        self._open: dict[UUID, DueNotice] = {}

    def refresh(self, page: int = 1000) -> None:
        recorder = self.ledger.recorder
        while True:
            notes = recorder.select_notifications(
                start=self.position, limit=page, topics=_OUTBOX_TOPICS, inclusive_of_start=False
            )
            if not notes:
                return
            for note in notes:
                self._apply(note.id, self.ledger.mapper.to_domain_event(note))
            self.position = notes[-1].id

    def _apply(self, position: int, event: Any) -> None:
        key: UUID = event.originator_id
        if isinstance(event, Notification.Queued):
            self._open[key] = DueNotice(key, event.channel, event.timestamp, position)
            return
        found = self._open.get(key)
        if found is None:
            return
        if isinstance(event, Notification.DeliveryAttempted):
            self._open[key] = DueNotice(key, found.channel, event.lease_until, found.position)
        elif isinstance(event, Notification.DeliveryFailed):
            self._open[key] = DueNotice(key, found.channel, event.next_attempt_at, found.position)
        else:  # Sent, GaveUp, Withdrawn: final
            del self._open[key]

    def due(self, now: datetime) -> list[DueNotice]:
        """Notices due at `now`, oldest due first (then in the order queued)."""
        self.refresh()
        return sorted(
            (d for d in self._open.values() if d.due_at <= now),
            key=lambda d: (d.due_at, d.position),
        )

    def pending(self) -> list[DueNotice]:
        """Every notice not yet final, due or not."""
        self.refresh()
        return sorted(self._open.values(), key=lambda d: (d.due_at, d.position))


class NotificationCommands(EntityCommands):
    # The sweep -------------------------------------------------------------------------

    def sweep_past_due(
        self,
        today: date,
        source: Source,
        candidates: Iterable[str],
        admins: Sequence[str] = (),
    ) -> SweepOutcome:
        """Move each candidate invoice that is open with a due date before `today` to
        past due, queueing its notices, and record the sweep of `today` with what it
        moved, all in one save: a process stopped half way has moved nothing and
        recorded nothing, so the day's record always says what moved. Candidates are
        Stripe invoice ids (the read model's open and overdue invoices); each is
        decided again here on the invoice itself, so a stale list cannot move the
        wrong one. Run again, or by a second process at once, it changes nothing: an
        invoice becomes past due once, its notices are created with that transition,
        and a day is recorded as swept once (a later run that moves invoices the
        first did not records its share). `source` names the run in every event it
        records."""
        # No source keys: the transition happens once by the invoice's own state (an
        # invoice past due is never open again). A writer that got there first fails
        # this save on an invoice's or the record's version: decide again.
        ids = list(dict.fromkeys(candidates))
        for _ in range(MAX_CONFLICT_RETRIES):
            at = self.clock()
            marked: list[str] = []
            changed: list[Any] = []
            queued: list[UUID] = []
            for stripe_id in ids:
                invoice = self.load(
                    Invoice, Invoice.create_id(stripe_id), partial(_unknown_invoice, stripe_id)
                )
                if not invoice.mark_past_due(today, source, at):
                    continue
                entity = self.entity(invoice.entity_id)
                notes = past_due_notifications(invoice, entity, list(admins), today, source, at)
                marked.append(stripe_id)
                changed += [invoice, *notes]
                queued += [n.id for n in notes]
            sweeps = self._sweeps(source, at)
            if not sweeps.complete(today, len(marked), len(queued), source, at):
                return SweepOutcome(today)  # swept before, nothing moved since
            try:
                self.save(*changed, sweeps)
            except IntegrityError:
                continue
            return SweepOutcome(today, marked, queued)
        raise ConcurrentChange(f"past-due sweep of {today}: the invoices kept changing; try again")

    def _sweeps(self, source: Source, at: datetime) -> PastDueSweeps:
        sweeps_id = PastDueSweeps.create_id()
        if self.exists(sweeps_id):
            return self.load(PastDueSweeps, sweeps_id, lambda: NotFound("no sweeps"))
        return PastDueSweeps.start(source, at)

    def last_past_due_sweep(self) -> date | None:
        """The latest day a past-due sweep completed for (None: never)."""
        sweeps_id = PastDueSweeps.create_id()
        if not self.exists(sweeps_id):
            return None
        sweeps = self.load(PastDueSweeps, sweeps_id, lambda: NotFound("no past-due sweeps"))
        return sweeps.last_day

    # The outbox ------------------------------------------------------------------------

    def notification_outbox(self) -> NotificationOutbox:
        return NotificationOutbox(self)

    def notification(self, notification_id: UUID) -> Notification:
        return self.load(
            Notification, notification_id, lambda: _missing_notification(notification_id)
        )

    def begin_delivery(
        self, notification_id: UUID, source: Source, policy: RetryPolicy = DEFAULT_RETRY
    ) -> Notification | None:
        """Claim the next delivery attempt of a notice: recorded before anything is
        sent. Returns the notice with the claimed attempt (its `attempts`), or None
        when there is nothing to send now: not due, final, claimed by another
        deliverer, or withdrawn because its invoice is no longer past due."""
        for _ in range(MAX_CONFLICT_RETRIES):
            note = self.notification(notification_id)
            at = self.clock()
            if not note.due(at):
                return None
            stripe_id = note.invoice_stripe_id
            invoice = self.load(
                Invoice,
                Invoice.create_id(stripe_id),
                partial(UnknownInvoice, f"no invoice {stripe_id!r}"),
            )
            # Dunning a customer for an invoice it has paid since is worse than silence.
            if invoice.status is not Status.PAST_DUE:
                note.withdraw(f"the invoice is {invoice.status.label} now", source, at)
            else:
                note.begin_attempt(source, at, policy)
            try:
                self.save(note)
            except IntegrityError:
                continue  # another deliverer recorded something first: look again
            return note if note.status is DeliveryStatus.SENDING else None
        return None

    def record_delivery(
        self,
        notification_id: UUID,
        attempt: int,
        outcome: Outcome,
        source: Source,
        policy: RetryPolicy = DEFAULT_RETRY,
    ) -> bool:
        """Record how attempt `attempt` ended. True if it changed the notice."""
        for _ in range(MAX_CONFLICT_RETRIES):
            note = self.notification(notification_id)
            at = self.clock()
            if outcome.ok:
                changed = note.succeed(attempt, outcome.detail, source, at)
            else:
                changed = note.fail(attempt, outcome.detail, outcome.permanent, source, at, policy)
            if not changed:
                return False
            try:
                self.save(note)
            except IntegrityError:
                continue
            return True
        raise ConcurrentChange(f"notification {notification_id} kept changing; try again")

    # Queries for the portal and audits ---------------------------------------------------

    def notifications_of_invoice(self, stripe_id: str) -> list[Notification]:
        """Every notice ever queued about the invoice, in the order queued: the proof
        of dunning (channel, recipient, each attempt, outcome)."""
        return [
            self.notification(e.originator_id)
            for e in self.events_of_topics(topics_of(Notification.Queued))
            if e.invoice_stripe_id == stripe_id
        ]

    def undeliverable_notifications(self) -> list[Notification]:
        """Notices that failed for good, oldest first (the portal shows them)."""
        ids = dict.fromkeys(
            e.originator_id for e in self.events_of_topics(topics_of(Notification.GaveUp))
        )
        return [self.notification(i) for i in ids]
