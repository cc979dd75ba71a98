"""Subscriptions and subscription items, billed at period end.

Creating a subscription bills its licensed items for the first period at once
(`subscription_create`). At each period end the renewal invoice
(`subscription_cycle`) carries the licensed fees for the new period in advance
and the metered usage of the period that just ended (quantity = the meter's
aggregate for the customer over the period), plus the customer's pending
invoice items. It is a draft that finalizes an hour later on the customer's
clock, when the usage is read again and payment attempted."""

from __future__ import annotations

from decimal import Decimal

from adapters.stripe.sandbox import invoices as inv
from adapters.stripe.sandbox.catalog import active_tax_rates
from adapters.stripe.sandbox.clock import add_interval, interval_seconds
from adapters.stripe.sandbox.context import Ctx, public, renders
from adapters.stripe.sandbox.customers import live_customer, payment_method_for_charge
from adapters.stripe.sandbox.errors import JsonDict, invalid
from adapters.stripe.sandbox.forms import Params, apply_metadata
from adapters.stripe.sandbox.meters import aggregate
from adapters.stripe.sandbox.pagination import list_response, newest_first, range_filter
from adapters.stripe.sandbox.routing import Route, route

RENEWING = ("active", "past_due", "trialing", "unpaid")
STATUSES = (
    "active",
    "past_due",
    "unpaid",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "trialing",
    "paused",
    "all",
    "ended",
)


# Rendering ---------------------------------------------------------------------------


def items_of(ctx: Ctx, subscription: JsonDict) -> list[JsonDict]:
    return [ctx.store.get("subscription_item", i) for i in subscription["_items"]]


@renders("subscription")
def render_subscription(ctx: Ctx, subscription: JsonDict) -> JsonDict:
    served = public(subscription)
    served["items"] = {
        "object": "list",
        "data": [ctx.render(item) for item in items_of(ctx, subscription)],
        "has_more": False,
        "url": f"/v1/subscription_items?subscription={subscription['id']}",
    }
    served["default_tax_rates"] = [
        ctx.render(ctx.store.get("tax_rate", r)) for r in subscription["_default_tax_rates"]
    ]
    return served


@renders("subscription_item")
def render_item(ctx: Ctx, item: JsonDict) -> JsonDict:
    served = public(item)
    price = ctx.store.get("price", item["_price"])
    served["price"] = ctx.render(price)
    served["plan"] = _plan(price)
    served["tax_rates"] = [ctx.render(ctx.store.get("tax_rate", r)) for r in item["_tax_rates"]]
    return served


def _plan(price: JsonDict) -> JsonDict:
    """The legacy `plan` view of a recurring price, still served on items."""
    recurring = price["recurring"]
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": False,
        "metadata": dict(price["metadata"]),
        "meter": recurring["meter"],
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": recurring["usage_type"],
    }


# Creating ---------------------------------------------------------------------------


def _item_specs(ctx: Ctx, p: Params) -> list[tuple[JsonDict, int | None, JsonDict, list[str]]]:
    given = p.nested_list("items", required=True)
    if not given:
        raise invalid("Missing required param: items.", param="items", code="parameter_missing")
    specs = []
    for i, spec in enumerate(given):
        price = ctx.store.get("price", str(spec.text("price", required=True)), f"items[{i}][price]")
        quantity = spec.integer("quantity", minimum=0)
        metadata = apply_metadata({}, spec.metadata())
        rates = active_tax_rates(ctx, spec.strings("tax_rates") or [], f"items[{i}][tax_rates]")
        _check_item_price(price, quantity, i)
        specs.append((price, quantity, metadata, rates))
    _check_compatible([s[0] for s in specs])
    return specs


def _check_item_price(price: JsonDict, quantity: int | None, index: int) -> None:
    param = f"items[{index}][price]"
    if price["recurring"] is None:
        raise invalid(f"The price specified ({price['id']}) is not recurring.", param=param)
    if not price["active"]:
        raise invalid(f"The price specified ({price['id']}) is inactive.", param=param)
    if price["recurring"]["usage_type"] == "metered" and quantity is not None:
        raise invalid(
            "Quantity should not be specified where usage_type is `metered`. "
            "Remove quantity from `items[{index}]`.",
            param=f"items[{index}][quantity]",
        )


