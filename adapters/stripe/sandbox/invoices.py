"""Invoices, their lines, and invoice items.

The state machine is Stripe's: draft -> open (finalize) -> paid | void |
uncollectible, uncollectible -> paid | void; `paid` and `void` are terminal.
Amounts are integer minor units; a line's amount is quantity x
`unit_amount_decimal` rounded half up to the minor unit, line by line (Stripe's
"Decimal amounts" guide); exclusive tax is computed per line and rate the same
way. At finalization the customer's balance is applied, and an amount due
below the currency's minimum charge is moved to the customer's balance and the
invoice marked paid, as the Invoice docstring of the SDK describes."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from adapters.stripe.sandbox import customers as cust
from adapters.stripe.sandbox.catalog import (
    active_tax_rates,
    decimal_text,
    inline_price,
    tax_percentage,
)
from adapters.stripe.sandbox.clock import DAY, HOUR
from adapters.stripe.sandbox.context import Ctx, public, renders
from adapters.stripe.sandbox.errors import (
    JsonDict,
    card_declined,
    invalid,
    unexpected_state,
)
from adapters.stripe.sandbox.forms import Params, apply_metadata
from adapters.stripe.sandbox.meters import aggregate
from adapters.stripe.sandbox.pagination import list_response, newest_first, range_filter
from adapters.stripe.sandbox.routing import Route, route

FINALIZE_GRACE = HOUR
# Days after a failed automatic attempt until the next one; the last failure
# ends dunning, leaving the invoice open and the subscription past due (one of
# the end-of-dunning settings Stripe offers).
RETRY_SCHEDULE_DAYS = (3, 5, 7)
MINIMUM_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "chf": 50, "cad": 50, "aud": 50, "jpy": 50}
DEFAULT_MINIMUM_CHARGE = 50
COLLECTION_METHODS = ("charge_automatically", "send_invoice")
EMBEDDED_LINES = 10


def money(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# Rendering ---------------------------------------------------------------------------


@renders("invoice")
def render_invoice(ctx: Ctx, invoice: JsonDict) -> JsonDict:
    if invoice.get("_deleted"):
        return {"id": invoice["id"], "object": "invoice", "deleted": True}
    served = public(invoice)
    lines = invoice["_lines"]
    served["lines"] = {
        "object": "list",
        "data": [render_line(ctx, line) for line in lines[:EMBEDDED_LINES]],
        "has_more": len(lines) > EMBEDDED_LINES,
        "url": f"/v1/invoices/{invoice['id']}/lines",
    }
    served["default_tax_rates"] = _rates(ctx, invoice["_default_tax_rates"])
    return served


def render_line(ctx: Ctx, line: JsonDict) -> JsonDict:
    served = public(line)
    details = line["parent"].get("subscription_item_details")
    if details is not None:
        # The SDK's InvoiceLineItem.metadata: a subscription line's metadata "reflects
        # the current metadata from the subscription" (lines cannot be edited here).
        subscription = ctx.store.objects["subscription"].get(details["subscription"])
        if subscription is not None:
            served["metadata"] = dict(subscription["metadata"])
    return served


@renders("invoiceitem")
def render_invoice_item(ctx: Ctx, item: JsonDict) -> JsonDict:
    if item.get("_deleted"):
        return {"id": item["id"], "object": "invoiceitem", "deleted": True}
    served = public(item)
    served["tax_rates"] = _rates(ctx, item["_tax_rates"])
    return served


def _rates(ctx: Ctx, ids: list[str]) -> list[JsonDict]:
    return [ctx.render(ctx.store.get("tax_rate", rate_id)) for rate_id in ids]


# Creating invoices and lines --------------------------------------------------------


def new_invoice(
    ctx: Ctx,
    customer: JsonDict,
    *,
    billing_reason: str,
    collection_method: str = "charge_automatically",
    auto_advance: bool = False,
    currency: str = "usd",
    subscription: JsonDict | None = None,
    period: tuple[int, int] | None = None,
    extra: JsonDict | None = None,
) -> JsonDict:
    now = ctx.now_of(customer)
    invoice: JsonDict = {
        "id": ctx.store.new_id("in"),
        "object": "invoice",
        **_invoice_defaults(),
        "auto_advance": auto_advance,
        "automatically_finalizes_at": now + FINALIZE_GRACE if auto_advance else None,
        "billing_reason": billing_reason,
        "collection_method": collection_method,
        "created": now,
        "currency": currency,
        "customer": customer["id"],
        "effective_at": None,
        "parent": _parent(subscription),
        "period_end": period[1] if period else now,
        "period_start": period[0] if period else now,
        "test_clock": customer["test_clock"],
        "webhooks_delivered_at": now,
        "_lines": [],
        "_default_tax_rates": [],
        "_balance_applied": 0,
        "_subscription": subscription["id"] if subscription else None,
        **(extra or {}),
    }
    _copy_customer(invoice, customer)
    if customer["currency"] is None:
        customer["currency"] = currency
    invoice["next_payment_attempt"] = _first_attempt(invoice)
    return ctx.store.add("invoice", invoice)


def _invoice_defaults() -> JsonDict:
    return {
        "account_country": "US",
        "account_name": "billtrail sandbox",
        "account_tax_ids": None,
        "amount_due": 0,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_paid_off_stripe": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "automatic_tax": {
            "enabled": False,
            "liability": None,
            "status": None,
            "disabled_reason": None,
            "provider": None,
        },
        "custom_fields": None,
        "customer_account": None,
        "customer_shipping": None,
        "customer_tax_ids": [],
        "days_until_due": None,
        "default_payment_method": None,
        "default_source": None,
        "description": None,
        "discounts": [],
        "due_date": None,
        "ending_balance": None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "livemode": False,
        "metadata": {},
        "number": None,
        "on_behalf_of": None,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "draft",
        "status_details": None,
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        # Removed from the API in basil; the subscription is under `parent`.
        "subscription": None,
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "threshold_reason": None,
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
    }


def _parent(subscription: JsonDict | None) -> JsonDict | None:
    if subscription is None:
        return None
    return {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {
            "metadata": dict(subscription["metadata"]),
            "subscription": subscription["id"],
        },
    }


def _copy_customer(invoice: JsonDict, customer: JsonDict) -> None:
    invoice.update(
        customer_address=customer["address"],
        customer_email=customer["email"],
        customer_name=customer["name"],
        customer_phone=customer["phone"],
        customer_tax_exempt=customer["tax_exempt"],
    )


def _first_attempt(invoice: JsonDict) -> int | None:
    automatic = invoice["collection_method"] == "charge_automatically" and invoice["auto_advance"]
    return invoice["automatically_finalizes_at"] if automatic else None


def add_line(
    ctx: Ctx,
    invoice: JsonDict,
    *,
    amount: int,
    description: str | None,
    period: tuple[int, int],
    quantity: Decimal,
    price: JsonDict | None,
    parent: JsonDict,
    tax_rates: list[str],
    metered: JsonDict | None = None,
    metadata: JsonDict | None = None,
) -> JsonDict:
    subscription = _parent_subscription(parent)
    line: JsonDict = {
        "id": ctx.store.new_id("il"),
        "object": "line_item",
        "amount": amount,
        "currency": invoice["currency"],
        "description": description,
        "discount_amounts": [],
        "discountable": True,
        "discounts": [],
        "invoice": invoice["id"],
        "livemode": False,
        "metadata": dict(metadata or {}),
        "parent": parent,
        "period": {"start": period[0], "end": period[1]},
        "pretax_credit_amounts": [],
        "pricing": _pricing(price),
        "subscription": subscription,
        "subtotal": amount,
        "taxes": [],
        "_tax_rates": list(tax_rates),
        "_metered": metered,
    }
    _set_quantity(line, quantity)
    invoice["_lines"].append(line)
    refresh_totals(ctx, invoice)
    return line


def _parent_subscription(parent: JsonDict) -> str | None:
    details = parent.get(parent["type"]) or {}
    value = details.get("subscription")
    return value if isinstance(value, str) else None


def _pricing(price: JsonDict | None) -> JsonDict | None:
    if price is None:
        return None
    return {
        "type": "price_details",
        "unit_amount_decimal": price["unit_amount_decimal"],
        "price_details": {"price": price["id"], "product": price["product"]},
    }


def _set_quantity(line: JsonDict, quantity: Decimal) -> None:
    integral = quantity == quantity.to_integral_value()
    line["quantity"] = int(quantity) if integral else None
    line["quantity_decimal"] = decimal_text(quantity)


def subscription_item_parent(subscription_id: str, item_id: str) -> JsonDict:
    return {
        "type": "subscription_item_details",
        "invoice_item_details": None,
        "subscription_item_details": {
            "invoice_item": None,
            "proration": False,
            "proration_details": {"credited_items": None},
            "subscription": subscription_id,
            "subscription_item": item_id,
        },
    }


def refresh_metered_lines(ctx: Ctx, invoice: JsonDict) -> None:
    """Usage reported during the finalization grace period still counts."""
    for line in invoice["_lines"]:
        metered = line["_metered"]
        if metered is None:
            continue
        quantity = aggregate(
            ctx, metered["meter"], invoice["customer"], metered["start"], metered["end"]
        )
        _set_quantity(line, quantity)
        line["amount"] = line["subtotal"] = money(quantity * Decimal(metered["unit"]))
    refresh_totals(ctx, invoice)


# Totals -----------------------------------------------------------------------------


def refresh_totals(ctx: Ctx, invoice: JsonDict) -> None:
    per_rate: dict[str, list[int]] = {}
    for line in invoice["_lines"]:
        line["taxes"] = []
        for rate_id in line["_tax_rates"] or invoice["_default_tax_rates"]:
            rate = ctx.store.get("tax_rate", rate_id)
            tax = money(Decimal(line["amount"]) * tax_percentage(rate) / 100)
            line["taxes"].append(_tax(tax, rate_id, line["amount"]))
            totals = per_rate.setdefault(rate_id, [0, 0])
            totals[0] += tax
            totals[1] += line["amount"]
    subtotal = sum(int(line["amount"]) for line in invoice["_lines"])
    tax_total = sum(t[0] for t in per_rate.values())
    invoice.update(
        subtotal=subtotal,
        subtotal_excluding_tax=subtotal,
        total_excluding_tax=subtotal,
        total=subtotal + tax_total,
        total_taxes=[_tax(t[0], rid, t[1]) for rid, t in per_rate.items()],
    )
    refresh_amount_due(invoice)


def _tax(amount: int, rate_id: str, taxable: int) -> JsonDict:
    return {
        "amount": amount,
        "tax_behavior": "exclusive",
        "tax_rate_details": {"tax_rate": rate_id},
        "taxability_reason": "standard_rated",
        "taxable_amount": taxable,
        "type": "tax_rate_details",
    }


def refresh_amount_due(invoice: JsonDict) -> None:
    due = (
        invoice["total"] - invoice["pre_payment_credit_notes_amount"] + invoice["_balance_applied"]
    )
    invoice["amount_due"] = max(due, 0)
    paid = invoice["amount_paid"] + invoice["amount_paid_off_stripe"]
    invoice["amount_remaining"] = max(invoice["amount_due"] - paid, 0)


def _apply_customer_balance(ctx: Ctx, invoice: JsonDict, customer: JsonDict) -> None:
    balance = int(customer["balance"])
    invoice["starting_balance"] = balance
    due = invoice["total"] - invoice["pre_payment_credit_notes_amount"]
    # A credit (negative balance) covers up to the amount due; a debit is all added.
    applied = max(balance, -due) if balance < 0 else balance
    if due + applied < 0:
        applied = -due
    customer["balance"] = balance - applied
    invoice["_balance_applied"] = applied
    refresh_amount_due(invoice)
    minimum = MINIMUM_CHARGE.get(invoice["currency"], DEFAULT_MINIMUM_CHARGE)
    if 0 < invoice["amount_due"] < minimum:
        customer["balance"] += invoice["amount_due"]
        invoice["_balance_applied"] -= invoice["amount_due"]
        refresh_amount_due(invoice)
    invoice["ending_balance"] = customer["balance"]


# State machine ----------------------------------------------------------------------


def _require(invoice: JsonDict, action: str, *allowed: str) -> None:
    if invoice["status"] not in allowed:
        raise unexpected_state(
            f"You cannot {action} this invoice because it has a status of {invoice['status']}."
        )


def finalize(ctx: Ctx, invoice: JsonDict, *, automatic: bool) -> None:
    _require(invoice, "finalize", "draft")
    before = ctx.render(invoice)
    customer = ctx.store.get("customer", invoice["customer"])
    if invoice["_subscription"]:
        refresh_metered_lines(ctx, invoice)
    now = ctx.now_of(invoice)
    number = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
    customer["next_invoice_sequence"] += 1
    invoice.update(
        status="open",
        number=number,
        effective_at=now,
        automatically_finalizes_at=None,
        next_payment_attempt=None,
    )
    invoice["status_transitions"]["finalized_at"] = now
    if invoice["collection_method"] == "send_invoice" and invoice["due_date"] is None:
        invoice["due_date"] = now + DAY * int(invoice["days_until_due"] or 0)
    _copy_customer(invoice, customer)
    _apply_customer_balance(ctx, invoice, customer)
    ctx.emit("invoice.finalized", invoice)
    ctx.emit_updated("invoice.updated", invoice, before)
    _collect_after_finalizing(ctx, invoice, automatic)


def _collect_after_finalizing(ctx: Ctx, invoice: JsonDict, automatic: bool) -> None:
    if invoice["amount_remaining"] == 0:
        mark_paid(ctx, invoice, charged=False)
        return
    if invoice["collection_method"] != "charge_automatically" or not invoice["auto_advance"]:
        return
    if automatic:
        attempt_payment(ctx, invoice, default_payment_method(ctx, invoice))
    else:
        invoice["next_payment_attempt"] = ctx.now_of(invoice)


def default_payment_method(ctx: Ctx, invoice: JsonDict) -> JsonDict | None:
    """Invoice, then subscription, then customer default, as Stripe looks it up."""
    candidates = [invoice["default_payment_method"]]
    if invoice["_subscription"]:
        candidates.append(
            ctx.store.get("subscription", invoice["_subscription"])["default_payment_method"]
        )
    customer = ctx.store.get("customer", invoice["customer"])
    candidates.append(customer["invoice_settings"]["default_payment_method"])
    for pm_id in candidates:
        if pm_id:
            pm: JsonDict = ctx.store.get("payment_method", pm_id)
            return pm
    return None


def attempt_payment(ctx: Ctx, invoice: JsonDict, pm: JsonDict | None) -> bool:
    before = ctx.render(invoice)
    invoice["attempt_count"] += 1
    invoice["attempted"] = True
    if cust.charge_succeeds(pm):
        mark_paid(ctx, invoice, charged=True, before=before)
        return True
    now = ctx.now_of(invoice)
    retries_left = invoice["attempt_count"] <= len(RETRY_SCHEDULE_DAYS)
    automatic = invoice["auto_advance"] and invoice["collection_method"] == "charge_automatically"
    invoice["next_payment_attempt"] = (
        now + DAY * RETRY_SCHEDULE_DAYS[invoice["attempt_count"] - 1]
        if automatic
        and retries_left
        and pm is not None
        and invoice["billing_reason"] != "subscription_create"
        else None
    )
    ctx.emit("invoice.payment_failed", invoice)
    ctx.emit_updated("invoice.updated", invoice, before)
    _notify_subscription(ctx, invoice, paid=False)
    return False


def mark_paid(
    ctx: Ctx,
    invoice: JsonDict,
    *,
    charged: bool,
    out_of_band: bool = False,
    before: JsonDict | None = None,
) -> None:
    before = before or ctx.render(invoice)
    now = ctx.now_of(invoice)
    if out_of_band:
        invoice["amount_paid_off_stripe"] += invoice["amount_remaining"]
    else:
        invoice["amount_paid"] += invoice["amount_remaining"]
    invoice.update(status="paid", amount_remaining=0, next_payment_attempt=None)
    invoice["status_transitions"]["paid_at"] = now
    ctx.emit("invoice.paid", invoice)
    if charged:
        ctx.emit("invoice.payment_succeeded", invoice)
    ctx.emit_updated("invoice.updated", invoice, before)
    _notify_subscription(ctx, invoice, paid=True)


def _notify_subscription(ctx: Ctx, invoice: JsonDict, *, paid: bool) -> None:
    if invoice["_subscription"]:
        # Subscriptions are built on invoices, so this one call goes the other way.
        from adapters.stripe.sandbox.subscriptions import invoice_settled

        invoice_settled(ctx, invoice, paid=paid)


def void(ctx: Ctx, invoice: JsonDict) -> None:
    _require(invoice, "void", "open", "uncollectible")
    before = ctx.render(invoice)
    invoice.update(status="void", next_payment_attempt=None)
    invoice["status_transitions"]["voided_at"] = ctx.now_of(invoice)
    ctx.emit("invoice.voided", invoice)
    ctx.emit_updated("invoice.updated", invoice, before)


def mark_uncollectible(ctx: Ctx, invoice: JsonDict) -> None:
    _require(invoice, "mark uncollectible", "open")
    before = ctx.render(invoice)
    invoice.update(status="uncollectible", next_payment_attempt=None)
    invoice["status_transitions"]["marked_uncollectible_at"] = ctx.now_of(invoice)
    ctx.emit("invoice.marked_uncollectible", invoice)
    ctx.emit_updated("invoice.updated", invoice, before)


# Invoice items ----------------------------------------------------------------------


def sweep_pending_items(ctx: Ctx, invoice: JsonDict, subscription_id: str | None) -> None:
    """Pending invoice items of the customer join the invoice (a subscription's
    invoice takes the items for that subscription and those for none)."""
    for item in newest_first(ctx.store.all("invoiceitem"))[::-1]:
        wanted = item["_subscription"] in (None, subscription_id)
        if (
            item["invoice"] is None
            and not item.get("_deleted")
            and item["customer"] == invoice["customer"]
            and wanted
            and item["currency"] == invoice["currency"]
        ):
            _attach_item(ctx, invoice, item)


def _attach_item(ctx: Ctx, invoice: JsonDict, item: JsonDict) -> None:
    item["invoice"] = invoice["id"]
    price = ctx.store.get("price", item["_price"]) if item["_price"] else None
    parent = {
        "type": "invoice_item_details",
        "subscription_item_details": None,
        "invoice_item_details": {
            "invoice_item": item["id"],
            "proration": False,
            "proration_details": {"credited_items": None},
            "subscription": item["_subscription"],
        },
    }
    add_line(
        ctx,
        invoice,
        amount=item["amount"],
        description=item["description"],
        period=(item["period"]["start"], item["period"]["end"]),
        quantity=Decimal(item["quantity_decimal"]),
        price=price,
        parent=parent,
        tax_rates=item["_tax_rates"],
        # Stripe's line for an invoice item carries the item's metadata.
        metadata=item["metadata"],
    )


def _item_amount(ctx: Ctx, p: Params) -> tuple[int, Decimal, JsonDict | None, str | None]:
    """(amount, quantity, price, currency) from amount | pricing[price] |
    price_data | unit_amount_decimal, with quantity or quantity_decimal."""
    quantity = p.decimal("quantity_decimal") if p.has("quantity_decimal") else None
    whole = p.integer("quantity", minimum=0)
    if quantity is None:
        quantity = Decimal(whole if whole is not None else 1)
    pricing = p.nested("pricing")
    price_id = pricing.text("price") if pricing else None
    if price_id:
        price = ctx.store.get("price", price_id, "pricing[price]")
        return (
            money(quantity * Decimal(price["unit_amount_decimal"])),
            quantity,
            price,
            price["currency"],
        )
    data = p.nested("price_data")
    if data is not None:
        price = inline_price(ctx, data)
        unit = Decimal(price["unit_amount_decimal"])
        return money(quantity * unit), quantity, price, price["currency"]
    unit_decimal = p.decimal("unit_amount_decimal")
    if unit_decimal is not None:
        return money(quantity * unit_decimal), quantity, None, None
    amount = p.integer("amount")
    if amount is None:
        raise invalid("Missing required param: amount.", param="amount", code="parameter_missing")
    return amount, quantity, None, None


def create_invoice_item(ctx: Ctx, p: Params) -> JsonDict:
    customer = cust.live_customer(ctx, p.text("customer", required=True))
    amount, quantity, price, currency = _item_amount(ctx, p)
    currency = (p.text("currency") or currency or customer["currency"] or "usd").lower()
    invoice_id = p.text("invoice")
    invoice = ctx.store.get("invoice", invoice_id, "invoice") if invoice_id else None
    subscription_id = p.text("subscription")
    if subscription_id:
        ctx.store.get("subscription", subscription_id, "subscription")
    tax_rates = p.strings("tax_rates") or []
    period = p.nested("period")
    description = p.text("description") or None
    discountable = p.boolean("discountable")
    metadata = p.metadata()
    now = ctx.now_of(customer)
    start = period.integer("start", required=True) if period else now
    end = period.integer("end", required=True) if period else now
    p.finish()
    _check_item_target(invoice, customer, currency)
    active_tax_rates(ctx, tax_rates, "tax_rates")
    item = {
        "id": ctx.store.new_id("ii"),
        "object": "invoiceitem",
        "amount": amount,
        "currency": currency,
        "customer": customer["id"],
        "customer_account": None,
        "date": now,
        "description": description or _product_name(ctx, price),
        "discountable": discountable is not False,
        "discounts": [],
        "frozen_fields": None,
        "invoice": None,
        "invoicing_rules": None,
        "livemode": False,
        "metadata": apply_metadata({}, metadata),
        "net_amount": amount,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": subscription_id},
        }
        if subscription_id
        else None,
        "period": {"start": start, "end": end},
        "pricing": _pricing(price),
        "proration": False,
        "proration_details": None,
        "quantity": int(quantity) if quantity == quantity.to_integral_value() else None,
        "quantity_decimal": decimal_text(quantity),
        "tax_rates": [],
        "test_clock": customer["test_clock"],
        "_price": price["id"] if price else None,
        "_subscription": subscription_id,
        "_tax_rates": tax_rates,
    }
    ctx.store.add("invoiceitem", item)
    if invoice is not None:
        _attach_item(ctx, invoice, item)
    ctx.emit("invoiceitem.created", item)
    return ctx.render(item)


def _check_item_target(invoice: JsonDict | None, customer: JsonDict, currency: str) -> None:
    if invoice is None:
        return
    if invoice["customer"] != customer["id"]:
        raise invalid("The invoice belongs to another customer.", param="invoice")
    if invoice["status"] != "draft":
        raise invalid(
            "You can only add invoice items to draft invoices.",
            param="invoice",
            code="invoice_not_editable",
        )
    if invoice["currency"] != currency:
        raise invalid(
            f"The invoice currency is {invoice['currency']}, not {currency}.", param="currency"
        )


def _product_name(ctx: Ctx, price: JsonDict | None) -> str | None:
    if price is None:
        return None
    return str(ctx.store.get("product", price["product"])["name"])


def retrieve_invoice_item(ctx: Ctx, p: Params, item_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get("invoiceitem", item_id))


def update_invoice_item(ctx: Ctx, p: Params, item_id: str) -> JsonDict:
    item = ctx.store.get("invoiceitem", item_id)
    given, description = p.optional_text("description")
    metadata = p.metadata()
    p.finish()
    _require_editable_item(ctx, item)
    if given:
        item["description"] = description
        for line in _item_lines(ctx, item):
            line["description"] = description
    item["metadata"] = apply_metadata(item["metadata"], metadata)
    for line in _item_lines(ctx, item):
        line["metadata"] = dict(item["metadata"])
    return ctx.render(item)


def delete_invoice_item(ctx: Ctx, p: Params, item_id: str) -> JsonDict:
    p.finish()
    item = ctx.store.get("invoiceitem", item_id)
    _require_editable_item(ctx, item)
    if item["invoice"]:
        invoice = ctx.store.get("invoice", item["invoice"])
        invoice["_lines"] = [
            line for line in invoice["_lines"] if line not in _item_lines(ctx, item)
        ]
        refresh_totals(ctx, invoice)
    item["_deleted"] = True
    ctx.emit("invoiceitem.deleted", item)
    return ctx.render(item)


def _require_editable_item(ctx: Ctx, item: JsonDict) -> None:
    if item.get("_deleted"):
        raise invalid(
            f"No such invoiceitem: '{item['id']}'", status=404, code="resource_missing", param="id"
        )
    if item["invoice"] and ctx.store.get("invoice", item["invoice"])["status"] != "draft":
        raise invalid(
            "The invoice item is on a finalized invoice and can no longer be changed.",
            code="invoice_not_editable",
        )


def _item_lines(ctx: Ctx, item: JsonDict) -> list[JsonDict]:
    if not item["invoice"]:
        return []
    invoice = ctx.store.get("invoice", item["invoice"])
    return [
        line
        for line in invoice["_lines"]
        if (line["parent"].get("invoice_item_details") or {}).get("invoice_item") == item["id"]
    ]


def list_invoice_items(ctx: Ctx, p: Params) -> JsonDict:
    customer = p.text("customer")
    invoice = p.text("invoice")
    pending = p.boolean("pending")
    created = range_filter(p, "created")
    found = [
        i
        for i in ctx.store.all("invoiceitem")
        if not i.get("_deleted")
        and customer in (None, i["customer"])
        and invoice in (None, i["invoice"])
        and (pending is None or (i["invoice"] is None) == pending)
        and created(i["date"])
    ]
    result = list_response(ctx, p, newest_first(found), "/v1/invoiceitems")
    p.finish()
    return result


# Invoice endpoints ------------------------------------------------------------------


def collection_settings(
    p: Params, current: str | None = None, *, with_due_date: bool = True
) -> tuple[str, int | None, int | None]:
    """(collection_method, days_until_due, due_date); subscriptions take no due_date."""
    method = p.choice("collection_method", COLLECTION_METHODS) or current or "charge_automatically"
    days = p.integer("days_until_due", minimum=0, maximum=3650)
    due_date = p.integer("due_date", minimum=0) if with_due_date else None
    if method == "charge_automatically" and (days is not None or due_date is not None):
        param = "days_until_due" if days is not None else "due_date"
        raise invalid(f"{param} can only be set when collection_method=send_invoice.", param=param)
    return method, days, due_date


def create_invoice(ctx: Ctx, p: Params) -> JsonDict:
    customer = cust.live_customer(ctx, p.text("customer", required=True))
    method, days, due_date = collection_settings(p)
    if method == "send_invoice" and days is None and due_date is None:
        raise invalid(
            "Missing required param: days_until_due (or due_date) when "
            "collection_method=send_invoice.",
            param="days_until_due",
            code="parameter_missing",
        )
    auto_advance = p.boolean("auto_advance") is True
    pending = p.choice("pending_invoice_items_behavior", ("include", "exclude")) or "exclude"
    currency = (p.text("currency") or customer["currency"] or "usd").lower()
    rates = active_tax_rates(ctx, p.strings("default_tax_rates") or [], "default_tax_rates")
    pm_id = p.text("default_payment_method")
    extra = {
        "description": p.text("description") or None,
        "days_until_due": days,
        "due_date": due_date,
        "metadata": apply_metadata({}, p.metadata()),
    }
    p.finish()
    if pm_id:
        cust.payment_method_for_charge(ctx, pm_id, customer, "default_payment_method")
    invoice = new_invoice(
        ctx,
        customer,
        billing_reason="manual",
        collection_method=method,
        auto_advance=auto_advance,
        currency=currency,
        extra=extra,
    )
    invoice["_default_tax_rates"] = rates
    invoice["default_payment_method"] = pm_id
    if pending == "include":
        sweep_pending_items(ctx, invoice, None)
    ctx.emit("invoice.created", invoice)
    return ctx.render(invoice)


def retrieve_invoice(ctx: Ctx, p: Params, invoice_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get("invoice", invoice_id))


def _live_invoice(ctx: Ctx, invoice_id: str) -> JsonDict:
    invoice = ctx.store.get("invoice", invoice_id)
    if invoice.get("_deleted"):
        raise invalid(
            f"No such invoice: '{invoice_id}'", param="id", code="resource_missing", status=404
        )
    return invoice


def update_invoice(ctx: Ctx, p: Params, invoice_id: str) -> JsonDict:
    invoice = _live_invoice(ctx, invoice_id)
    before = ctx.render(invoice)
    metadata = p.metadata()
    auto_advance = p.boolean("auto_advance")
    draft_changes = _draft_changes(ctx, p, invoice)
    p.finish()
    if draft_changes and invoice["status"] != "draft":
        raise invalid(
            "You can only update the fields "
            f"{', '.join(sorted(draft_changes))} on a draft invoice.",
            code="invoice_not_editable",
        )
    invoice.update(draft_changes)
    if "_default_tax_rates" in draft_changes:
        refresh_totals(ctx, invoice)
    if auto_advance is not None:
        _set_auto_advance(ctx, invoice, auto_advance)
    invoice["metadata"] = apply_metadata(invoice["metadata"], metadata)
    ctx.emit_updated("invoice.updated", invoice, before)
    return ctx.render(invoice)


def _draft_changes(ctx: Ctx, p: Params, invoice: JsonDict) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    given, description = p.optional_text("description")
    if given:
        changes["description"] = description
    if any(p.has(k) for k in ("collection_method", "days_until_due", "due_date")):
        method, days, due_date = collection_settings(p, invoice["collection_method"])
        changes.update(collection_method=method, days_until_due=days, due_date=due_date)
    else:
        collection_settings(p)
    rates = p.strings("default_tax_rates")
    if rates is not None:
        changes["_default_tax_rates"] = active_tax_rates(ctx, rates, "default_tax_rates")
    return changes


def _set_auto_advance(ctx: Ctx, invoice: JsonDict, auto_advance: bool) -> None:
    invoice["auto_advance"] = auto_advance
    if invoice["status"] == "draft":
        invoice["automatically_finalizes_at"] = (
            ctx.now_of(invoice) + FINALIZE_GRACE if auto_advance else None
        )
        invoice["next_payment_attempt"] = _first_attempt(invoice)
    elif invoice["status"] == "open" and not auto_advance:
        invoice["next_payment_attempt"] = None


def delete_invoice(ctx: Ctx, p: Params, invoice_id: str) -> JsonDict:
    p.finish()
    invoice = _live_invoice(ctx, invoice_id)
    if invoice["status"] != "draft":
        raise unexpected_state("You can only delete draft invoices.")
    if invoice["_subscription"]:
        raise invalid(
            "You cannot delete a draft invoice created by a subscription.",
            code="invoice_not_editable",
        )
    for item in ctx.store.all("invoiceitem"):
        if item["invoice"] == invoice_id:
            item["invoice"] = None
    invoice["_deleted"] = True
    ctx.emit("invoice.deleted", invoice)
    return ctx.render(invoice)


def finalize_invoice(ctx: Ctx, p: Params, invoice_id: str) -> JsonDict:
    auto_advance = p.boolean("auto_advance")
    p.finish()
    invoice = _live_invoice(ctx, invoice_id)
    _require(invoice, "finalize", "draft")
    if auto_advance is not None:
        invoice["auto_advance"] = auto_advance
    finalize(ctx, invoice, automatic=False)
    return ctx.render(invoice)


def pay_invoice(ctx: Ctx, p: Params, invoice_id: str) -> JsonDict:
    reference = p.text("payment_method")
    out_of_band = p.boolean("paid_out_of_band") is True
    p.boolean("off_session")
    p.boolean("forgive")
    p.finish()
    invoice = _live_invoice(ctx, invoice_id)
    _require(invoice, "pay", "open", "uncollectible")
    if out_of_band:
        mark_paid(ctx, invoice, charged=False, out_of_band=True)
        return ctx.render(invoice)
    customer = ctx.store.get("customer", invoice["customer"])
    pm = (
        cust.payment_method_for_charge(ctx, reference, customer, "payment_method")
        if reference
        else default_payment_method(ctx, invoice)
    )
    if pm is None:
        raise invalid(
            "This customer has no attached payment source or default payment "
            "method. Please consider adding a default payment method.",
            param="payment_method",
        )
    if not attempt_payment(ctx, invoice, pm):
        raise card_declined()
    return ctx.render(invoice)


def _transition(action: str) -> Any:
    def handler(ctx: Ctx, p: Params, invoice_id: str) -> JsonDict:
        p.finish()
        invoice = _live_invoice(ctx, invoice_id)
        if action == "void":
            void(ctx, invoice)
        elif action == "mark_uncollectible":
            mark_uncollectible(ctx, invoice)
        else:
            _send(ctx, invoice)
        return ctx.render(invoice)

    return handler


def _send(ctx: Ctx, invoice: JsonDict) -> None:
    _require(invoice, "send", "open", "paid", "uncollectible")
    # Test mode sends no email, only the event.
    ctx.emit("invoice.sent", invoice)


def list_invoices(ctx: Ctx, p: Params) -> JsonDict:
    customer = p.text("customer")
    status = p.choice("status", ("draft", "open", "paid", "uncollectible", "void"))
    subscription = p.text("subscription")
    method = p.choice("collection_method", COLLECTION_METHODS)
    created = range_filter(p, "created")
    due = range_filter(p, "due_date")
    found = [
        i
        for i in ctx.store.all("invoice")
        if not i.get("_deleted")
        and customer in (None, i["customer"])
        and status in (None, i["status"])
        and subscription in (None, i["_subscription"])
        and method in (None, i["collection_method"])
        and created(i["created"])
        and due(i["due_date"])
    ]
    result = list_response(ctx, p, newest_first(found), "/v1/invoices")
    p.finish()
    return result


def list_lines(ctx: Ctx, p: Params, invoice_id: str) -> JsonDict:
    invoice = ctx.store.get("invoice", invoice_id)
    result = list_response(
        ctx,
        p,
        invoice["_lines"],
        f"/v1/invoices/{invoice_id}/lines",
        render=lambda line: render_line(ctx, line),
    )
    p.finish()
    return result


ROUTES: list[Route] = [
    route("POST", "/v1/invoices", create_invoice),
    route("GET", "/v1/invoices", list_invoices),
    route("GET", "/v1/invoices/{id}", retrieve_invoice),
    route("POST", "/v1/invoices/{id}", update_invoice),
    route("DELETE", "/v1/invoices/{id}", delete_invoice),
    route("GET", "/v1/invoices/{id}/lines", list_lines),
    route("POST", "/v1/invoices/{id}/finalize", finalize_invoice),
    route("POST", "/v1/invoices/{id}/pay", pay_invoice),
    route("POST", "/v1/invoices/{id}/void", _transition("void")),
    route("POST", "/v1/invoices/{id}/mark_uncollectible", _transition("mark_uncollectible")),
    route("POST", "/v1/invoices/{id}/send", _transition("send")),
    route("POST", "/v1/invoiceitems", create_invoice_item),
    route("GET", "/v1/invoiceitems", list_invoice_items),
    route("GET", "/v1/invoiceitems/{id}", retrieve_invoice_item),
    route("POST", "/v1/invoiceitems/{id}", update_invoice_item),
    route("DELETE", "/v1/invoiceitems/{id}", delete_invoice_item),
]
