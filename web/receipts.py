"""Receipts: an invoice as a PDF, from the ledger's facts alone (never from Stripe
at request time), so the document says what billtrail recorded.

The same invoice gives the same bytes: the PDF's creation date is a date of the
invoice (when it was paid, else issued, else its period's end), not the moment it
is rendered, and fpdf2 derives the file id from the content. Text uses the PDF core
fonts (nothing to install or embed); characters outside their Windows-1252 range
are shown as "?" rather than failing the download."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal

from flask import Response, abort
from fpdf import FPDF
from werkzeug.utils import secure_filename

from ledger.app import Ledger
from ledger.invoices.domain import CreditNote, Invoice, Status
from ledger.values import Line, LineKind, Period
from projections.invoices import InvoiceRow, find_invoice
from web.formatting import money, status_label
from web.services import services

ENCODING = "windows-1252"


@dataclass(frozen=True)
class ReceiptLine:
    description: str
    kind: str
    quantity: Decimal
    unit_amount: Decimal | None
    amount: Decimal


@dataclass(frozen=True)
class Receipt:
    """What a receipt shows, as the ledger has it."""

    number: str
    stripe_id: str
    entity_id: str
    entity_name: str
    currency: str
    period: Period
    status: str
    issue_date: date | None
    due_date: date | None
    lines: tuple[ReceiptLine, ...]
    taxes: tuple[ReceiptLine, ...]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    amount_paid: Decimal
    paid_at: datetime | None
    receipt_number: str | None
    credit_notes: tuple[CreditNote, ...]
    credited: Decimal

    @property
    def balance(self) -> Decimal:
        """What is still owed (negative: owed to the customer). A void invoice owes
        nothing."""
        if self.status == Status.VOID:
            return Decimal(0)
        return self.total - self.credited - self.amount_paid

    @property
    def created(self) -> datetime:
        """The document's date: fixed by the invoice, so rendering is repeatable."""
        if self.paid_at is not None:
            return self.paid_at.astimezone(UTC)
        day = self.issue_date or self.period.end
        return datetime.combine(day, time(0), UTC)

    @classmethod
    def of(cls, ledger: Ledger, stripe_id: str) -> Receipt:
        invoice: Invoice = ledger.invoice(stripe_id)
        entity = ledger.entity(invoice.entity_id)

        def line(li: Line) -> ReceiptLine:
            return ReceiptLine(li.description, li.kind, li.quantity, li.unit_amount, li.amount)

        return cls(
            number=invoice.number or invoice.stripe_id,
            stripe_id=invoice.stripe_id,
            entity_id=invoice.entity_id,
            entity_name=entity.name,
            currency=invoice.currency,
            period=invoice.period,
            status=invoice.status.value,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            lines=tuple(line(li) for li in invoice.lines if li.kind != LineKind.TAX),
            taxes=tuple(line(li) for li in invoice.lines if li.kind == LineKind.TAX),
            subtotal=invoice.subtotal,
            tax=invoice.tax,
            total=invoice.total,
            amount_paid=invoice.amount_paid,
            paid_at=invoice.paid_at,
            receipt_number=invoice.receipt_number,
            credit_notes=tuple(
                sorted(invoice.credit_notes.values(), key=lambda n: (n.issued_at, n.number))
            ),
            credited=invoice.credited,
        )


def _text(value: object) -> str:
    return str(value).encode(ENCODING, errors="replace").decode(ENCODING)


def _quantity(value: Decimal) -> str:
    normal = value.normalize()
    return f"{normal:,f}" if normal == normal.to_integral_value() else f"{value:,}"


class _Document(FPDF):
    def __init__(self, receipt: Receipt) -> None:
        super().__init__(format="A4", unit="mm")
        self.receipt = receipt
        self.core_fonts_encoding = ENCODING
        self.set_compression(False)
        self.set_creation_date(receipt.created)
        self.set_producer("billtrail")
        self.set_title(_text(f"Receipt {receipt.number}"))
        self.set_author("billtrail")
        self.set_auto_page_break(True, margin=18)
        self.set_margins(18, 18, 18)

    def money(self, amount: Decimal) -> str:
        return _text(money(amount, self.receipt.currency))

    def row(self, label: str, value: str, *, bold: bool = False) -> None:
        self.set_font("Helvetica", "B" if bold else "", 10)
        self.cell(120, 6, _text(label))
        self.cell(0, 6, value, align="R", new_x="LMARGIN", new_y="NEXT")

    def fact(self, label: str, value: object) -> None:
        self.set_font("Helvetica", "", 10)
        self.set_text_color(90, 90, 90)
        self.cell(42, 6, _text(label))
        self.set_text_color(0, 0, 0)
        self.cell(0, 6, _text(value), new_x="LMARGIN", new_y="NEXT")

    def rule(self) -> None:
        self.line(self.l_margin, self.get_y() + 1, self.w - self.r_margin, self.get_y() + 1)
        self.ln(3)


