"""Receipts: an invoice's PDF rendered from the ledger's facts (amounts, payment,
credit notes, balance), the same bytes every time, for admins (any invoice) and
customers (their own)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal

from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.app import Ledger
from ledger.invoices.domain import CreditNote
from ledger.values import Period
from web.formatting import money
from web.receipts import Receipt, ReceiptLine, render_pdf

from .conftest import World

_SHOWN = re.compile(rb"\(((?:\\.|[^\\)])*)\) Tj")


def pdf_text(data: bytes) -> list[str]:
    """The text strings the PDF draws, in order (fpdf2 writes them uncompressed
    here, one `(...) Tj` each)."""
    assert data.startswith(b"%PDF-")
    return [
        re.sub(rb"\\(.)", rb"\1", m.group(1)).decode("windows-1252") for m in _SHOWN.finditer(data)
    ]


def after(texts: list[str], label: str) -> str:
    """The text drawn right after `label` (a value beside its label)."""
    return texts[texts.index(label) + 1]


def test_a_paid_invoices_receipt_shows_its_amounts_payment_and_credit(
    admin: FlaskClient, world: World
) -> None:
    response = admin.get("/admin/invoices/ACME-0001/receipt.pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert 'filename="receipt-ACME-0001.pdf"' in response.headers["Content-Disposition"]
    texts = pdf_text(response.data)
    # 25 calls at 1.2 cents + the 50.00 fee; 8% tax; paid in full, 1.00 credited.
    assert "Receipt ACME-0001" in texts
    assert after(texts, "Billed to") == "Acme Corp (acme)"
    assert after(texts, "Period") == "2026-01-01 to 2026-01-31"
    assert after(texts, "Receipt number") == "RCPT-acme-1"
    assert after(texts, "Calls handled") == "25"
    assert after(texts, "Subtotal") == "$50.30"
    assert after(texts, "Sales tax 8%") == "$4.02"
    assert after(texts, "Total") == "$54.32"
    assert after(texts, "Paid on 2026-02-05") == "$54.32"
    assert after(texts, "Credit note CN-acme-1: goodwill") == "-$1.00"
    assert after(texts, "Credit balance") == "$1.00"


def test_an_open_invoices_receipt_shows_the_balance_due(admin: FlaskClient, world: World) -> None:
    texts = pdf_text(admin.get("/admin/invoices/GLOBEX-0003/receipt.pdf").data)
    assert "Invoice GLOBEX-0003" in texts
    assert after(texts, "Status") == "Open"
    # 65 calls at 2 cents + 50.00, 8% tax, nothing paid.
    assert after(texts, "Total") == "$55.40"
    assert after(texts, "Balance due") == "$55.40"


def test_the_same_invoice_gives_the_same_bytes(
    admin: FlaskClient, world: World, ledger: Ledger
) -> None:
    first = admin.get("/admin/invoices/ACME-0001/receipt.pdf").data
    second = admin.get("/admin/invoices/ACME-0001/receipt.pdf").data
    assert first == second
    assert first == render_pdf(Receipt.of(ledger, world.stripe_ids["ACME-0001"]))
    assert b"/CreationDate (D:20260205000000Z)" in first
    assert first != admin.get("/admin/invoices/ACME-0002/receipt.pdf").data


def test_sub_cent_prices_and_foreign_characters_survive(
    admin: FlaskClient, world: World, ledger: Ledger
) -> None:
    receipt = Receipt.of(ledger, world.stripe_ids["ACME-0001"])
    texts = pdf_text(render_pdf(receipt))
    assert after(texts, "25") == "$0.012"
    assert receipt.balance == Decimal("-1.00")
    renamed = Receipt(**{**receipt.__dict__, "entity_name": "Société Générale 東京"})
    assert after(pdf_text(render_pdf(renamed)), "Billed to") == "Société Générale ?? (acme)"


def test_an_admin_can_fetch_any_invoices_receipt_by_number_or_stripe_id(
    admin: FlaskClient, world: World
) -> None:
    for number in world.invoices:
        assert admin.get(f"/admin/invoices/{number}/receipt.pdf").status_code == 200
    by_id = admin.get(f"/admin/invoices/{world.stripe_ids['GLOBEX-0002']}/receipt.pdf")
    assert "Invoice GLOBEX-0002" in pdf_text(by_id.data)


def test_unknown_or_malformed_invoices_have_no_receipt(admin: FlaskClient, world: World) -> None:
    for ref in ("ACME-9999", "in_nope", "..", "a b", "x" * 300, "%00", "ACME-0001'--"):
        response = admin.get(f"/admin/invoices/{ref}/receipt.pdf")
        assert response.status_code == 404, ref
        assert response.mimetype == "text/html"


def test_only_admins_reach_the_admin_receipt(
    client: FlaskClient, acme: FlaskClient, world: World
) -> None:
    anonymous = client.get("/admin/invoices/ACME-0001/receipt.pdf")
    assert anonymous.status_code == 302
    assert anonymous.headers["Location"].startswith("/login")
    assert acme.get("/admin/invoices/ACME-0001/receipt.pdf").status_code == 404


amounts = st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False)
# Any printable text: names and descriptions come from Stripe and people.
printable = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=60)


@settings(max_examples=40, deadline=None)
@given(
    lines=st.lists(st.tuples(printable.map("Item {}".format), amounts), min_size=1, max_size=8),
    tax=amounts,
    paid=st.booleans(),
    credits=st.lists(amounts.filter(lambda a: a > 0), max_size=3),
    name=printable,
    currency=st.sampled_from(["usd", "eur", "gbp", "chf"]),
)
def test_any_receipt_shows_its_total_and_a_balance_that_adds_up(
    lines: list[tuple[str, Decimal]],
    tax: Decimal,
    paid: bool,
    credits: list[Decimal],
    name: str,
    currency: str,
) -> None:
    subtotal = sum((amount for _, amount in lines), Decimal(0))
    total = subtotal + tax
    receipt = Receipt(
        number="X-0001",
        stripe_id="in_x",
        entity_id="x",
        entity_name=name,
        currency=currency,
        period=Period(date(2026, 1, 1), date(2026, 2, 1)),
        status="paid" if paid else "open",
        issue_date=date(2026, 2, 1),
        due_date=None,
        lines=tuple(ReceiptLine(d, "fee", Decimal(1), a, a) for d, a in lines),
        taxes=(ReceiptLine("Tax", "tax", Decimal(1), tax, tax),),
        subtotal=subtotal,
        tax=tax,
        total=total,
        amount_paid=total if paid else Decimal(0),
        paid_at=datetime(2026, 2, 3, tzinfo=UTC) if paid else None,
        receipt_number=None,
        credit_notes=tuple(
            CreditNote(
                f"cn_{i}", f"CN-{i}", c, "order_change", "", (), datetime(2026, 2, 4, tzinfo=UTC)
            )
            for i, c in enumerate(credits)
        ),
        credited=sum(credits, Decimal(0)),
    )
    data = render_pdf(receipt)
    assert data == render_pdf(receipt)
    texts = pdf_text(data)
    assert after(texts, "Total") == money(total, currency)
    owed = total - sum(credits, Decimal(0)) - (total if paid else 0)
    if owed < 0:
        assert after(texts, "Credit balance") == money(-owed, currency)
    else:
        assert after(texts, "Balance due") == money(owed, currency)
