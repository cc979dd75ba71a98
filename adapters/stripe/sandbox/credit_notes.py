"""Credit notes against open or paid invoices.

On an open invoice the credit note is `pre_payment` and lowers the amount due
(an invoice credited in full is marked paid). On a paid invoice it is
`post_payment` and must be allocated, as Stripe requires, between
`credit_amount` (the customer's balance), `refund_amount` and
`out_of_band_amount`; with none given, the whole amount goes to the balance.
Voiding reverses the credit where it can be reversed."""

from __future__ import annotations

from decimal import Decimal

from adapters.stripe.sandbox import invoices as inv
from adapters.stripe.sandbox.catalog import active_tax_rates, decimal_text, tax_percentage
from adapters.stripe.sandbox.context import Ctx, public, renders
from adapters.stripe.sandbox.errors import JsonDict, invalid
from adapters.stripe.sandbox.forms import Params, apply_metadata
from adapters.stripe.sandbox.pagination import list_response, newest_first, range_filter
from adapters.stripe.sandbox.routing import Route, route

REASONS = ("duplicate", "fraudulent", "order_change", "product_unsatisfactory")
ALLOCATIONS = ("credit_amount", "refund_amount", "out_of_band_amount")


@renders("credit_note")
def render_credit_note(ctx: Ctx, note: JsonDict) -> JsonDict:
    served = public(note)
    served["lines"] = {
        "object": "list",
        "data": [_render_line(ctx, li) for li in note["_lines"]],
        "has_more": False,
        "url": f"/v1/credit_notes/{note['id']}/lines",
    }
    return served


def _render_line(ctx: Ctx, line: JsonDict) -> JsonDict:
    served = public(line)
    served["tax_rates"] = [ctx.render(ctx.store.get("tax_rate", r)) for r in line["_tax_rates"]]
    return served


# Lines ------------------------------------------------------------------------------


def _line(
    ctx: Ctx,
    *,
    kind: str,
    amount: int,
    quantity: int,
    description: str | None,
    rates: list[str],
    invoice_line: str | None = None,
    unit: Decimal | None = None,
) -> JsonDict:
    taxes = []
    for rate_id in rates:
        rate = ctx.store.get("tax_rate", rate_id)
        taxes.append(
            {
                "amount": inv.money(Decimal(amount) * tax_percentage(rate) / 100),
                "tax_behavior": "exclusive",
                "tax_rate_details": {"tax_rate": rate_id},
                "taxability_reason": "standard_rated",
                "taxable_amount": amount,
                "type": "tax_rate_details",
            }
        )
    return {
        "id": ctx.store.new_id("cnli"),
        "object": "credit_note_line_item",
        "amount": amount,
        "description": description,
        "discount_amount": 0,
        "discount_amounts": [],
        "invoice_line_item": invoice_line,
        "livemode": False,
        "metadata": {},
        "pretax_credit_amounts": [],
        "quantity": quantity,
        "tax_rates": [],
        "taxes": taxes,
        "type": kind,
        "unit_amount": int(unit) if unit is not None and unit == int(unit) else None,
        "unit_amount_decimal": decimal_text(unit) if unit is not None else None,
        "_tax_rates": rates,
    }


def _invoice_line_credit(ctx: Ctx, spec: Params, invoice: JsonDict) -> JsonDict:
    line_id = spec.text("invoice_line_item", required=True)
    source = next((li for li in invoice["_lines"] if li["id"] == line_id), None)
    if source is None:
        raise invalid(
            f"No such invoice line item: '{line_id}' on {invoice['id']}",
            param=spec.name("invoice_line_item"),
        )
    quantity = spec.integer("quantity", minimum=1)
    amount = spec.integer("amount", minimum=1)
    if amount is None:
        full_quantity = source["quantity"] or 1
        share = Decimal(quantity or full_quantity) / Decimal(full_quantity)
        amount = inv.money(Decimal(source["amount"]) * share)
    if amount > source["amount"]:
        raise invalid("The credit exceeds the invoice line's amount.", param=spec.name("amount"))
    rates = source["_tax_rates"] or invoice["_default_tax_rates"]
    return _line(
        ctx,
        kind="invoice_line_item",
        amount=amount,
        quantity=quantity or 1,
        description=source["description"],
        rates=rates,
        invoice_line=source["id"],
    )


def _custom_credit(ctx: Ctx, spec: Params) -> JsonDict:
    quantity = spec.integer("quantity", minimum=1) or 1
    unit = spec.decimal("unit_amount_decimal")
    whole = spec.integer("unit_amount", minimum=0)
    unit = Decimal(whole) if whole is not None else unit
    if unit is None:
        raise invalid(
            "Missing required param: unit_amount.",
            param=spec.name("unit_amount"),
            code="parameter_missing",
        )
    rates = active_tax_rates(ctx, spec.strings("tax_rates") or [], spec.name("tax_rates"))
    return _line(
        ctx,
        kind="custom_line_item",
        amount=inv.money(unit * quantity),
        quantity=quantity,
        description=spec.text("description", required=True),
        rates=rates,
        unit=unit,
    )