def render_pdf(receipt: Receipt) -> bytes:
    pdf = _Document(receipt)
    pdf.add_page()
    r = receipt
    pdf.set_font("Helvetica", "B", 18)
    title = "Receipt" if r.status == Status.PAID else "Invoice"
    pdf.cell(0, 10, _text(f"{title} {r.number}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.fact("Billed to", f"{r.entity_name} ({r.entity_id})")
    pdf.fact("Invoice number", r.number)
    pdf.fact("Period", r.period)
    pdf.fact("Issued", r.issue_date or "not issued")
    if r.due_date is not None:
        pdf.fact("Due", r.due_date)
    pdf.fact("Status", status_label(r.status))
    if r.receipt_number:
        pdf.fact("Receipt number", r.receipt_number)
    pdf.ln(4)

    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(92, 7, "Description", border="B")
    pdf.cell(22, 7, "Quantity", border="B", align="R")
    pdf.cell(30, 7, "Unit price", border="B", align="R")
    pdf.cell(0, 7, "Amount", border="B", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    for line in r.lines:
        unit = "" if line.unit_amount is None else pdf.money(line.unit_amount)
        pdf.cell(92, 6, _text(line.description)[:60])
        pdf.cell(22, 6, _quantity(line.quantity), align="R")
        pdf.cell(30, 6, unit, align="R")
        pdf.cell(0, 6, pdf.money(line.amount), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.rule()
    pdf.row("Subtotal", pdf.money(r.subtotal))
    for tax in r.taxes:
        pdf.row(tax.description, pdf.money(tax.amount))
    if not r.taxes:
        pdf.row("Tax", pdf.money(r.tax))
    pdf.row("Total", pdf.money(r.total), bold=True)
    pdf.ln(2)
    if r.amount_paid or r.paid_at:
        paid_on = f" on {r.paid_at.astimezone(UTC):%Y-%m-%d}" if r.paid_at else ""
        pdf.row(f"Paid{paid_on}", pdf.money(r.amount_paid))
    for note in r.credit_notes:
        voided = " (voided)" if note.voided else ""
        memo = f": {note.memo}" if note.memo else ""
        pdf.row(f"Credit note {note.number}{voided}{memo}"[:70], pdf.money(-note.amount))
    balance = r.balance
    if balance < 0:
        pdf.row("Credit balance", pdf.money(-balance), bold=True)
    else:
        pdf.row("Balance due", pdf.money(balance), bold=True)
    pdf.ln(6)
    pdf.set_font("Helvetica", "", 8)
    pdf.set_text_color(90, 90, 90)
    pdf.multi_cell(
        0,
        4,
        _text(f"Stripe invoice {r.stripe_id}. Amounts in {r.currency.upper()}."),
    )
    return bytes(pdf.output())


# For the views -----------------------------------------------------------------------

# What an invoice reference can look like (a number or a Stripe id); anything else
# cannot name an invoice, so it is simply not found.
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")


def visible_invoice(ref: str, entity_id: str | None = None) -> InvoiceRow:
    """The invoice `ref` (number or Stripe id) as the read model has it, or 404.
    With `entity_id` (a customer), only that entity's issued invoices exist:
    another entity's, a draft or a malformed reference all answer the same 404,
    so a customer learns nothing about what else there is."""
    row = find_invoice(services().store, ref) if _REF.fullmatch(ref) else None
    if row is None or (entity_id is not None and (row.entity_id != entity_id or not row.number)):
        abort(404, description=f"No invoice {ref}.")
    return row


def receipt_download(row: InvoiceRow) -> Response:
    pdf = render_pdf(Receipt.of(services().ledger, row.stripe_id))
    name = secure_filename(f"receipt-{row.number or row.stripe_id}.pdf")
    response = Response(pdf, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response
