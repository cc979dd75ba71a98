"""The mapping of a Stripe invoice to the ledger's InvoiceSnapshot: exact money,
line kinds, tax and discount lines that keep the arithmetic whole, days in the
entity's time zone; and the reader against the sandbox over HTTP (the entity
from the customer, every line, the credit notes, gone and foreign invoices)."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import stripe

from adapters.stripe.invoices import (
    InvoiceReader,
    NotForTheLedger,
    UnresolvedEntity,
    credit_note_snapshot,
    invoice_snapshot,
    period_of,
    unit_price,
)
from adapters.stripe.sandbox import RunningSandbox
from adapters.stripe.testing import BillingWorld
from ledger.app import Ledger
from ledger.sources import Source
from ledger.values import Line, Period

UTC_ZONE = ZoneInfo("UTC")
JAN_1 = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400


def line(
    line_id: str,
    amount: int,
    *,
    price: str | None = None,
    unit: str | None = None,
    quantity: int = 1,
    start: int = JAN_1,
    end: int = JAN_1,
    metadata: dict[str, str] | None = None,
    proration: bool = False,
) -> dict[str, Any]:
    return {
        "id": line_id,
        "object": "line_item",
        "amount": amount,
        "currency": "usd",
        "description": f"line {line_id}",
        "metadata": metadata or {},
        "parent": {
            "type": "invoice_item_details",
            "subscription_item_details": None,
            "invoice_item_details": {"invoice_item": "ii_1", "proration": proration},
        },
        "period": {"start": start, "end": end},
        "pricing": (
            {
                "type": "price_details",
                "unit_amount_decimal": unit,
                "price_details": {"price": price, "product": "prod_1"},
            }
            if price
            else None
        ),
        "quantity": quantity,
        "quantity_decimal": str(quantity),
    }


BASE: dict[str, Any] = {
    "id": "in_1",
    "object": "invoice",
    "currency": "usd",
    "customer": "cus_1",
    "status": "paid",
    "number": "ACME-0001",
    "created": JAN_1 + 31 * DAY,
    "effective_at": JAN_1 + 31 * DAY + 3600,
    "period_start": JAN_1,
    "period_end": JAN_1 + 31 * DAY,
    "due_date": None,
    "attempt_count": 1,
    "next_payment_attempt": None,
    "last_finalization_error": None,
    "amount_paid": 7732,
    "amount_paid_off_stripe": 0,
    "receipt_number": "R-1",
    "from_invoice": None,
    "subtotal": 6443,
    "total_excluding_tax": 6443,
    "total": 7732,
    "total_taxes": [
        {
            "amount": 1289,
            "tax_behavior": "exclusive",
            "tax_rate_details": {"tax_rate": "txr_vat"},
            "taxable_amount": 6443,
            "type": "tax_rate_details",
        }
    ],
    "default_tax_rates": [
        {"id": "txr_vat", "object": "tax_rate", "display_name": "VAT", "percentage": 20}
    ],
    "status_transitions": {
        "finalized_at": JAN_1 + 31 * DAY + 3600,
        "paid_at": JAN_1 + 31 * DAY + 3600,
        "voided_at": None,
        "marked_uncollectible_at": None,
    },
    "lines": {
        "object": "list",
        "has_more": False,
        "url": "/v1/invoices/in_1/lines",
        "data": [
            line(
                "il_fee",
                4900,
                price="price_fee",
                unit="4900",
                start=JAN_1 + 31 * DAY,
                end=JAN_1 + 59 * DAY,
            ),
            line(
                "il_calls",
                1543,
                price="price_calls",
                unit="1.25",
                quantity=1234,
                start=JAN_1,
                end=JAN_1 + 31 * DAY,
            ),
        ],
    },
}
USAGE = {"price_calls": "metered", "price_fee": "licensed"}


def invoice(**changes: Any) -> stripe.Invoice:
    values = copy.deepcopy(BASE)
    values.update(changes)
    return stripe.Invoice.construct_from(values, None)


def snapshot(inv: stripe.Invoice, zone: ZoneInfo = UTC_ZONE, **kwargs: Any) -> Any:
    return invoice_snapshot(inv, entity_id="acme", timezone=zone, usage_type=USAGE.get, **kwargs)


def test_amounts_are_exact_decimals_and_lines_add_up() -> None:
    s = snapshot(invoice())
    fee, calls, tax = s.lines
    assert (fee.kind, fee.amount, fee.unit_amount, fee.quantity) == (
        "fee",
        Decimal("49.00"),
        Decimal("49.00"),
        Decimal(1),
    )
    # 1.25 cents a call, kept exact: quantity x unit price is the amount before rounding.
    assert (calls.kind, calls.unit_amount, calls.quantity, calls.amount) == (
        "usage",
        Decimal("0.0125"),
        Decimal(1234),
        Decimal("15.43"),
    )
    assert calls.quantity * calls.unit_amount == Decimal("15.4250")
    assert (tax.kind, tax.line_id, tax.description, tax.amount) == (
        "tax",
        "tax:txr_vat",
        "VAT 20%",
        Decimal("12.89"),
    )
    assert (s.totals.subtotal, s.totals.tax, s.totals.total) == (
        Decimal("64.43"),
        Decimal("12.89"),
        Decimal("77.32"),
    )
    assert sum(li.amount for li in s.lines if li.kind != "tax") == s.totals.subtotal
    assert all(isinstance(li.amount, Decimal) for li in s.lines)
    assert (s.amount_paid, s.receipt_number, s.attempt_count) == (Decimal("77.32"), "R-1", 1)
    assert s.paid_at == datetime(2026, 2, 1, 1, 0, tzinfo=UTC)


def test_periods_and_dates_are_days_in_the_entity_time_zone() -> None:
    s = snapshot(invoice())
    assert s.period == Period(date(2026, 1, 1), date(2026, 2, 1))
    assert s.issue_date == date(2026, 2, 1)
    assert s.lines[1].period == Period(date(2026, 1, 1), date(2026, 2, 1))
    # In New York the same instants fall on the evening before.
    ny = snapshot(invoice(), ZoneInfo("America/New_York"))
    assert ny.issue_date == date(2026, 1, 31)
    assert ny.period == Period(date(2025, 12, 31), date(2026, 2, 1))
    # A one-off invoice's instant period is its day.
    assert period_of(JAN_1 + 5, JAN_1 + 5, UTC_ZONE) == Period(date(2026, 1, 1), date(2026, 1, 2))


def test_zero_and_three_decimal_currencies() -> None:
    yen = invoice(
        currency="jpy",
        subtotal=1500,
        total_excluding_tax=1500,
        total=1500,
        total_taxes=[],
        amount_paid=1500,
        lines={
            "object": "list",
            "has_more": False,
            "url": "/x",
            "data": [line("il_1", 1500, price="price_x", unit="0.5", quantity=3000)],
        },
    )
    s = snapshot(yen)
    assert (s.lines[0].amount, s.lines[0].unit_amount, s.totals.total) == (
        Decimal(1500),
        Decimal("0.5"),
        Decimal(1500),
    )
    assert unit_price("1234.5", "kwd") == Decimal("1.2345")


def test_line_kinds() -> None:
    data = [
        line("il_meta", 100, price="price_fee", unit="100", metadata={"billtrail_kind": "usage"}),
        line("il_credit", -500),
        line("il_custom", 700),
        line("il_prorated", 300, price="price_fee", unit="300", proration=True),
        line("il_oneoff", 200, price="price_oneoff", unit="200"),
    ]
    inv = invoice(
        lines={"object": "list", "has_more": False, "url": "/x", "data": data},
        subtotal=800,
        total_excluding_tax=800,
        total=800,
        total_taxes=[],
    )
    kinds = [li.kind for li in snapshot(inv).lines]
    assert kinds == ["usage", "adjustment", "adjustment", "adjustment", "fee"]


def test_discounts_become_one_adjustment_line_and_inclusive_tax_no_line() -> None:
    inv = invoice(
        subtotal=6443,
        total_excluding_tax=5443,  # 10.00 off
        total=6443,
        total_taxes=[
            {
                "amount": 1000,
                "tax_behavior": "exclusive",
                "tax_rate_details": {"tax_rate": "txr_vat"},
            },
            {
                "amount": 250,
                "tax_behavior": "inclusive",
                "tax_rate_details": {"tax_rate": "txr_incl"},
            },
        ],
    )
    s = snapshot(inv)
    discount = next(li for li in s.lines if li.description == "Discounts")
    assert (discount.kind, discount.amount) == ("adjustment", Decimal("-10.00"))
    assert [li.line_id for li in s.lines if li.kind == "tax"] == ["tax:txr_vat"]
    assert s.totals.subtotal + s.totals.tax == s.totals.total
    assert sum(li.amount for li in s.lines if li.kind != "tax") == s.totals.subtotal


def test_statuses_credit_notes_and_revisions() -> None:
    draft = snapshot(
        invoice(
            status="draft",
            number=None,
            status_transitions=dict.fromkeys(
                ("finalized_at", "paid_at", "voided_at", "marked_uncollectible_at")
            ),
        )
    )
    assert (draft.status, draft.number, draft.issue_date, draft.paid_at) == (
        "draft",
        None,
        None,
        None,
    )
    note = stripe.CreditNote.construct_from(
        {
            "id": "cn_1",
            "object": "credit_note",
            "number": "ACME-0001-CN-01",
            "total": 1250,
            "currency": "usd",
            "reason": "order_change",
            "memo": None,
            "status": "void",
            "metadata": {"billtrail_evidence": "calls-2026-01.csv, ticket-42"},
        },
        None,
    )
    cn = credit_note_snapshot(note)
    assert (cn.amount, cn.reason, cn.memo, cn.voided, cn.evidence) == (
        Decimal("12.50"),
        "order_change",
        "",
        True,
        ("calls-2026-01.csv", "ticket-42"),
    )
    revised = snapshot(
        invoice(from_invoice={"action": "revision", "invoice": "in_0"}), credit_notes=[note]
    )
    assert revised.replaces == "in_0"
    assert revised.credit_notes == [cn]
    due_early = snapshot(invoice(due_date=JAN_1))  # before it was issued: due at once
    assert due_early.due_date == due_early.issue_date


# Against the sandbox ----------------------------------------------------------------


def test_the_reader_maps_a_renewal_with_usage_fee_and_tax(
    world: BillingWorld, ledger: Ledger, client: stripe.StripeClient
) -> None:
    acme = world.customer("acme")
    world.subscribe(acme)
    world.advance(2 * DAY)
    world.report_calls(acme, 1234, "acme-2026-01-02", world.start + DAY)
    world.advance(29 * DAY + 7200)
    renewal = client.v1.invoices.list({"customer": acme.customer.id, "limit": 1}).data[0]
    s = InvoiceReader(client, ledger).read(renewal.id)
    assert not isinstance(s, NotForTheLedger)
    assert s.entity_id == "acme"
    assert [(li.kind, li.amount) for li in s.lines] == [
        ("fee", Decimal("49.00")),
        ("usage", Decimal("15.43")),
        ("tax", Decimal("12.89")),
    ]
    assert s.lines[1].unit_amount == Decimal("0.0125")
    assert s.status == "paid"
    assert ledger.observe_invoice(s, Source("sync_run", "mapping-test")) is True
    assert ledger.invoice(renewal.id).total == Decimal("77.32")


def test_the_reader_pages_lines_reads_credit_notes_and_resolves_by_ledger_link(
    world: BillingWorld, ledger: Ledger, client: stripe.StripeClient
) -> None:
    bolt = world.customer("bolt", link="ledger", timezone="Europe/Oslo")
    draft = world.manual_invoice(bolt, [(f"item {n}", 100 + n) for n in range(12)])
    assert draft.lines.has_more is True
    client.v1.invoices.finalize_invoice(draft.id)
    client.v1.credit_notes.create({"invoice": draft.id, "amount": 300, "reason": "duplicate"})
    s = InvoiceReader(client, ledger).read(draft.id)
    assert not isinstance(s, NotForTheLedger)
    assert s.entity_id == "bolt"
    assert len([li for li in s.lines if li.kind != "tax"]) == 12
    assert sum(li.amount for li in s.lines if li.kind != "tax") == s.totals.subtotal
    assert [(n.amount, n.reason, n.voided) for n in s.credit_notes] == [
        (Decimal("3.00"), "duplicate", False)
    ]
    assert s.status == "open"
    assert s.due_date is not None
    assert s.issue_date is not None
    assert (s.due_date - s.issue_date).days == 14
    assert isinstance(s.lines[0], Line)


def test_gone_and_foreign_invoices_are_not_for_the_ledger_and_unknown_entities_fail(
    world: BillingWorld,
    ledger: Ledger,
    client: stripe.StripeClient,
    stripe_sandbox: RunningSandbox,
) -> None:
    reader = InvoiceReader(client, ledger)
    gone = reader.read("in_doesnotexist")
    assert isinstance(gone, NotForTheLedger)
    assert "in_doesnotexist" in gone.reason
    stranger = client.v1.customers.create({"email": "someone@else.example"})
    foreign = client.v1.invoices.create({"customer": stranger.id})
    result = reader.read(foreign.id)
    assert isinstance(result, NotForTheLedger)
    assert stranger.id in result.reason
    ghost = client.v1.customers.create({"metadata": {"billtrail_entity_id": "ghost"}})
    haunted = client.v1.invoices.create({"customer": ghost.id})
    with pytest.raises(UnresolvedEntity, match="ghost"):
        reader.read(haunted.id)