def _credit_lines(ctx: Ctx, p: Params, invoice: JsonDict) -> list[JsonDict]:
    specs = p.nested_list("lines")
    amount = p.integer("amount", minimum=1)
    if specs and amount is not None:
        raise invalid(
            "You may only specify one of these parameters: amount, lines.", param="amount"
        )
    if amount is not None:
        return [
            _line(
                ctx,
                kind="custom_line_item",
                amount=amount,
                quantity=1,
                description="Credit",
                rates=[],
                unit=Decimal(amount),
            )
        ]
    if not specs:
        raise invalid(
            "Missing required param: lines (or amount).", param="lines", code="parameter_missing"
        )
    lines = []
    for spec in specs:
        kind = spec.choice("type", ("invoice_line_item", "custom_line_item"), required=True)
        lines.append(
            _invoice_line_credit(ctx, spec, invoice)
            if kind == "invoice_line_item"
            else _custom_credit(ctx, spec)
        )
    return lines


# Creating and voiding ---------------------------------------------------------------


def _creditable(ctx: Ctx, invoice: JsonDict) -> int:
    credited = sum(
        int(n["total"])
        for n in ctx.store.scan("credit_note")
        if n["invoice"] == invoice["id"] and n["status"] != "void"
    )
    return int(invoice["total"]) - credited


def _allocation(p: Params) -> dict[str, int | None]:
    return {key: p.integer(key, minimum=0) for key in ALLOCATIONS}


def create_credit_note(ctx: Ctx, p: Params) -> JsonDict:
    invoice = ctx.store.get("invoice", str(p.text("invoice", required=True)), "invoice")
    if invoice["status"] not in ("open", "paid"):
        raise invalid(
            "You can only create credit notes for open or paid invoices; this one "
            f"is {invoice['status']}.",
            param="invoice",
            code="invoice_unexpected_state",
        )
    lines = _credit_lines(ctx, p, invoice)
    allocation = _allocation(p)
    fields = {
        "memo": p.text("memo") or None,
        "reason": p.choice("reason", REASONS),
        "metadata": apply_metadata({}, p.metadata()),
    }
    p.finish()
    subtotal = sum(int(li["amount"]) for li in lines)
    tax = sum(int(t["amount"]) for li in lines for t in li["taxes"])
    total = subtotal + tax
    if total > _creditable(ctx, invoice):
        raise invalid(
            f"The credit note total ({total}) exceeds the invoice's remaining "
            f"creditable amount ({_creditable(ctx, invoice)}).",
            param="lines",
        )
    note = _new_note(ctx, invoice, lines, subtotal, total, fields)
    before = ctx.render(invoice)
    if invoice["status"] == "open":
        _credit_open_invoice(ctx, invoice, note, allocation)
    else:
        _credit_paid_invoice(ctx, invoice, note, allocation)
    ctx.store.add("credit_note", note)
    ctx.emit("credit_note.created", note)
    ctx.emit_updated("invoice.updated", invoice, before)
    return ctx.render(note)


def _new_note(
    ctx: Ctx, invoice: JsonDict, lines: list[JsonDict], subtotal: int, total: int, fields: JsonDict
) -> JsonDict:
    now = ctx.now_of(invoice)
    count = sum(1 for n in ctx.store.scan("credit_note") if n["invoice"] == invoice["id"])
    note_id = ctx.store.new_id("cn")
    taxes: dict[str, list[int]] = {}
    for line in lines:
        for tax in line["taxes"]:
            entry = taxes.setdefault(tax["tax_rate_details"]["tax_rate"], [0, 0])
            entry[0] += tax["amount"]
            entry[1] += tax["taxable_amount"]
    return {
        "id": note_id,
        "object": "credit_note",
        "amount": total,
        "amount_shipping": 0,
        "created": now,
        "currency": invoice["currency"],
        "customer": invoice["customer"],
        "customer_account": None,
        "customer_balance_transaction": None,
        "discount_amount": 0,
        "discount_amounts": [],
        "effective_at": now,
        "invoice": invoice["id"],
        "livemode": False,
        "number": f"{invoice['number']}-CN-{count + 1:02d}",
        "out_of_band_amount": None,
        "pdf": f"{ctx.base_url}/_sandbox/credit_notes/{note_id}/pdf",
        "post_payment_amount": 0,
        "pre_payment_amount": 0,
        "pretax_credit_amounts": [],
        "refunds": [],
        "shipping_cost": None,
        "status": "issued",
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal,
        "total": total,
        "total_excluding_tax": subtotal,
        "total_taxes": [
            {
                "amount": a,
                "tax_behavior": "exclusive",
                "tax_rate_details": {"tax_rate": r},
                "taxability_reason": "standard_rated",
                "taxable_amount": t,
                "type": "tax_rate_details",
            }
            for r, (a, t) in taxes.items()
        ],
        "type": "pre_payment",
        "voided_at": None,
        "_lines": lines,
        "_allocation": {},
        **fields,
    }


