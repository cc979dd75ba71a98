"""Invoice: what Stripe reports (snapshots through `observe_invoice`) becomes each
fact once, in the order of Stripe's state machine, plus billtrail's own past due."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from ledger.app import Ledger
from ledger.errors import InvalidInvoice, InvalidTransition, UnknownEntity, UnknownInvoice
from ledger.invoices.application import CreditNoteSnapshot, InvoiceSnapshot
from ledger.invoices.domain import Invoice, Status, Totals
from ledger.sources import Source
from ledger.values import Line, Period

D = Decimal
ADMIN = Source("admin", "admin-1", actor="alice@example.com")
MONITOR = Source("scheduler_run", "past-due-2026-02-20")
PERIOD = Period(date(2026, 1, 1), date(2026, 2, 1))
LINES = [
    Line("il_1", "usage", "Calls", D("1000"), D("0.0125"), D("12.50"), "price_1", PERIOD),
    Line("il_2", "fee", "Monthly minimum", D("1"), D("37.50"), D("37.50")),
]
TOTALS = Totals(subtotal=D("50.00"), tax=D("10.00"), total=D("60.00"))
PAID_AT = datetime(2026, 2, 3, 12, 0, tzinfo=UTC)
_evt = itertools.count(1)


def evt() -> Source:
    """A new Stripe event as the source of each observation."""
    return Source("stripe_event", f"evt_{next(_evt)}")


def snap(status: str, **changes: Any) -> InvoiceSnapshot:
    fields: dict[str, Any] = {
        "stripe_id": "in_1",
        "entity_id": "acme",
        "currency": "usd",
        "period": PERIOD,
        "status": status,
        "lines": LINES,
        "totals": TOTALS,
    }
    if status != "draft":
        fields.update(number="ACME-0001", issue_date=date(2026, 2, 1), due_date=date(2026, 2, 15))
    if status == "paid":
        fields.update(
            amount_paid=D("60.00"), paid_at=PAID_AT, receipt_number="R-1", charge_id="ch_1"
        )
    fields.update(changes)
    return InvoiceSnapshot(**fields)


def kinds(ledger: Ledger, stripe_id: str = "in_1") -> list[str]:
    return [type(e).__name__ for e in ledger.history(Invoice.create_id(stripe_id))]


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


@pytest.fixture
def acme(ledger: Ledger) -> str:
    ledger.register_entity("Acme", "company", ADMIN)
    return "acme"


def test_draft_then_open_then_paid(ledger: Ledger, clock, acme: str) -> None:
    assert ledger.observe_invoice(snap("draft"), evt()) is True
    assert ledger.invoice("in_1").status is Status.DRAFT
    clock.advance(hours=1)
    assert ledger.observe_invoice(snap("open"), evt()) is True
    invoice = ledger.invoice("in_1")
    assert invoice.status is Status.OPEN
    assert (invoice.number, invoice.issue_date, invoice.due_date) == (
        "ACME-0001",
        date(2026, 2, 1),
        date(2026, 2, 15),
    )
    assert (invoice.subtotal, invoice.tax, invoice.total) == (D("50.00"), D("10.00"), D("60.00"))
    assert invoice.lines == LINES
    clock.advance(days=2)
    assert ledger.observe_invoice(snap("paid"), evt()) is True
    invoice = ledger.invoice("in_1")
    assert invoice.status is Status.PAID
    assert (invoice.amount_paid, invoice.paid_at, invoice.receipt_number, invoice.charge_id) == (
        D("60.00"),
        PAID_AT,
        "R-1",
        "ch_1",
    )
    assert kinds(ledger) == ["Drafted", "Issued", "Paid"]


def test_a_draft_whose_lines_change_records_lines_revised(ledger: Ledger, acme: str) -> None:
    ledger.observe_invoice(snap("draft"), evt())
    more = [*LINES, Line("il_3", "adjustment", "Goodwill", D("1"), D("-5"), D("-5"))]
    totals = Totals(D("45.00"), D("9.00"), D("54.00"))
    assert ledger.observe_invoice(snap("draft", lines=more, totals=totals), evt()) is True
    assert ledger.invoice("in_1").lines == more
    assert ledger.invoice("in_1").total == D("54.00")
    assert kinds(ledger) == ["Drafted", "LinesRevised"]


def test_open_then_void(ledger: Ledger, acme: str) -> None:
    ledger.observe_invoice(snap("open"), evt())
    voided_at = datetime(2026, 2, 2, tzinfo=UTC)
    assert ledger.observe_invoice(snap("void", voided_at=voided_at), evt()) is True
    assert ledger.invoice("in_1").status is Status.VOID
    assert kinds(ledger) == ["Drafted", "Issued", "Voided"]
    assert ledger.history(Invoice.create_id("in_1"))[-1].voided_at == voided_at


def test_open_then_uncollectible_then_paid(ledger: Ledger, acme: str) -> None:
    ledger.observe_invoice(snap("open"), evt())
    assert ledger.observe_invoice(snap("uncollectible"), evt()) is True
    assert ledger.invoice("in_1").status is Status.UNCOLLECTIBLE
    assert ledger.observe_invoice(snap("paid"), evt()) is True
    assert ledger.invoice("in_1").status is Status.PAID
    assert kinds(ledger) == ["Drafted", "Issued", "MarkedUncollectible", "Paid"]


def test_payment_failures_record_each_new_attempt_once(ledger: Ledger, acme: str) -> None:
    ledger.observe_invoice(snap("open"), evt())
    retry = datetime(2026, 2, 5, tzinfo=UTC)
    first = snap("open", attempt_count=1, next_attempt_at=retry, last_failure="card_declined")
    assert ledger.observe_invoice(first, evt()) is True
    assert ledger.observe_invoice(first, evt()) is False  # the same attempt reported again
    assert ledger.observe_invoice(snap("open", attempt_count=3, last_failure="x"), evt()) is True
    # A late webhook about attempt 2 is older than what the ledger knows.
    assert ledger.observe_invoice(snap("open", attempt_count=2, last_failure="y"), evt()) is False
    invoice = ledger.invoice("in_1")
    assert invoice.attempt_count == 3
    failures = [e for e in ledger.history(invoice.id) if type(e).__name__ == "PaymentFailed"]
    assert [(f.attempt_count, f.failure_message) for f in failures] == [
        (1, "card_declined"),
        (3, "x"),
    ]
    assert failures[0].next_attempt_at == retry
    # Paid on the fourth attempt: recorded as paid, not as another failure.
    assert ledger.observe_invoice(snap("paid", attempt_count=4), evt()) is True
    assert kinds(ledger)[-1] == "Paid"
    assert ledger.invoice("in_1").attempt_count == 3


def test_credit_notes_are_capped_at_the_total_and_voided_ones_free_the_room(
    ledger: Ledger, acme: str
) -> None:
    ledger.observe_invoice(snap("paid"), evt())
    cn1 = CreditNoteSnapshot("cn_1", "CN-1", D("40.00"), "duplicate", "", evidence=("call-1",))
    assert ledger.observe_invoice(snap("paid", credit_notes=[cn1]), evt()) is True
    assert ledger.invoice("in_1").credited == D("40.00")
    too_much = CreditNoteSnapshot("cn_2", "CN-2", D("20.01"), "goodwill", "")
    before = head(ledger)
    with pytest.raises(InvalidInvoice, match="exceed the invoice total"):
        ledger.observe_invoice(snap("paid", credit_notes=[cn1, too_much]), evt())
    assert head(ledger) == before
    exactly = replace(too_much, amount=D("20.00"))
    assert ledger.observe_invoice(snap("paid", credit_notes=[cn1, exactly]), evt()) is True
    assert ledger.invoice("in_1").credited == D("60.00")
    voided = replace(cn1, voided=True)
    assert ledger.observe_invoice(snap("paid", credit_notes=[voided, exactly]), evt()) is True
    invoice = ledger.invoice("in_1")
    assert invoice.credited == D("20.00")
    assert invoice.credit_notes["cn_1"].voided is True
    assert invoice.credit_notes["cn_1"].evidence == ("call-1",)
    assert kinds(ledger)[-3:] == ["CreditNoteIssued", "CreditNoteIssued", "CreditNoteVoided"]


def test_a_credit_note_must_be_positive(ledger: Ledger, acme: str) -> None:
    ledger.observe_invoice(snap("open"), evt())
    zero = CreditNoteSnapshot("cn_0", "CN-0", D("0"), "nothing", "")
    with pytest.raises(InvalidInvoice, match="positive amount"):
        ledger.observe_invoice(snap("open", credit_notes=[zero]), evt())


def test_past_due_only_when_open_and_the_due_date_has_passed(ledger: Ledger, acme: str) -> None:
    ledger.observe_invoice(snap("draft"), evt())
    assert ledger.mark_past_due("in_1", date(2026, 3, 1), MONITOR) is False  # a draft
    ledger.observe_invoice(snap("open"), evt())
    assert ledger.mark_past_due("in_1", date(2026, 2, 15), ADMIN) is False  # due today
    assert ledger.invoice("in_1").status is Status.OPEN
    assert ledger.mark_past_due("in_1", date(2026, 2, 16), ADMIN) is True
    invoice = ledger.invoice("in_1")
    assert (invoice.status, invoice.past_due_on) == (Status.PAST_DUE, date(2026, 2, 16))
    assert ledger.mark_past_due("in_1", date(2026, 2, 17), ADMIN) is False  # already
    # Stripe still calls it open; the ledger keeps past due and takes the payment.
    assert ledger.observe_invoice(snap("open"), evt()) is False
    assert ledger.observe_invoice(snap("paid"), evt()) is True
    assert ledger.mark_past_due("in_1", date(2026, 3, 1), ADMIN) is False  # paid
    assert kinds(ledger) == ["Drafted", "Issued", "BecamePastDue", "Paid"]


def test_an_invoice_without_due_date_never_becomes_past_due(ledger: Ledger, acme: str) -> None:
    ledger.observe_invoice(snap("open", due_date=None), evt())
    assert ledger.mark_past_due("in_1", date(2030, 1, 1), ADMIN) is False
    assert ledger.invoice("in_1").status is Status.OPEN


@pytest.mark.parametrize(
    ("history", "illegal"),
    [
        (["paid"], "void"),
        (["void"], "paid"),
        (["void"], "uncollectible"),
    ],
)
def test_illegal_transitions_reported_by_stripe_raise_and_record_nothing(
    ledger: Ledger, acme: str, history: list[str], illegal: str
) -> None:
    for status in history:
        ledger.observe_invoice(snap(status), evt())
    before = head(ledger)
    status_before = ledger.invoice("in_1").status
    if illegal == "uncollectible":
        # Stripe cannot make a void invoice uncollectible; the ledger ignores the claim.
        assert ledger.observe_invoice(snap(illegal), evt()) is False
    else:
        with pytest.raises(InvalidTransition, match="cannot"):
            ledger.observe_invoice(snap(illegal), evt())
    assert head(ledger) == before
    assert ledger.invoice("in_1").status is status_before


def _draft() -> Invoice:
    return Invoice.draft("in_9", "acme", "usd", PERIOD, LINES, TOTALS, ADMIN, PAID_AT)


def test_the_aggregate_refuses_transitions_its_status_does_not_allow() -> None:
    at = PAID_AT
    invoice = _draft()
    with pytest.raises(InvalidTransition, match="Draft; cannot be paid"):
        invoice.pay(D("60"), at, None, None, ADMIN, at)
    with pytest.raises(InvalidTransition, match="cannot be voided"):
        invoice.void(at, "x", ADMIN, at)
    with pytest.raises(InvalidTransition, match="cannot be marked uncollectible"):
        invoice.mark_uncollectible(at, "x", ADMIN, at)
    with pytest.raises(InvalidTransition, match="cannot record a failed payment"):
        invoice.fail_payment(1, None, "declined", ADMIN, at)
    with pytest.raises(InvalidTransition, match="cannot take a credit note"):
        invoice.issue_credit_note("cn", "CN", D("1"), "r", "", [], ADMIN, at)
    invoice.issue("N-1", date(2026, 2, 1), None, LINES, TOTALS, ADMIN, at)
    with pytest.raises(InvalidTransition, match="only a draft can change"):
        invoice.revise_lines(LINES[:1], Totals(D("12.50"), D("0"), D("12.50")), ADMIN, at)
    with pytest.raises(InvalidTransition, match="replaced before it is voided"):
        invoice.mark_replaced("in_10", "corrected", ADMIN, at)
    invoice.pay(D("60"), at, None, None, ADMIN, at)
    with pytest.raises(InvalidTransition, match="Paid; cannot be marked uncollectible"):
        invoice.mark_uncollectible(at, "x", ADMIN, at)
    with pytest.raises(InvalidTransition, match="Paid; cannot record a failed payment"):
        invoice.fail_payment(2, None, "declined", ADMIN, at)


def test_a_voided_invoice_can_be_marked_replaced_once(ledger: Ledger, acme: str) -> None:
    ledger.observe_invoice(snap("void"), evt())
    assert ledger.mark_replaced("in_1", "in_2", "corrected usage", ADMIN) is True
    assert ledger.mark_replaced("in_1", "in_2", "corrected usage", ADMIN) is False
    with pytest.raises(InvalidInvoice, match="already replaced by in_2"):
        ledger.mark_replaced("in_1", "in_3", "again", ADMIN)
    assert ledger.invoice("in_1").replaced_by == "in_2"


def test_observing_the_same_snapshot_twice_records_nothing(ledger: Ledger, acme: str) -> None:
    for status in ["draft", "open", "paid"]:
        assert ledger.observe_invoice(snap(status), evt()) is True
        before = head(ledger)
        # A webhook retry is a new Stripe event about the same facts: nothing new.
        assert ledger.observe_invoice(snap(status), evt()) is False
        assert ledger.observe_invoice(snap(status), ADMIN) is False
        assert head(ledger) == before


def test_a_paid_snapshot_before_the_open_one_still_yields_one_of_each_fact(
    ledger: Ledger, clock, acme: str
) -> None:
    assert ledger.observe_invoice(snap("paid"), evt()) is True
    clock.advance(seconds=5)
    assert ledger.observe_invoice(snap("open"), evt()) is False
    assert ledger.observe_invoice(snap("draft"), evt()) is False
    assert ledger.observe_invoice(snap("paid"), evt()) is False
    assert kinds(ledger) == ["Drafted", "Issued", "Paid"]
    invoice = ledger.invoice("in_1")
    assert (invoice.status, invoice.number, invoice.amount_paid) == (
        Status.PAID,
        "ACME-0001",
        D("60.00"),
    )


@pytest.mark.parametrize("status", ["past_due", "deleted", "PAID"])
def test_statuses_stripe_does_not_have_are_refused(ledger: Ledger, acme: str, status: str) -> None:
    with pytest.raises(InvalidInvoice, match="unknown invoice status"):
        ledger.observe_invoice(snap(status), evt())
    assert head(ledger) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stripe_id": "inv_1"}, "not a Stripe invoice id"),
        ({"totals": Totals(D("50"), D("10"), D("61"))}, "is not the total"),
        ({"number": None}, "finalized without number"),
        ({"due_date": date(2026, 1, 31)}, "before issue date"),
    ],
)
def test_inconsistent_snapshots_are_refused(
    ledger: Ledger, acme: str, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInvoice, match=message):
        ledger.observe_invoice(snap("open", **changes), evt())
    assert head(ledger) == 1


def test_an_invoice_of_an_unknown_entity_is_refused(ledger: Ledger) -> None:
    with pytest.raises(UnknownEntity):
        ledger.observe_invoice(snap("open", entity_id="ghost"), evt())
    with pytest.raises(UnknownInvoice, match="in_404"):
        ledger.invoice("in_404")
    with pytest.raises(UnknownInvoice):
        ledger.mark_past_due("in_404", date(2026, 3, 1), MONITOR)


def test_invoices_are_listed_in_the_order_first_recorded(ledger: Ledger, acme: str) -> None:
    for stripe_id in ["in_b", "in_a", "in_c"]:
        ledger.observe_invoice(snap("open", stripe_id=stripe_id), evt())
    assert [i.stripe_id for i in ledger.invoices()] == ["in_b", "in_a", "in_c"]


def test_an_invoice_is_found_by_its_stripe_id_or_its_number(ledger: Ledger, acme: str) -> None:
    ledger.observe_invoice(snap("draft", stripe_id="in_draft"), evt())
    ledger.observe_invoice(snap("open", stripe_id="in_a", number="ACME-0001"), evt())
    ledger.observe_invoice(snap("paid", stripe_id="in_b", number="ACME-0002"), evt())
    assert ledger.find_invoice("in_b").number == "ACME-0002"
    assert ledger.find_invoice("ACME-0001").stripe_id == "in_a"
    assert ledger.find_invoice("in_draft").status is Status.DRAFT
    for missing in ("ACME-0003", "in_404", ""):
        with pytest.raises(UnknownInvoice):
            ledger.find_invoice(missing)