def _check_compatible(prices: list[JsonDict]) -> None:
    first = prices[0]
    for price in prices[1:]:
        if price["currency"] != first["currency"]:
            raise invalid(
                "All prices on a subscription must have the same currency.", param="items"
            )
        if (price["recurring"]["interval"], price["recurring"]["interval_count"]) != (
            first["recurring"]["interval"],
            first["recurring"]["interval_count"],
        ):
            raise invalid(
                "All prices on a subscription must have the same recurring "
                "interval and interval_count.",
                param="items",
            )
    if len({p["id"] for p in prices}) != len(prices):
        raise invalid("Cannot add multiple subscription items with the same price.", param="items")


def create_subscription(ctx: Ctx, p: Params) -> JsonDict:
    customer = live_customer(ctx, p.text("customer", required=True))
    specs = _item_specs(ctx, p)
    method, days, _ = inv.collection_settings(p, with_due_date=False)
    if method == "send_invoice" and days is None:
        raise invalid(
            "Missing required param: days_until_due.",
            param="days_until_due",
            code="parameter_missing",
        )
    behaviour = p.choice(
        "payment_behavior",
        ("allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete"),
    )
    if behaviour in ("error_if_incomplete", "pending_if_incomplete"):
        raise invalid(
            f"The sandbox does not support payment_behavior={behaviour}.", param="payment_behavior"
        )
    rates = active_tax_rates(ctx, p.strings("default_tax_rates") or [], "default_tax_rates")
    pm_id = p.text("default_payment_method")
    fields = {
        "description": p.text("description") or None,
        "metadata": apply_metadata({}, p.metadata()),
        "cancel_at_period_end": p.boolean("cancel_at_period_end") is True,
    }
    p.boolean("off_session")
    p.choice("proration_behavior", ("create_prorations", "none", "always_invoice"))
    p.finish()
    if pm_id:
        payment_method_for_charge(ctx, pm_id, customer, "default_payment_method")
    subscription = _new_subscription(ctx, customer, specs, method, days, fields)
    subscription["default_payment_method"] = pm_id
    subscription["_default_tax_rates"] = rates
    ctx.emit("customer.subscription.created", subscription)
    _bill_first_period(ctx, subscription, customer, behaviour or "allow_incomplete")
    return ctx.render(subscription)


def _new_subscription(
    ctx: Ctx,
    customer: JsonDict,
    specs: list[tuple[JsonDict, int | None, JsonDict, list[str]]],
    method: str,
    days: int | None,
    fields: JsonDict,
) -> JsonDict:
    now = ctx.now_of(customer)
    first_price = specs[0][0]
    recurring = first_price["recurring"]
    subscription_id = ctx.store.new_id("sub")
    end = add_interval(now, recurring["interval"], recurring["interval_count"], 1)
    items = [_new_item(ctx, subscription_id, spec, now, end) for spec in specs]
    subscription: JsonDict = {
        "id": subscription_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"enabled": False, "liability": None, "disabled_reason": None},
        "billing_cycle_anchor": now,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"type": "classic", "flexible": None},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": method,
        "created": now,
        "currency": first_price["currency"],
        "customer": customer["id"],
        "customer_account": None,
        "days_until_due": days,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "latest_invoice": None,
        "livemode": False,
        "managed_payments": None,
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": None,
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "presentment_details": None,
        "schedule": None,
        "start_date": now,
        "status": "incomplete",
        "status_details": None,
        "test_clock": customer["test_clock"],
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": None,
        "trial_start": None,
        "_items": [item["id"] for item in items],
        "_period": 1,
        "_default_tax_rates": [],
        **fields,
    }
    return ctx.store.add("subscription", subscription)


def _new_item(
    ctx: Ctx,
    subscription_id: str,
    spec: tuple[JsonDict, int | None, JsonDict, list[str]],
    start: int,
    end: int,
) -> JsonDict:
    price, quantity, metadata, rates = spec
    metered = price["recurring"]["usage_type"] == "metered"
    item = {
        "id": ctx.store.new_id("si"),
        "object": "subscription_item",
        "billed_until": None,
        "billing_thresholds": None,
        "created": start,
        "current_period_end": end,
        "current_period_start": start,
        "current_trial": None,
        "discounts": [],
        "metadata": metadata,
        "price": None,
        "plan": None,
        "quantity": None if metered else (1 if quantity is None else quantity),
        "subscription": subscription_id,
        "tax_rates": [],
        "_price": price["id"],
        "_tax_rates": rates,
    }
    return ctx.store.add("subscription_item", item)


