"""Commands and queries on invoices. Stripe is the authority on an invoice's
money and state; `observe_invoice` takes what Stripe reports now (a snapshot, read
fresh from Stripe by the adapter) and records only what really changed, so webhooks
may arrive twice, late or out of order and the ledger still holds each fact once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from eventsourcing.persistence import IntegrityError

from ledger.application import MAX_CONFLICT_RETRIES, ConcurrentChange, topics_of
from ledger.entities.application import EntityCommands
from ledger.errors import InvalidInvoice, UnknownInvoice
from ledger.invoices.domain import Invoice, Status, Totals
from ledger.sources import Source
from ledger.values import Line, Period


@dataclass(frozen=True)
class CreditNoteSnapshot:
    credit_note_id: str
    number: str
    amount: Decimal
    reason: str
    memo: str
    voided: bool = False
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class InvoiceSnapshot:
    """An invoice as Stripe reports it at one moment, in ledger terms."""

    stripe_id: str
    entity_id: str
    currency: str
    period: Period
    status: str  # Stripe's: draft, open, paid, void, uncollectible
    lines: list[Line]
    totals: Totals
    number: str | None = None
    issue_date: date | None = None
    due_date: date | None = None
    attempt_count: int = 0
    next_attempt_at: datetime | None = None
    last_failure: str = ""
    amount_paid: Decimal = Decimal(0)
    paid_at: datetime | None = None
    receipt_number: str | None = None
    charge_id: str | None = None
    voided_at: datetime | None = None
    marked_uncollectible_at: datetime | None = None
    credit_notes: list[CreditNoteSnapshot] = field(default_factory=list)
    replaces: str | None = None


def _missing(ref: str) -> UnknownInvoice:
    return UnknownInvoice(f"no invoice {ref!r}")


class StaleSnapshot(ConcurrentChange):
    """The snapshot would revise a draft's lines, but another reader recorded a
    change to the invoice after this one began reading it from Stripe: this read
    may be the older of the two. Read the invoice again."""


class InvoiceCommands(EntityCommands):
    def observe_invoice(
        self, snapshot: InvoiceSnapshot, source: Source, *, read_after: int | None = None
    ) -> bool:
        """Record whatever in `snapshot` the ledger does not know yet. True if
        anything was recorded.

        Every fact but one only moves forward (the status along Stripe's state
        machine, attempt counts, credit notes), so an older snapshot recorded after
        a newer one records nothing. The one that can go back is a draft's lines
        (Stripe gives their revisions no time): `read_after` is `invoice_version`
        taken before the snapshot was read from Stripe, and a revision is refused
        with `StaleSnapshot` when the invoice changed since. None: the caller
        vouches that nothing newer can have been recorded (no check)."""
        if snapshot.status not in {s.value for s in Status} or snapshot.status == "past_due":
            raise InvalidInvoice(f"Stripe reports an unknown invoice status {snapshot.status!r}")
        self.entity(snapshot.entity_id)
        invoice_id = Invoice.create_id(snapshot.stripe_id)
        created = False
        if not self.exists(invoice_id):
            draft = Invoice.draft(
                snapshot.stripe_id,
                snapshot.entity_id,
                snapshot.currency,
                snapshot.period,
                snapshot.lines,
                snapshot.totals,
                source,
                self.clock(),
                replaces=snapshot.replaces,
            )
            _catch_up(draft, snapshot, source, self.clock(), fresh=True)
            key = self.source_key(source, "observe_invoice", invoice_id)
            created = self._create(draft, source_keys=[key] if key else [])
        if created:
            return True
        at = self.clock()
        return self._change(
            Invoice,
            invoice_id,
            "observe_invoice",
            source,
            lambda inv: _catch_up(
                inv, snapshot, source, at, fresh=read_after in (None, inv.version)
            ),
            lambda: _missing(snapshot.stripe_id),
        )

    def invoice_version(self, stripe_id: str) -> int:
        """The version of the invoice's last recorded event (0: not recorded yet);
        what a reader notes before reading the invoice from Stripe (`read_after`)."""
        last = self.recorder.select_events(Invoice.create_id(stripe_id), desc=True, limit=1)
        return last[0].originator_version if last else 0

    def invoice(self, stripe_id: str) -> Invoice:
        return self.load(Invoice, Invoice.create_id(stripe_id), lambda: _missing(stripe_id))

    def find_invoice(self, ref: str) -> Invoice:
        """An invoice by its Stripe id (in_...) or its number."""
        if ref.startswith("in_"):
            return self.invoice(ref)
        for event in self.events_of_topics(topics_of(Invoice.Issued)):
            if event.number == ref:
                return self.load(Invoice, event.originator_id, lambda: _missing(ref))
        raise _missing(ref)

    def invoice_as_recorded(self, stripe_id: str, at: datetime) -> Invoice:
        return self.as_recorded(
            Invoice, Invoice.create_id(stripe_id), at, lambda: _missing(stripe_id)
        )

    def mark_past_due(self, stripe_id: str, today: date, source: Source) -> bool:
        at = self.clock()
        return self._change(
            Invoice,
            Invoice.create_id(stripe_id),
            "mark_past_due",
            source,
            lambda inv: inv.mark_past_due(today, source, at),
            lambda: _missing(stripe_id),
        )

    def mark_replaced(
        self, stripe_id: str, replacement_stripe_id: str, reason: str, source: Source
    ) -> bool:
        at = self.clock()
        return self._change(
            Invoice,
            Invoice.create_id(stripe_id),
            "mark_replaced",
            source,
            lambda inv: inv.mark_replaced(replacement_stripe_id, reason, source, at),
            lambda: _missing(stripe_id),
        )

    def link_replacement(
        self, replaced_stripe_id: str, replacement_stripe_id: str, reason: str, source: Source
    ) -> bool:
        """Record both sides of a replacement in one transaction: the voided invoice
        is replaced by the new one, the new one replaces it (same entity)."""
        for _ in range(MAX_CONFLICT_RETRIES):
            at = self.clock()
            old = self.invoice(replaced_stripe_id)
            new = self.invoice(replacement_stripe_id)
            if old.entity_id != new.entity_id:
                raise InvalidInvoice(
                    f"invoice {replacement_stripe_id} is not {old.entity_id}'s; "
                    f"it cannot replace {replaced_stripe_id}"
                )
            changed = [
                inv
                for inv, did in (
                    (old, old.mark_replaced(replacement_stripe_id, reason, source, at)),
                    (new, new.record_replacement_of(replaced_stripe_id, reason, source, at)),
                )
                if did
            ]
            if not changed:
                return False
            try:
                self.save(*changed)
            except IntegrityError:
                continue
            return True
        raise ConcurrentChange(
            f"invoices {replaced_stripe_id} and {replacement_stripe_id} kept changing"
        )

    def invoices(self) -> list[Invoice]:
        """Every invoice in the order first recorded. (The portal reads the projection.)"""
        ids = [e.stripe_id for e in self.events_of_topics(topics_of(Invoice.Drafted))]
        return [self.invoice(stripe_id) for stripe_id in ids]


def _catch_up(
    invoice: Invoice, s: InvoiceSnapshot, source: Source, at: datetime, *, fresh: bool
) -> bool:
    """Apply to `invoice` the facts in `s` it lacks, in the order Stripe's state
    machine produces them. Returns whether anything was recorded. `fresh`: nothing
    was recorded for the invoice since `s` began to be read."""
    changed = False
    if invoice.status is Status.DRAFT and s.status == Status.DRAFT:
        if not fresh and not invoice.has_lines(s.lines, s.totals):
            raise StaleSnapshot(
                f"invoice {s.stripe_id} changed in the ledger while it was read from Stripe"
            )
        changed |= invoice.revise_lines(s.lines, s.totals, source, at)
    if invoice.status is Status.DRAFT and s.status != Status.DRAFT:
        if s.number is None or s.issue_date is None:
            raise InvalidInvoice(f"Stripe reports {s.stripe_id} finalized without number or date")
        changed |= invoice.issue(s.number, s.issue_date, s.due_date, s.lines, s.totals, source, at)
    if (
        s.attempt_count > invoice.attempt_count
        and s.status != Status.PAID
        and invoice.status in (Status.OPEN, Status.PAST_DUE)
    ):
        changed |= invoice.fail_payment(
            s.attempt_count, s.next_attempt_at, s.last_failure, source, at
        )
    # Voids first (of known notes, then of notes new to the ledger): the room a voided
    # note frees under the total is what Stripe's newer notes use, and Stripe lists
    # credit notes newest first.
    known = set(invoice.credit_notes)
    for note in sorted(s.credit_notes, key=lambda n: (n.credit_note_id not in known, not n.voided)):
        if note.credit_note_id not in invoice.credit_notes and invoice.status is not Status.DRAFT:
            changed |= invoice.issue_credit_note(
                note.credit_note_id,
                note.number,
                note.amount,
                note.reason,
                note.memo,
                list(note.evidence),
                source,
                at,
            )
        if note.voided and note.credit_note_id in invoice.credit_notes:
            changed |= invoice.void_credit_note(note.credit_note_id, source, at)
    if s.status == Status.UNCOLLECTIBLE and invoice.status in (Status.OPEN, Status.PAST_DUE):
        changed |= invoice.mark_uncollectible(
            s.marked_uncollectible_at or at, "marked uncollectible in Stripe", source, at
        )
    if s.status == Status.PAID:
        changed |= invoice.pay(
            s.amount_paid, s.paid_at or at, s.receipt_number, s.charge_id, source, at
        )
    if s.status == Status.VOID:
        changed |= invoice.void(s.voided_at or at, "voided in Stripe", source, at)
    return changed
