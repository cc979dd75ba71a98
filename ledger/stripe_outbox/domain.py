"""What billtrail asked of Stripe, recorded before it asked.

`StripeRequest`: one POST billtrail makes to Stripe, keyed by the idempotency key
billtrail derives from ledger facts (`billtrail/customer/<entity>`,
`billtrail/usage/<entity>/<day>/<n>`, ...). `Prepared` is recorded before the POST
with the exact parameters, so a run that crashes between Stripe's answer and the
ledger write sends the same key with the same parameters again, and Stripe answers
with its first response instead of acting twice. `Answered` records what Stripe
made; `Refused` a 4xx that sending again would not change; `Retried` a new attempt
(a new key) after a refusal, once the cause is fixed.

`Correction`: an admin's correction of an invoice (wrong rate, duplicate calls,
a credit, a write-off), with its reason, actor and the facts it acts on (the call
ids that are its evidence, the amounts), recorded before any POST so that running
it again acts on the same facts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from ledger.aggregate import LedgerAggregate
from ledger.errors import LedgerError
from ledger.sources import Source
from ledger.values import natural_id

# Stripe's limit on an Idempotency-Key; ours leave room for an attempt suffix.
MAX_KEY_LENGTH = 240


class InvalidStripeRequest(LedgerError):
    pass


class RequestStatus(StrEnum):
    PREPARED = "prepared"
    ANSWERED = "answered"
    REFUSED = "refused"


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or any(c.isspace() for c in key):
        raise InvalidStripeRequest(f"not a usable idempotency key: {key!r}")
    return key


class StripeRequest(LedgerAggregate):
    TOPIC = "billtrail:StripeRequest"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:StripeRequest.Created"

    class Prepared(Created):
        TOPIC = "billtrail:StripeRequest.Prepared"
        key: str
        operation: str
        target: str | None
        params: dict[str, Any]

    class Answered(Event):
        TOPIC = "billtrail:StripeRequest.Answered"
        object_id: str | None
        replayed: bool
        answered_at: datetime

        def apply(self, aggregate: Any) -> None:
            aggregate.status = RequestStatus.ANSWERED
            aggregate.object_id = self.object_id
            aggregate.replayed = self.replayed
            aggregate.answered_at = self.answered_at

    class Refused(Event):
        TOPIC = "billtrail:StripeRequest.Refused"
        http_status: int | None
        code: str | None
        message: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = RequestStatus.REFUSED
            aggregate.refusal = self.message

    class Retried(Event):
        TOPIC = "billtrail:StripeRequest.Retried"
        params: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            aggregate.status = RequestStatus.PREPARED
            aggregate.attempt += 1
            aggregate.params = dict(self.params)
            aggregate.refusal = None

    def __init__(
        self,
        key: str,
        operation: str,
        target: str | None,
        params: dict[str, Any],
        source: Source,
    ) -> None:
        self.key = key
        self.operation = operation
        self.target = target
        self.params = dict(params)
        self.attempt = 1
        self.status = RequestStatus.PREPARED
        self.object_id: str | None = None
        self.replayed = False
        self.answered_at: datetime | None = None
        self.refusal: str | None = None
        self.prepared_at = self.created_on

    @staticmethod
    def create_id(key: str) -> UUID:
        return natural_id("stripe_request", key)

    @classmethod
    def prepare(
        cls,
        key: str,
        operation: str,
        params: dict[str, Any],
        source: Source,
        at: datetime,
        target: str | None = None,
    ) -> StripeRequest:
        return cls._create(
            cls.Prepared,
            id=cls.create_id(check_key(key)),
            key=key,
            operation=operation,
            target=target,
            params=dict(params),
            source=source,
            timestamp=at,
        )

    @property
    def idempotency_key(self) -> str:
        """The key sent to Stripe: the derived key, and after a refusal a new one
        per attempt (Stripe replays a refusal for the key that got it)."""
        return self.key if self.attempt == 1 else f"{self.key}#{self.attempt}"

    @property
    def answered(self) -> bool:
        return self.status is RequestStatus.ANSWERED

    @property
    def refused(self) -> bool:
        return self.status is RequestStatus.REFUSED

    def answer(self, object_id: str | None, replayed: bool, source: Source, at: datetime) -> bool:
        if self.status is RequestStatus.ANSWERED:
            return False
        self._record(
            self.Answered,
            at,
            object_id=object_id,
            replayed=replayed,
            answered_at=at,
            source=source,
        )
        return True

    def refuse(
        self, http_status: int | None, code: str | None, message: str, source: Source, at: datetime
    ) -> bool:
        if self.status is not RequestStatus.PREPARED:
            return False
        self._record(
            self.Refused, at, http_status=http_status, code=code, message=message, source=source
        )
        return True

    def retry(self, params: dict[str, Any], source: Source, at: datetime) -> bool:
        if self.status is not RequestStatus.REFUSED:
            raise InvalidStripeRequest(
                f"request {self.key} is {self.status.value}; only a refused one is tried again"
            )
        self._record(self.Retried, at, params=dict(params), source=source)
        return True


class CorrectionKind(StrEnum):
    WRONG_RATE = "wrong_rate"
    DUPLICATE_CALLS = "duplicate_calls"
    CREDIT = "credit"
    WRITE_OFF = "write_off"
    VOID = "void"


class Correction(LedgerAggregate):
    TOPIC = "billtrail:Correction"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:Correction.Created"

    class Opened(Created):
        TOPIC = "billtrail:Correction.Opened"
        correction_id: str
        kind: str
        invoice: str
        entity_id: str
        reason: str
        details: dict[str, Any]

    class Completed(Event):
        TOPIC = "billtrail:Correction.Completed"
        results: dict[str, Any]

        def apply(self, aggregate: Any) -> None:
            aggregate.completed = True
            aggregate.results = dict(self.results)

    def __init__(
        self,
        correction_id: str,
        kind: str,
        invoice: str,
        entity_id: str,
        reason: str,
        details: dict[str, Any],
        source: Source,
    ) -> None:
        self.correction_id = correction_id
        self.kind = kind
        self.invoice = invoice
        self.entity_id = entity_id
        self.reason = reason
        self.details = dict(details)
        self.actor = source.actor
        self.completed = False
        self.results: dict[str, Any] = {}

    @staticmethod
    def create_id(correction_id: str) -> UUID:
        return natural_id("correction", correction_id)

    @classmethod
    def open(
        cls,
        correction_id: str,
        kind: str,
        invoice: str,
        entity_id: str,
        reason: str,
        details: dict[str, Any],
        source: Source,
        at: datetime,
    ) -> Correction:
        try:
            kind = CorrectionKind(kind).value
        except ValueError as exc:
            raise InvalidStripeRequest(f"unknown correction kind {kind!r}") from exc
        if not reason.strip():
            raise InvalidStripeRequest("a correction needs a reason")
        if not source.actor:
            raise InvalidStripeRequest("a correction needs an actor")
        return cls._create(
            cls.Opened,
            id=cls.create_id(correction_id),
            correction_id=correction_id,
            kind=kind,
            invoice=invoice,
            entity_id=entity_id,
            reason=reason.strip(),
            details=dict(details),
            source=source,
            timestamp=at,
        )

    def complete(self, results: dict[str, Any], source: Source, at: datetime) -> bool:
        if self.completed:
            return False
        self._record(self.Completed, at, results=dict(results), source=source)
        return True