def _bill_first_period(
    ctx: Ctx, subscription: JsonDict, customer: JsonDict, behaviour: str
) -> None:
    invoice = _new_period_invoice(ctx, subscription, customer, "subscription_create")
    inv.sweep_pending_items(ctx, invoice, subscription["id"])
    ctx.emit("invoice.created", invoice)
    charge_now = behaviour == "allow_incomplete"
    inv.finalize(ctx, invoice, automatic=charge_now)
    if not charge_now:
        # default_incomplete: the payment is left to the caller to confirm.
        invoice["next_payment_attempt"] = None
    if subscription["status"] == "incomplete" and subscription["collection_method"] == (
        "send_invoice"
    ):
        before = ctx.render(subscription)
        subscription["status"] = "active"
        ctx.emit_updated("customer.subscription.updated", subscription, before)


def _new_period_invoice(
    ctx: Ctx,
    subscription: JsonDict,
    customer: JsonDict,
    reason: str,
    period: tuple[int, int] | None = None,
) -> JsonDict:
    invoice = inv.new_invoice(
        ctx,
        customer,
        billing_reason=reason,
        collection_method=subscription["collection_method"],
        auto_advance=True,
        currency=subscription["currency"],
        subscription=subscription,
        period=period,
        extra={
            "days_until_due": subscription["days_until_due"],
            "description": subscription["description"],
        },
    )
    invoice["_default_tax_rates"] = list(subscription["_default_tax_rates"])
    if reason == "subscription_create":
        invoice["automatically_finalizes_at"] = None
    for item in items_of(ctx, subscription):
        _add_licensed_line(ctx, invoice, subscription, item)
    subscription["latest_invoice"] = invoice["id"]
    return invoice


def _add_licensed_line(ctx: Ctx, invoice: JsonDict, subscription: JsonDict, item: JsonDict) -> None:
    price = ctx.store.get("price", item["_price"])
    if price["recurring"]["usage_type"] != "licensed":
        return
    quantity = Decimal(item["quantity"])
    inv.add_line(
        ctx,
        invoice,
        amount=inv.money(quantity * Decimal(price["unit_amount_decimal"])),
        description=f"{item['quantity']} × {_product_name(ctx, price)}",
        period=(item["current_period_start"], item["current_period_end"]),
        quantity=quantity,
        price=price,
        parent=inv.subscription_item_parent(subscription["id"], item["id"]),
        tax_rates=item["_tax_rates"],
    )


def _add_metered_line(
    ctx: Ctx, invoice: JsonDict, subscription: JsonDict, item: JsonDict, start: int, end: int
) -> None:
    price = ctx.store.get("price", item["_price"])
    if price["recurring"]["usage_type"] != "metered":
        return
    meter = price["recurring"]["meter"]
    quantity = aggregate(ctx, meter, subscription["customer"], start, end)
    inv.add_line(
        ctx,
        invoice,
        amount=inv.money(quantity * Decimal(price["unit_amount_decimal"])),
        description=_product_name(ctx, price),
        period=(start, end),
        quantity=quantity,
        price=price,
        parent=inv.subscription_item_parent(subscription["id"], item["id"]),
        tax_rates=item["_tax_rates"],
        metered={"meter": meter, "start": start, "end": end, "unit": price["unit_amount_decimal"]},
    )


def _product_name(ctx: Ctx, price: JsonDict) -> str:
    return str(ctx.store.get("product", price["product"])["name"])


# Renewal (run by the clock) ---------------------------------------------------------


def period_end(ctx: Ctx, subscription: JsonDict) -> int:
    return int(ctx.store.peek("subscription_item", subscription["_items"][0])["current_period_end"])


def interval_of(ctx: Ctx, subscription: JsonDict) -> tuple[str, int]:
    item = ctx.store.peek("subscription_item", subscription["_items"][0])
    recurring = ctx.store.peek("price", item["_price"])["recurring"]
    return str(recurring["interval"]), int(recurring["interval_count"])


