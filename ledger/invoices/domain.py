"""Invoice: one per Stripe invoice. The ledger records what Stripe did (drafted,
issued, paid, voided, ...) plus what only billtrail knows: that an open invoice
became past due on a given day. Stripe has no past-due status; the portal does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from ledger.aggregate import LedgerAggregate
from ledger.errors import InvalidInvoice, InvalidTransition
from ledger.money import normalise_currency
from ledger.sources import Source
from ledger.values import Line, Period, natural_id


class Status(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    PAST_DUE = "past_due"
    UNCOLLECTIBLE = "uncollectible"
    VOID = "void"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").title()


# Which statuses each transition may start from (Stripe's state machine plus past due).
_PAYABLE = {Status.OPEN, Status.PAST_DUE, Status.UNCOLLECTIBLE}
_VOIDABLE = {Status.OPEN, Status.PAST_DUE, Status.UNCOLLECTIBLE}
_UNCOLLECTIBLE_FROM = {Status.OPEN, Status.PAST_DUE}
_CREDITABLE = {Status.OPEN, Status.PAST_DUE, Status.PAID, Status.UNCOLLECTIBLE}


@dataclass(frozen=True)
class CreditNote:
    credit_note_id: str
    number: str
    amount: Decimal
    reason: str
    memo: str
    evidence: tuple[str, ...]
    issued_at: datetime
    voided: bool = False


@dataclass(frozen=True)
class Totals:
    subtotal: Decimal
    tax: Decimal
    total: Decimal


def check_amount(value: Decimal, what: str) -> Decimal:
    """Amounts are replayed forever: a float or NaN must never reach an event."""
    if isinstance(value, bool) or not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidInvoice(f"{what} must be a finite Decimal, got {value!r}")
    return value


def check_totals(lines: list[Line], totals: Totals) -> None:
    for what in ("subtotal", "tax", "total"):
        check_amount(getattr(totals, what), what)
    if totals.subtotal + totals.tax != totals.total:
        raise InvalidInvoice(
            f"subtotal {totals.subtotal} + tax {totals.tax} is not the total {totals.total}"
        )
    for line in lines:
        if not isinstance(line, Line):
            raise InvalidInvoice(f"not an invoice line: {line!r}")


def _set_lines(aggregate: Any, event: Any) -> None:
    """Lines and totals as an Issued or LinesRevised event states them (copied: the
    event's list is replayed forever and must not be shared with live state)."""
    aggregate.lines = list(event.lines)
    aggregate.subtotal, aggregate.tax, aggregate.total = event.subtotal, event.tax, event.total


class Invoice(LedgerAggregate):
    TOPIC = "billtrail:Invoice"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:Invoice.Created"

    class Drafted(Created):
        TOPIC = "billtrail:Invoice.Drafted"
        stripe_id: str
        entity_id: str
        currency: str
        period: Period
        lines: list[Line]
        subtotal: Decimal
        tax: Decimal
        total: Decimal
        replaces: str | None

    class Issued(Event):
        """Finalized in Stripe: it has a number, an issue date and a due date."""

        TOPIC = "billtrail:Invoice.Issued"
        number: str
        issue_date: date
        due_date: date | None
        lines: list[Line]
        subtotal: Decimal
        tax: Decimal
        total: Decimal

        def apply(self, aggregate: Any) -> None:
            aggregate.number = self.number
            aggregate.issue_date = self.issue_date
            aggregate.due_date = self.due_date
            _set_lines(aggregate, self)
            aggregate.status = Status.OPEN

    class LinesRevised(Event):
        TOPIC = "billtrail:Invoice.LinesRevised"
        lines: list[Line]
        subtotal: Decimal
        tax: Decimal
        total: Decimal

        def apply(self, aggregate: Any) -> None:
            _set_lines(aggregate, self)

    class PaymentFailed(Event):
        TOPIC = "billtrail:Invoice.PaymentFailed"
        attempt_count: int
        next_attempt_at: datetime | None
        failure_message: str

        def apply(self, aggregate: Any) -> None:
            aggregate.attempt_count = self.attempt_count
            aggregate.next_attempt_at = self.next_attempt_at

    class Paid(Event):
        TOPIC = "billtrail:Invoice.Paid"
        amount_paid: Decimal
        paid_at: datetime
        receipt_number: str | None
        charge_id: str | None

        def apply(self, aggregate: Any) -> None:
            aggregate.status = Status.PAID
            aggregate.amount_paid = self.amount_paid
            aggregate.paid_at = self.paid_at
            aggregate.receipt_number = self.receipt_number
            aggregate.charge_id = self.charge_id

    class BecamePastDue(Event):
        """Recorded by the daily monitor: open, and its due date has passed."""

        TOPIC = "billtrail:Invoice.BecamePastDue"
        on: date

        def apply(self, aggregate: Any) -> None:
            aggregate.status = Status.PAST_DUE
            aggregate.past_due_on = self.on

    class Voided(Event):
        TOPIC = "billtrail:Invoice.Voided"
        voided_at: datetime
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = Status.VOID

    class MarkedUncollectible(Event):
        TOPIC = "billtrail:Invoice.MarkedUncollectible"
        marked_at: datetime
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = Status.UNCOLLECTIBLE

    class CreditNoteIssued(Event):
        TOPIC = "billtrail:Invoice.CreditNoteIssued"
        credit_note_id: str
        number: str
        amount: Decimal
        reason: str
        memo: str
        evidence: list[str]

        def apply(self, aggregate: Any) -> None:
            aggregate.credit_notes[self.credit_note_id] = CreditNote(
                credit_note_id=self.credit_note_id,
                number=self.number,
                amount=self.amount,
                reason=self.reason,
                memo=self.memo,
                evidence=tuple(self.evidence),
                issued_at=self.timestamp,
            )

    class CreditNoteVoided(Event):
        TOPIC = "billtrail:Invoice.CreditNoteVoided"
        credit_note_id: str

        def apply(self, aggregate: Any) -> None:
            note = aggregate.credit_notes[self.credit_note_id]
            aggregate.credit_notes[self.credit_note_id] = CreditNote(
                **{**note.__dict__, "voided": True}
            )

    class Replaced(Event):
        """A corrected invoice for the same entity and period replaces this one."""

        TOPIC = "billtrail:Invoice.Replaced"
        replacement_stripe_id: str
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.replaced_by = self.replacement_stripe_id

    class ReplacementRecorded(Event):
        """This invoice replaces `replaces` (a voided invoice of the same entity and
        period), when the ledger learnt it after the invoice was first recorded."""

        TOPIC = "billtrail:Invoice.ReplacementRecorded"
        replaces: str
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.replaces = self.replaces

    def __init__(
        self,
        stripe_id: str,
        entity_id: str,
        currency: str,
        period: Period,
        lines: list[Line],
        subtotal: Decimal,
        tax: Decimal,
        total: Decimal,
        replaces: str | None,
        source: Source,
    ) -> None:
        self.stripe_id = stripe_id
        self.entity_id = entity_id
        self.currency = currency
        self.period = period
        self.lines = list(lines)
        self.subtotal, self.tax, self.total = subtotal, tax, total
        self.replaces = replaces
        self.replaced_by: str | None = None
        self.status = Status.DRAFT
        self.number: str | None = None
        self.issue_date: date | None = None
        self.due_date: date | None = None
        self.attempt_count = 0
        self.next_attempt_at: datetime | None = None
        self.amount_paid = Decimal(0)
        self.paid_at: datetime | None = None
        self.receipt_number: str | None = None
        self.charge_id: str | None = None
        self.past_due_on: date | None = None
        self.credit_notes: dict[str, CreditNote] = {}

    @staticmethod
    def create_id(stripe_id: str) -> UUID:
        return natural_id("invoice", stripe_id)

    @classmethod
    def draft(
        cls,
        stripe_id: str,
        entity_id: str,
        currency: str,
        period: Period,
        lines: list[Line],
        totals: Totals,
        source: Source,
        at: datetime,
        replaces: str | None = None,
    ) -> Invoice:
        if not stripe_id.startswith("in_"):
            raise InvalidInvoice(f"not a Stripe invoice id: {stripe_id!r}")
        check_totals(lines, totals)
        return cls._create(
            cls.Drafted,
            id=cls.create_id(stripe_id),
            stripe_id=stripe_id,
            entity_id=entity_id,
            currency=normalise_currency(currency),
            period=period,
            lines=list(lines),
            subtotal=totals.subtotal,
            tax=totals.tax,
            total=totals.total,
            replaces=replaces,
            source=source,
            timestamp=at,
        )

    @property
    def credited(self) -> Decimal:
        return sum((n.amount for n in self.credit_notes.values() if not n.voided), Decimal(0))

    def _require(self, allowed: set[Status], action: str) -> None:
        if self.status not in allowed:
            raise InvalidTransition(
                f"invoice {self.number or self.stripe_id} is {self.status.label}; cannot {action}"
            )

    def issue(
        self,
        number: str,
        issue_date: date,
        due_date: date | None,
        lines: list[Line],
        totals: Totals,
        source: Source,
        at: datetime,
    ) -> bool:
        if self.status is not Status.DRAFT:
            return False  # finalization happens once; a repeat is the same fact again
        if not number:
            raise InvalidInvoice("an issued invoice needs a number")
        if due_date is not None and due_date < issue_date:
            raise InvalidInvoice(f"due date {due_date} is before issue date {issue_date}")
        check_totals(lines, totals)
        self._record(
            self.Issued,
            at,
            number=number,
            issue_date=issue_date,
            due_date=due_date,
            lines=list(lines),
            subtotal=totals.subtotal,
            tax=totals.tax,
            total=totals.total,
            source=source,
        )
        return True

    def has_lines(self, lines: list[Line], totals: Totals) -> bool:
        return (lines, totals) == (self.lines, Totals(self.subtotal, self.tax, self.total))

    def revise_lines(self, lines: list[Line], totals: Totals, source: Source, at: datetime) -> bool:
        check_totals(lines, totals)
        if self.has_lines(lines, totals):
            return False
        self._require({Status.DRAFT}, "change its lines (only a draft can change)")
        self._record(
            self.LinesRevised,
            at,
            lines=list(lines),
            subtotal=totals.subtotal,
            tax=totals.tax,
            total=totals.total,
            source=source,
        )
        return True

    def fail_payment(
        self,
        attempt_count: int,
        next_attempt_at: datetime | None,
        failure_message: str,
        source: Source,
        at: datetime,
    ) -> bool:
        if attempt_count <= self.attempt_count:
            return False  # an older or repeated report of an attempt already known
        self._require({Status.OPEN, Status.PAST_DUE}, "record a failed payment")
        self._record(
            self.PaymentFailed,
            at,
            attempt_count=attempt_count,
            next_attempt_at=next_attempt_at,
            failure_message=failure_message,
            source=source,
        )
        return True

    def pay(
        self,
        amount_paid: Decimal,
        paid_at: datetime,
        receipt_number: str | None,
        charge_id: str | None,
        source: Source,
        at: datetime,
    ) -> bool:
        if self.status is Status.PAID:
            return False
        self._require(_PAYABLE, "be paid")
        check_amount(amount_paid, "amount paid")
        self._record(
            self.Paid,
            at,
            amount_paid=amount_paid,
            paid_at=paid_at,
            receipt_number=receipt_number,
            charge_id=charge_id,
            source=source,
        )
        return True

    def mark_past_due(self, today: date, source: Source, at: datetime) -> bool:
        if self.status is not Status.OPEN or self.due_date is None or self.due_date >= today:
            return False
        self._record(self.BecamePastDue, at, on=today, source=source)
        return True

    def void(self, voided_at: datetime, reason: str, source: Source, at: datetime) -> bool:
        if self.status is Status.VOID:
            return False
        self._require(_VOIDABLE, "be voided")
        self._record(self.Voided, at, voided_at=voided_at, reason=reason, source=source)
        return True

    def mark_uncollectible(
        self, marked_at: datetime, reason: str, source: Source, at: datetime
    ) -> bool:
        if self.status is Status.UNCOLLECTIBLE:
            return False
        self._require(_UNCOLLECTIBLE_FROM, "be marked uncollectible")
        self._record(
            self.MarkedUncollectible, at, marked_at=marked_at, reason=reason, source=source
        )
        return True

    def issue_credit_note(
        self,
        credit_note_id: str,
        number: str,
        amount: Decimal,
        reason: str,
        memo: str,
        evidence: list[str],
        source: Source,
        at: datetime,
    ) -> bool:
        if credit_note_id in self.credit_notes:
            return False
        self._require(_CREDITABLE, "take a credit note")
        check_amount(amount, "credit note amount")
        if amount <= 0:
            raise InvalidInvoice(f"a credit note must be for a positive amount, not {amount}")
        if self.credited + amount > self.total:
            raise InvalidInvoice(
                f"credits of {self.credited + amount} would exceed the invoice total {self.total}"
            )
        self._record(
            self.CreditNoteIssued,
            at,
            credit_note_id=credit_note_id,
            number=number,
            amount=amount,
            reason=reason,
            memo=memo,
            evidence=list(evidence),
            source=source,
        )
        return True

    def void_credit_note(self, credit_note_id: str, source: Source, at: datetime) -> bool:
        note = self.credit_notes.get(credit_note_id)
        if note is None:
            raise InvalidInvoice(f"invoice {self.stripe_id} has no credit note {credit_note_id}")
        if note.voided:
            return False
        self._record(self.CreditNoteVoided, at, credit_note_id=credit_note_id, source=source)
        return True

    def mark_replaced(
        self, replacement_stripe_id: str, reason: str, source: Source, at: datetime
    ) -> bool:
        if self.replaced_by == replacement_stripe_id:
            return False
        if self.replaced_by is not None:
            raise InvalidInvoice(
                f"invoice {self.stripe_id} is already replaced by {self.replaced_by}"
            )
        self._require({Status.VOID}, "be replaced before it is voided")
        self._record(
            self.Replaced,
            at,
            replacement_stripe_id=replacement_stripe_id,
            reason=reason,
            source=source,
        )
        return True

    def record_replacement_of(
        self, replaced_stripe_id: str, reason: str, source: Source, at: datetime
    ) -> bool:
        if self.replaces == replaced_stripe_id:
            return False
        if self.replaces is not None:
            raise InvalidInvoice(f"invoice {self.stripe_id} already replaces {self.replaces}")
        if replaced_stripe_id == self.stripe_id:
            raise InvalidInvoice(f"invoice {self.stripe_id} cannot replace itself")
        self._record(
            self.ReplacementRecorded, at, replaces=replaced_stripe_id, reason=reason, source=source
        )
        return True
