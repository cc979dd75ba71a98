"""Notification: one notice to one recipient through one channel about one
transition of one invoice (for now: it became past due). The aggregate is the
outbox entry and the proof of dunning at once: what was to be said (the invoice's
facts as they were), to whom, through which channel, every delivery attempt, and
how it ended.

Keyed by (invoice, transition, audience, channel, recipient) with `natural_id`, so
queueing the same notice twice collides and it exists once.

Its life: `Queued` -> `DeliveryAttempted` (recorded BEFORE anything is sent: the
claim, exclusive by the aggregate's version) -> `Sent`, or `DeliveryFailed` (a retry
is due at `next_attempt_at`, with exponential backoff) and attempted again, or
`GaveUp` (failed for good: refused permanently, or too many attempts; visible to
admins), or `Withdrawn` (the invoice is no longer past due when its turn comes).

An attempt with no outcome is a delivery whose process stopped between claiming and
recording: whether the message left is unknown. Once its lease has run out it is
attempted again (see `Notification.due`): for a dunning notice a duplicate that
carries the same id (the email's Message-ID, the webhook's `id`) is the lesser harm
than a notice never sent, and the window is only the moment between the server's
acceptance and the commit of `Sent`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from ledger.aggregate import LedgerAggregate
from ledger.entities.domain import BillableEntity, Channel
from ledger.errors import LedgerError
from ledger.invoices.domain import Invoice, Status
from ledger.sources import Source
from ledger.values import natural_id

PAST_DUE = "past_due"  # the transition
PAST_DUE_TOPIC = "invoice_past_due"  # the entity's preference topic for it
PORTAL = "portal"  # admins also see every past-due invoice in the portal (a read model)


class Audience(StrEnum):
    ADMIN = "admin"
    CUSTOMER = "customer"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # an attempt was claimed; its outcome is not recorded yet
    RETRYING = "retrying"  # the last attempt failed; the next is due at next_attempt_at
    SENT = "sent"
    GAVE_UP = "gave_up"  # failed for good
    WITHDRAWN = "withdrawn"  # no longer true when its turn came; never sent

    @property
    def final(self) -> bool:
        return self in (DeliveryStatus.SENT, DeliveryStatus.GAVE_UP, DeliveryStatus.WITHDRAWN)


class InvalidNotification(LedgerError):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (from 1) that fails schedules attempt n+1 after
    first_delay * 2**(n-1), at most max_delay; after max_attempts it gives up. With
    the defaults the last attempt is about eight and a half hours after the first.
    `lease`: how long a claimed attempt may go without an outcome before it counts
    as interrupted (well above the senders' timeouts)."""

    max_attempts: int = 10
    first_delay: timedelta = timedelta(minutes=1)
    max_delay: timedelta = timedelta(hours=6)
    lease: timedelta = timedelta(minutes=10)

    def delay(self, attempt: int) -> timedelta:
        return min(self.first_delay * (1 << (attempt - 1)), self.max_delay)


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Notice:
    """What a past-due notice says: the invoice's facts when it became past due.
    Stored in `Queued` (as a plain dict), so the ledger proves what was said."""

    stripe_id: str
    number: str
    entity_id: str
    entity_name: str
    currency: str
    total: Decimal
    amount_due: Decimal
    due_date: date
    past_due_on: date

    @property
    def days_overdue(self) -> int:
        return (self.past_due_on - self.due_date).days

    def stored(self) -> dict[str, Any]:
        return {
            "stripe_id": self.stripe_id,
            "number": self.number,
            "entity_id": self.entity_id,
            "entity_name": self.entity_name,
            "currency": self.currency,
            "total": self.total,
            "amount_due": self.amount_due,
            "due_date": self.due_date,
            "past_due_on": self.past_due_on,
        }

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Notice:
        return cls(**data)