def shortest_interval(ctx: Ctx, subscriptions: list[JsonDict]) -> tuple[str, int] | None:
    intervals = [interval_of(ctx, s) for s in subscriptions]
    return min(intervals, key=lambda i: interval_seconds(*i), default=None)


def renew(ctx: Ctx, subscription: JsonDict) -> None:
    """Close the period ending now: bill it, then open the next one."""
    customer = ctx.store.get("customer", subscription["customer"])
    items = items_of(ctx, subscription)
    start, end = int(items[0]["current_period_start"]), int(items[0]["current_period_end"])
    if subscription["cancel_at_period_end"]:
        _final_invoice(ctx, subscription, customer, start, end)
        _cancel(ctx, subscription, at=end)
        return
    before = ctx.render(subscription)
    interval, count = interval_of(ctx, subscription)
    subscription["_period"] += 1
    next_end = add_interval(
        subscription["billing_cycle_anchor"], interval, count, subscription["_period"]
    )
    for item in items:
        item.update(current_period_start=end, current_period_end=next_end)
    invoice = _new_period_invoice(
        ctx, subscription, customer, "subscription_cycle", period=(start, end)
    )
    for item in items:
        _add_metered_line(ctx, invoice, subscription, item, start, end)
    inv.sweep_pending_items(ctx, invoice, subscription["id"])
    ctx.emit_updated("customer.subscription.updated", subscription, before)
    ctx.emit("invoice.created", invoice)


def _final_invoice(
    ctx: Ctx, subscription: JsonDict, customer: JsonDict, start: int, end: int
) -> None:
    """Bill the usage of a subscription's last period, when it has metered items."""
    items = items_of(ctx, subscription)
    metered = [
        i
        for i in items
        if ctx.store.get("price", i["_price"])["recurring"]["usage_type"] == "metered"
    ]
    if not metered:
        return
    invoice = inv.new_invoice(
        ctx,
        customer,
        billing_reason="subscription_cycle",
        collection_method=subscription["collection_method"],
        auto_advance=True,
        currency=subscription["currency"],
        subscription=subscription,
        period=(start, end),
        extra={"days_until_due": subscription["days_until_due"]},
    )
    invoice["_default_tax_rates"] = list(subscription["_default_tax_rates"])
    for item in metered:
        _add_metered_line(ctx, invoice, subscription, item, start, end)
    inv.sweep_pending_items(ctx, invoice, subscription["id"])
    subscription["latest_invoice"] = invoice["id"]
    ctx.emit("invoice.created", invoice)


def invoice_settled(ctx: Ctx, invoice: JsonDict, *, paid: bool) -> None:
    """A subscription follows its latest invoice: paid -> active, failed -> past due."""
    subscription = ctx.store.get("subscription", invoice["_subscription"])
    if subscription["status"] == "canceled" or subscription["latest_invoice"] != invoice["id"]:
        return
    before = ctx.render(subscription)
    if paid:
        subscription["status"] = "active"
    elif subscription["status"] in ("active", "trialing"):
        subscription["status"] = "past_due"
    ctx.emit_updated("customer.subscription.updated", subscription, before)


# Cancelling and updating ------------------------------------------------------------


def _cancel(
    ctx: Ctx,
    subscription: JsonDict,
    at: int,
    comment: str | None = None,
    feedback: str | None = None,
) -> None:
    subscription.update(status="canceled", canceled_at=at, ended_at=at)
    subscription["cancellation_details"] = {
        "comment": comment,
        "feedback": feedback,
        "reason": "cancellation_requested",
    }
    ctx.emit("customer.subscription.deleted", subscription)


def cancel_subscription(ctx: Ctx, p: Params, subscription_id: str) -> JsonDict:
    subscription = ctx.store.get("subscription", subscription_id)
    invoice_now = p.boolean("invoice_now") is True
    p.boolean("prorate")
    details = p.nested("cancellation_details")
    comment = details.text("comment") if details else None
    feedback = details.text("feedback") if details else None
    p.finish()
    if subscription["status"] == "canceled":
        raise invalid(
            f"No such subscription: '{subscription_id}'",
            status=404,
            code="resource_missing",
            param="id",
        )
    now = ctx.now_of(subscription)
    if invoice_now:
        customer = ctx.store.get("customer", subscription["customer"])
        start = int(items_of(ctx, subscription)[0]["current_period_start"])
        _final_invoice(ctx, subscription, customer, start, now)
    _cancel(ctx, subscription, now, comment, feedback)
    return ctx.render(subscription)