def _credit_open_invoice(
    ctx: Ctx, invoice: JsonDict, note: JsonDict, allocation: dict[str, int | None]
) -> None:
    if any(allocation.values()):
        raise invalid(
            "credit_amount, refund_amount and out_of_band_amount apply to credit "
            "notes on paid invoices only.",
            param="credit_amount",
        )
    if note["total"] > invoice["amount_remaining"]:
        raise invalid(
            "The credit note total exceeds the invoice's amount remaining.", param="lines"
        )
    note["pre_payment_amount"] = note["total"]
    invoice["pre_payment_credit_notes_amount"] += note["total"]
    inv.refresh_amount_due(invoice)
    if invoice["amount_remaining"] == 0:
        inv.mark_paid(ctx, invoice, charged=False)


def _credit_paid_invoice(
    ctx: Ctx, invoice: JsonDict, note: JsonDict, allocation: dict[str, int | None]
) -> None:
    amounts = {k: v or 0 for k, v in allocation.items()}
    if not any(v is not None for v in allocation.values()):
        amounts["credit_amount"] = note["total"]
    if sum(amounts.values()) != note["total"]:
        raise invalid(
            f"The sum of credit_amount, refund_amount and out_of_band_amount "
            f"({sum(amounts.values())}) must equal the credit note total "
            f"({note['total']}).",
            param="credit_amount",
        )
    note.update(
        type="post_payment",
        post_payment_amount=note["total"],
        _allocation=amounts,
        out_of_band_amount=amounts["out_of_band_amount"] or None,
    )
    if amounts["refund_amount"]:
        note["refunds"] = [
            {
                "amount_refunded": amounts["refund_amount"],
                "refund": ctx.store.new_id("re"),
                "payment_record_refund": None,
                "type": "refund",
            }
        ]
    invoice["post_payment_credit_notes_amount"] += note["total"]
    customer = ctx.store.get("customer", invoice["customer"])
    customer["balance"] -= amounts["credit_amount"]


def void_credit_note(ctx: Ctx, p: Params, note_id: str) -> JsonDict:
    p.finish()
    note = ctx.store.get("credit_note", note_id)
    if note["status"] != "issued":
        raise invalid("This credit note is already voided.")
    invoice = ctx.store.get("invoice", note["invoice"])
    before = ctx.render(invoice)
    if note["type"] == "pre_payment":
        if invoice["status"] != "open":
            raise invalid(
                "A pre-payment credit note can only be voided while its invoice is open.",
                code="invoice_unexpected_state",
            )
        invoice["pre_payment_credit_notes_amount"] -= note["total"]
        inv.refresh_amount_due(invoice)
    else:
        if note["_allocation"].get("refund_amount"):
            raise invalid("A credit note that refunded a payment cannot be voided.")
        invoice["post_payment_credit_notes_amount"] -= note["total"]
        customer = ctx.store.get("customer", invoice["customer"])
        customer["balance"] += note["_allocation"].get("credit_amount", 0)
    note.update(status="void", voided_at=ctx.now_of(invoice))
    ctx.emit("credit_note.voided", note)
    ctx.emit_updated("invoice.updated", invoice, before)
    return ctx.render(note)


def update_credit_note(ctx: Ctx, p: Params, note_id: str) -> JsonDict:
    note = ctx.store.get("credit_note", note_id)
    given, memo = p.optional_text("memo")
    metadata = p.metadata()
    p.finish()
    before = ctx.render(note)
    if given:
        note["memo"] = memo
    note["metadata"] = apply_metadata(note["metadata"], metadata)
    ctx.emit_updated("credit_note.updated", note, before)
    return ctx.render(note)


def retrieve_credit_note(ctx: Ctx, p: Params, note_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get("credit_note", note_id))


def list_credit_notes(ctx: Ctx, p: Params) -> JsonDict:
    invoice = p.text("invoice")
    customer = p.text("customer")
    created = range_filter(p, "created")
    found = [
        n
        for n in ctx.store.all("credit_note")
        if invoice in (None, n["invoice"])
        and customer in (None, n["customer"])
        and created(n["created"])
    ]
    result = list_response(ctx, p, newest_first(found), "/v1/credit_notes")
    p.finish()
    return result


def list_note_lines(ctx: Ctx, p: Params, note_id: str) -> JsonDict:
    note = ctx.store.get("credit_note", note_id)
    result = list_response(
        ctx,
        p,
        note["_lines"],
        f"/v1/credit_notes/{note_id}/lines",
        render=lambda li: _render_line(ctx, li),
    )
    p.finish()
    return result


ROUTES: list[Route] = [
    route("POST", "/v1/credit_notes", create_credit_note),
    route("GET", "/v1/credit_notes", list_credit_notes),
    route("GET", "/v1/credit_notes/{id}", retrieve_credit_note),
    route("POST", "/v1/credit_notes/{id}", update_credit_note),
    route("POST", "/v1/credit_notes/{id}/void", void_credit_note),
    route("GET", "/v1/credit_notes/{id}/lines", list_note_lines),
]