class Notification(LedgerAggregate):
    TOPIC = "billtrail:Notification"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:Notification.Created"

    class Queued(Created):
        TOPIC = "billtrail:Notification.Queued"
        invoice_stripe_id: str
        transition: str
        topic: str
        audience: str
        channel: str
        recipient: str
        notice: dict[str, Any]

    class DeliveryAttempted(Event):
        """Recorded before sending: this attempt is claimed. `interrupted`: the
        previous attempt never got an outcome (its process stopped)."""

        TOPIC = "billtrail:Notification.DeliveryAttempted"
        attempt: int
        lease_until: datetime
        interrupted: bool

        def apply(self, aggregate: Any) -> None:
            aggregate.attempts = self.attempt
            aggregate.status = DeliveryStatus.SENDING
            aggregate.next_attempt_at = self.lease_until

    class DeliveryFailed(Event):
        TOPIC = "billtrail:Notification.DeliveryFailed"
        attempt: int
        error: str
        next_attempt_at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.status = DeliveryStatus.RETRYING
            aggregate.next_attempt_at = self.next_attempt_at
            aggregate.last_error = self.error

    class Sent(Event):
        """Accepted by the recipient's server (SMTP 250 / HTTP 2xx); `detail` is
        its reply."""

        TOPIC = "billtrail:Notification.Sent"
        attempt: int
        detail: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = DeliveryStatus.SENT
            aggregate.sent_at = self.timestamp
            aggregate.detail = self.detail
            aggregate.next_attempt_at = None

    class GaveUp(Event):
        TOPIC = "billtrail:Notification.GaveUp"
        attempt: int
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = DeliveryStatus.GAVE_UP
            aggregate.last_error = self.reason
            aggregate.next_attempt_at = None

    class Withdrawn(Event):
        TOPIC = "billtrail:Notification.Withdrawn"
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = DeliveryStatus.WITHDRAWN
            aggregate.last_error = self.reason
            aggregate.next_attempt_at = None

    def __init__(
        self,
        invoice_stripe_id: str,
        transition: str,
        topic: str,
        audience: str,
        channel: str,
        recipient: str,
        notice: dict[str, Any],
        source: Source,
    ) -> None:
        self.invoice_stripe_id = invoice_stripe_id
        self.transition = transition
        self.topic = topic
        self.audience = audience
        self.channel = channel
        self.recipient = recipient
        self.notice = Notice.from_stored(dict(notice))
        self.status = DeliveryStatus.QUEUED
        self.attempts = 0
        # Queued notices are due at once; `created_on` is the Queued event's time.
        self.next_attempt_at: datetime | None = None
        self.last_error = ""
        self.detail = ""
        self.sent_at: datetime | None = None

    @staticmethod
    def create_id(
        invoice_stripe_id: str, transition: str, audience: str, channel: str, recipient: str
    ) -> UUID:
        return natural_id(
            "notification", invoice_stripe_id, transition, audience, channel, recipient
        )

    @classmethod
    def queue(
        cls,
        notice: Notice,
        transition: str,
        topic: str,
        audience: Audience,
        channel: str,
        recipient: str,
        source: Source,
        at: datetime,
    ) -> Notification:
        return cls._create(
            cls.Queued,
            id=cls.create_id(notice.stripe_id, transition, audience.value, channel, recipient),
            invoice_stripe_id=notice.stripe_id,
            transition=transition,
            topic=topic,
            audience=audience.value,
            channel=channel,
            recipient=recipient,
            notice=notice.stored(),
            source=source,
            timestamp=at,
        )

    # Delivery ------------------------------------------------------------------------

    def due_at(self) -> datetime | None:
        """When this notice may next be attempted (None: never again)."""
        if self.status.final:
            return None
        return self.next_attempt_at or self.created_on

    def due(self, now: datetime) -> bool:
        at = self.due_at()
        return at is not None and at <= now

    def begin_attempt(self, source: Source, at: datetime, policy: RetryPolicy) -> bool:
        """Claim the next attempt. False when it is not due (sent, given up, a retry
        not yet due, or another process's attempt still within its lease)."""
        if not self.due(at):
            return False
        self._record(
            self.DeliveryAttempted,
            at,
            attempt=self.attempts + 1,
            lease_until=at + policy.lease,
            interrupted=self.status is DeliveryStatus.SENDING,
            source=source,
        )
        return True

    def succeed(self, attempt: int, detail: str, source: Source, at: datetime) -> bool:
        # A send that went through is recorded even when its attempt was taken over
        # after the lease ran out: the message did leave. Once sent, stays sent.
        if self.status in (DeliveryStatus.SENT, DeliveryStatus.WITHDRAWN) or attempt < 1:
            return False
        self._record(self.Sent, at, attempt=attempt, detail=detail, source=source)
        return True

    def fail(
        self,
        attempt: int,
        error: str,
        permanent: bool,
        source: Source,
        at: datetime,
        policy: RetryPolicy,
    ) -> bool:
        if self.status is not DeliveryStatus.SENDING or attempt != self.attempts:
            return False  # an outcome of an attempt that is no longer the current one
        if permanent or attempt >= policy.max_attempts:
            why = error if permanent else f"{error} (gave up after {attempt} attempts)"
            self._record(self.GaveUp, at, attempt=attempt, reason=why, source=source)
            return True
        self._record(
            self.DeliveryFailed,
            at,
            attempt=attempt,
            error=error,
            next_attempt_at=at + policy.delay(attempt),
            source=source,
        )
        return True

    def give_up(self, reason: str, source: Source, at: datetime) -> bool:
        if self.status.final:
            return False
        self._record(self.GaveUp, at, attempt=self.attempts, reason=reason, source=source)
        return True

    def withdraw(self, reason: str, source: Source, at: datetime) -> bool:
        if self.status.final:
            return False
        self._record(self.Withdrawn, at, reason=reason, source=source)
        return True