def cancel_all_for_customer(ctx: Ctx, customer: JsonDict) -> None:
    for subscription in ctx.store.all("subscription"):
        if subscription["customer"] == customer["id"] and subscription["status"] != "canceled":
            _cancel(ctx, subscription, ctx.now_of(subscription))


def update_subscription(ctx: Ctx, p: Params, subscription_id: str) -> JsonDict:
    subscription = ctx.store.get("subscription", subscription_id)
    if p.has("items"):
        raise invalid(
            "The sandbox does not support changing a subscription's items; cancel "
            "it and create a new one.",
            param="items",
        )
    changes = _subscription_changes(ctx, p, subscription)
    metadata = p.metadata()
    p.finish()
    if subscription["status"] == "canceled":
        raise invalid("A canceled subscription can only update its metadata.")
    before = ctx.render(subscription)
    subscription.update(changes)
    subscription["metadata"] = apply_metadata(subscription["metadata"], metadata)
    ctx.emit_updated("customer.subscription.updated", subscription, before)
    return ctx.render(subscription)


def _subscription_changes(ctx: Ctx, p: Params, subscription: JsonDict) -> JsonDict:
    changes: JsonDict = {}
    given, description = p.optional_text("description")
    if given:
        changes["description"] = description
    cancel = p.boolean("cancel_at_period_end")
    if cancel is not None:
        changes["cancel_at_period_end"] = cancel
    given, pm_id = p.optional_text("default_payment_method")
    if given:
        if pm_id:
            customer = ctx.store.get("customer", subscription["customer"])
            payment_method_for_charge(ctx, pm_id, customer, "default_payment_method")
        changes["default_payment_method"] = pm_id
    rates = p.strings("default_tax_rates")
    if rates is not None:
        changes["_default_tax_rates"] = active_tax_rates(ctx, rates, "default_tax_rates")
    if p.has("collection_method") or p.has("days_until_due"):
        method, days, _ = inv.collection_settings(
            p, subscription["collection_method"], with_due_date=False
        )
        changes.update(collection_method=method, days_until_due=days)
    return changes


# Reading ----------------------------------------------------------------------------


def retrieve_subscription(ctx: Ctx, p: Params, subscription_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get("subscription", subscription_id))


def list_subscriptions(ctx: Ctx, p: Params) -> JsonDict:
    customer = p.text("customer")
    clock = p.text("test_clock")
    status = p.choice("status", STATUSES)
    price = p.text("price")
    created = range_filter(p, "created")
    found = [
        s
        for s in ctx.store.all("subscription")
        if customer in (None, s["customer"])
        and _status_matches(s["status"], status)
        # Stripe leaves subscriptions on test clocks out unless asked by customer or clock.
        and (s["test_clock"] == clock if clock or not customer else True)
        and (price is None or price in {i["_price"] for i in items_of(ctx, s)})
        and created(s["created"])
    ]
    result = list_response(ctx, p, newest_first(found), "/v1/subscriptions")
    p.finish()
    return result


def _status_matches(actual: str, wanted: str | None) -> bool:
    if wanted is None:
        return actual != "canceled"
    if wanted == "all":
        return True
    if wanted == "ended":
        return actual in ("canceled", "incomplete_expired")
    return actual == wanted


def retrieve_item(ctx: Ctx, p: Params, item_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get("subscription_item", item_id))


def list_items(ctx: Ctx, p: Params) -> JsonDict:
    subscription = ctx.store.get(
        "subscription", str(p.text("subscription", required=True)), "subscription"
    )
    result = list_response(ctx, p, items_of(ctx, subscription), "/v1/subscription_items")
    p.finish()
    return result


ROUTES: list[Route] = [
    route("POST", "/v1/subscriptions", create_subscription),
    route("GET", "/v1/subscriptions", list_subscriptions),
    route("GET", "/v1/subscriptions/{id}", retrieve_subscription),
    route("POST", "/v1/subscriptions/{id}", update_subscription),
    route("DELETE", "/v1/subscriptions/{id}", cancel_subscription),
    route("GET", "/v1/subscription_items", list_items),
    route("GET", "/v1/subscription_items/{id}", retrieve_item),
]