def past_due_notice(invoice: Invoice, entity: BillableEntity, today: date) -> Notice:
    if invoice.number is None or invoice.due_date is None:
        raise InvalidNotification(f"invoice {invoice.stripe_id} was never issued with a due date")
    return Notice(
        stripe_id=invoice.stripe_id,
        number=invoice.number,
        entity_id=entity.entity_id,
        entity_name=entity.name,
        currency=invoice.currency,
        total=invoice.total,
        amount_due=invoice.total - invoice.credited - invoice.amount_paid,
        due_date=invoice.due_date,
        past_due_on=today,
    )


def past_due_notifications(
    invoice: Invoice,
    entity: BillableEntity,
    admins: list[str],
    today: date,
    source: Source,
    at: datetime,
) -> list[Notification]:
    """Who is told that `invoice` became past due, and how: every admin by email (and
    in the portal, which reads the ledger's past-due facts itself); the customer
    through the channel it chose for the past-due topic: each billing email, its
    webhook, or nothing. A customer that chose email but has no billing email gets
    a notice that fails for good at once, so admins see that it could not be told."""
    if invoice.status is not Status.PAST_DUE:
        raise InvalidNotification(f"invoice {invoice.stripe_id} is not past due")
    notice = past_due_notice(invoice, entity, today)

    def queue(audience: Audience, channel: str, recipient: str) -> Notification:
        return Notification.queue(
            notice, PAST_DUE, PAST_DUE_TOPIC, audience, channel, recipient, source, at
        )

    notes = [queue(Audience.ADMIN, Channel.EMAIL.value, email) for email in dict.fromkeys(admins)]
    chosen = entity.preferences.get(PAST_DUE_TOPIC, Channel.EMAIL.value)
    if chosen == Channel.EMAIL.value:
        if entity.emails:
            notes += [
                queue(Audience.CUSTOMER, chosen, email) for email in dict.fromkeys(entity.emails)
            ]
        else:
            orphan = queue(Audience.CUSTOMER, chosen, "")
            orphan.give_up(f"entity {entity.entity_id} has no billing email", source, at)
            notes.append(orphan)
    elif chosen == Channel.WEBHOOK.value and entity.webhook_url:
        notes.append(queue(Audience.CUSTOMER, chosen, entity.webhook_url))
    return notes


class PastDueSweeps(LedgerAggregate):
    """The record of past-due sweeps: which days were swept, and what each found.
    One aggregate, so the last swept day (what a scheduler compares with today on
    start) is one read."""

    TOPIC = "billtrail:PastDueSweeps"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:PastDueSweeps.Created"

    class Started(Created):
        TOPIC = "billtrail:PastDueSweeps.Started"

    class Completed(Event):
        TOPIC = "billtrail:PastDueSweeps.Completed"
        day: date
        marked: int
        queued: int

        def apply(self, aggregate: Any) -> None:
            aggregate.days = sorted({*aggregate.days, self.day})

    def __init__(self, source: Source) -> None:
        self.days: list[date] = []

    @staticmethod
    def create_id() -> UUID:
        return natural_id("past-due-sweeps")

    @classmethod
    def start(cls, source: Source, at: datetime) -> PastDueSweeps:
        return cls._create(cls.Started, id=cls.create_id(), source=source, timestamp=at)

    @property
    def last_day(self) -> date | None:
        return self.days[-1] if self.days else None

    def complete(self, day: date, marked: int, queued: int, source: Source, at: datetime) -> bool:
        """Record what a sweep of `day` did. A repeat that did nothing records
        nothing; one that moved invoices the first did not (it ran alongside it, or
        the first stopped half way) records its share too: a day's figures are the
        sum of its records."""
        if day in self.days and not (marked or queued):
            return False
        self._record(self.Completed, at, day=day, marked=marked, queued=queued, source=source)
        return True
