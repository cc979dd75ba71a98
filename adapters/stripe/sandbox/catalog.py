"""Products, prices (licensed and metered, `unit_amount_decimal` down to
sub-cent) and tax rates (exclusive percentages)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from adapters.stripe.sandbox.clock import INTERVALS
from adapters.stripe.sandbox.context import Ctx, public, renders
from adapters.stripe.sandbox.errors import JsonDict, invalid
from adapters.stripe.sandbox.forms import Params, apply_metadata
from adapters.stripe.sandbox.pagination import list_response, newest_first, range_filter
from adapters.stripe.sandbox.routing import Route, route

MAX_INTERVAL_COUNT = {"day": 365, "week": 52, "month": 12, "year": 1}
TAX_BEHAVIOURS = ("exclusive", "inclusive", "unspecified")


def decimal_text(value: Decimal) -> str:
    """Stripe's spelling of a decimal amount: no exponent, no trailing zeros."""
    return format(value.normalize(), "f")


def json_number(value: Decimal) -> int | float:
    # JSON has one number type; percentages and meter values are not money.
    return int(value) if value == value.to_integral_value() else float(value)


def _currency(p: Params, key: str = "currency") -> str:
    value = p.text(key, required=True)
    assert value is not None
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise invalid(f"Invalid currency: {value}", param=p.name(key))
    return value.lower()


# Products ---------------------------------------------------------------------------


def _new_product(ctx: Ctx, p: Params, *, custom_id: bool = True) -> JsonDict:
    now = ctx.server.now()
    product_id = (p.text("id") if custom_id else None) or ctx.store.new_id("prod")
    if ctx.store.has("product", product_id):
        raise invalid("Product already exists.", param="id", code="resource_already_exists")
    product = {
        "id": product_id,
        "object": "product",
        "active": p.boolean("active") is not False,
        "created": now,
        "default_price": None,
        "description": p.text("description") or None,
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": apply_metadata({}, p.metadata()),
        "name": p.text("name", required=True),
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": p.text("statement_descriptor") or None,
        "tax_code": p.text("tax_code") or None,
        "tax_details": None,
        "type": "service",
        "unit_label": p.text("unit_label") or None,
        "updated": now,
        "url": None,
    }
    ctx.store.add("product", product)
    ctx.emit("product.created", product)
    return product


def create_product(ctx: Ctx, p: Params) -> JsonDict:
    product = _new_product(ctx, p)
    p.finish()
    return ctx.render(product)


def retrieve_product(ctx: Ctx, p: Params, product_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get("product", product_id))


def update_product(ctx: Ctx, p: Params, product_id: str) -> JsonDict:
    product = ctx.store.get("product", product_id)
    before = ctx.render(product)
    name = p.text("name")
    if name == "":
        raise invalid(
            "You passed an empty string for 'name'.", param="name", code="parameter_invalid_empty"
        )
    changes: dict[str, Any] = {
        k: v for k, v in (("name", name), ("active", p.boolean("active"))) if v is not None
    }
    for key in ("description", "unit_label", "statement_descriptor", "default_price"):
        given, value = p.optional_text(key)
        if given:
            changes[key] = value
    if changes.get("default_price"):
        ctx.store.get("price", changes["default_price"], "default_price")
    metadata = p.metadata()
    p.finish()
    product.update(changes)
    product["metadata"] = apply_metadata(product["metadata"], metadata)
    product["updated"] = ctx.server.now()
    ctx.emit_updated("product.updated", product, before)
    return ctx.render(product)


def list_products(ctx: Ctx, p: Params) -> JsonDict:
    active = p.boolean("active")
    created = range_filter(p, "created")
    found = [
        x
        for x in ctx.store.all("product")
        if (active is None or x["active"] == active) and created(x["created"])
    ]
    result = list_response(ctx, p, newest_first(found), "/v1/products")
    p.finish()
    return result


# Prices -----------------------------------------------------------------------------


def _recurring(ctx: Ctx, p: Params) -> JsonDict | None:
    given = p.nested("recurring")
    if given is None:
        return None
    interval = given.choice("interval", INTERVALS, required=True)
    assert interval is not None
    count = given.integer("interval_count", minimum=1, maximum=MAX_INTERVAL_COUNT[interval]) or 1
    usage_type = given.choice("usage_type", ("licensed", "metered")) or "licensed"
    meter_id = given.text("meter")
    if usage_type == "metered" and not meter_id:
        # Legacy usage records are gone since 2025-03-31.basil.
        raise invalid(
            "A metered price must be backed by a meter: pass recurring[meter].",
            param="recurring[meter]",
        )
    if meter_id:
        if usage_type != "metered":
            raise invalid(
                "recurring[meter] requires recurring[usage_type]=metered.", param="recurring[meter]"
            )
        meter = ctx.store.get("billing.meter", meter_id, "recurring[meter]")
        if meter["status"] != "active":
            raise invalid(f"The meter {meter_id} is inactive.", param="recurring[meter]")
    return {
        "interval": interval,
        "interval_count": count,
        "meter": meter_id or None,
        "trial_period_days": None,
        "usage_type": usage_type,
    }


def _unit_amount(p: Params) -> Decimal:
    if p.has("unit_amount") and p.has("unit_amount_decimal"):
        raise invalid(
            "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
            param=p.name("unit_amount_decimal"),
        )
    whole = p.integer("unit_amount", minimum=0)
    if whole is not None:
        return Decimal(whole)
    exact = p.decimal("unit_amount_decimal")
    if exact is None:
        raise invalid(
            f"Missing required param: {p.name('unit_amount')}.",
            param=p.name("unit_amount"),
            code="parameter_missing",
        )
    if exact < 0:
        raise invalid(
            f"Invalid {p.name('unit_amount_decimal')}: must be >= 0",
            param=p.name("unit_amount_decimal"),
        )
    return exact


def _price_product(ctx: Ctx, p: Params) -> str:
    data = p.nested("product_data")
    product_id = p.text("product")
    if data is not None and product_id:
        raise invalid(
            "You may only specify one of these parameters: product, product_data.",
            param="product_data",
        )
    if data is not None:
        return str(_new_product(ctx, data, custom_id=False)["id"])
    if not product_id:
        raise invalid("Missing required param: product.", param="product", code="parameter_missing")
    ctx.store.get("product", product_id, "product")
    return product_id


def create_price(ctx: Ctx, p: Params) -> JsonDict:
    currency = _currency(p)
    amount = _unit_amount(p)
    recurring = _recurring(ctx, p)
    billing_scheme = p.choice("billing_scheme", ("per_unit",)) or "per_unit"
    lookup_key = p.text("lookup_key") or None
    nickname, active = p.text("nickname") or None, p.boolean("active")
    tax_behavior = p.choice("tax_behavior", TAX_BEHAVIOURS) or "unspecified"
    metadata = p.metadata()
    product_id = _price_product(ctx, p)
    p.finish()
    price = _new_price(ctx, currency, product_id, amount, recurring=recurring)
    price.update(
        active=active is not False,
        billing_scheme=billing_scheme,
        lookup_key=lookup_key,
        metadata=apply_metadata({}, metadata),
        nickname=nickname,
        tax_behavior=tax_behavior,
    )
    ctx.store.add("price", price)
    ctx.emit("price.created", price)
    return ctx.render(price)


def _new_price(
    ctx: Ctx, currency: str, product_id: str, amount: Decimal, *, recurring: JsonDict | None
) -> JsonDict:
    integral = amount == amount.to_integral_value()
    return {
        "id": ctx.store.new_id("price"),
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": ctx.server.now(),
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": None,
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": int(amount) if integral else None,
        "unit_amount_decimal": decimal_text(amount),
    }


def inline_price(ctx: Ctx, data: Params) -> JsonDict:
    """The Price Stripe generates from a `price_data` hash: a one-time price of an
    existing product with its own id, which the item (and its invoice line) names
    and `GET /v1/prices/:id` serves. It cannot be used again: it is inactive, and
    the price list leaves it out (the SDK's `Price.list` docstring: "excluding
    inline prices"). No `price.created` is published for it."""
    currency = _currency(data)
    product_id = data.text("product", required=True)
    assert product_id is not None
    ctx.store.get("product", product_id, data.name("product"))
    amount = _unit_amount(data)
    tax_behavior = data.choice("tax_behavior", TAX_BEHAVIOURS) or "unspecified"
    price = _new_price(ctx, currency, product_id, amount, recurring=None)
    price.update(active=False, tax_behavior=tax_behavior, _inline=True)
    return ctx.store.add("price", price)


def retrieve_price(ctx: Ctx, p: Params, price_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get("price", price_id))


def update_price(ctx: Ctx, p: Params, price_id: str) -> JsonDict:
    price = ctx.store.get("price", price_id)
    before = ctx.render(price)
    changes: dict[str, Any] = {}
    for key in ("nickname", "lookup_key"):
        given, value = p.optional_text(key)
        if given:
            changes[key] = value
    active = p.boolean("active")
    if active is not None:
        changes["active"] = active
    tax_behavior = p.choice("tax_behavior", TAX_BEHAVIOURS)
    if tax_behavior:
        changes["tax_behavior"] = tax_behavior
    metadata = p.metadata()
    p.finish()
    price.update(changes)
    price["metadata"] = apply_metadata(price["metadata"], metadata)
    ctx.emit_updated("price.updated", price, before)
    return ctx.render(price)


def list_prices(ctx: Ctx, p: Params) -> JsonDict:
    active = p.boolean("active")
    product = p.text("product")
    currency = p.text("currency")
    kind = p.choice("type", ("one_time", "recurring"))
    lookup_keys = p.strings("lookup_keys")
    created = range_filter(p, "created")
    found = [
        x
        for x in ctx.store.all("price")
        if not x.get("_inline")
        and (active is None or x["active"] == active)
        and (product is None or x["product"] == product)
        and (currency is None or x["currency"] == currency.lower())
        and (kind is None or x["type"] == kind)
        and (lookup_keys is None or x["lookup_key"] in lookup_keys)
        and created(x["created"])
    ]
    result = list_response(ctx, p, newest_first(found), "/v1/prices")
    p.finish()
    return result


# Tax rates --------------------------------------------------------------------------


@renders("tax_rate")
def render_tax_rate(ctx: Ctx, rate: JsonDict) -> JsonDict:
    served = public(rate)
    percentage = json_number(Decimal(rate["_percentage"]))
    served["percentage"] = percentage
    served["effective_percentage"] = percentage
    return served


def tax_percentage(rate: JsonDict) -> Decimal:
    return Decimal(rate["_percentage"])


def create_tax_rate(ctx: Ctx, p: Params) -> JsonDict:
    percentage = p.decimal("percentage", required=True, max_places=4)
    assert percentage is not None
    if not Decimal(0) <= percentage <= Decimal(100):
        raise invalid("Invalid percentage: must be between 0 and 100", param="percentage")
    inclusive = p.boolean("inclusive")
    if inclusive is None:
        raise invalid(
            "Missing required param: inclusive.", param="inclusive", code="parameter_missing"
        )
    if inclusive:
        raise invalid(
            "The sandbox supports exclusive tax rates only (inclusive=false).", param="inclusive"
        )
    rate = {
        "id": ctx.store.new_id("txr"),
        "object": "tax_rate",
        "active": p.boolean("active") is not False,
        "country": p.text("country") or None,
        "created": ctx.server.now(),
        "description": p.text("description") or None,
        "display_name": p.text("display_name", required=True),
        "effective_percentage": None,
        "flat_amount": None,
        "inclusive": False,
        "jurisdiction": p.text("jurisdiction") or None,
        "jurisdiction_level": None,
        "livemode": False,
        "metadata": apply_metadata({}, p.metadata()),
        "percentage": None,
        "rate_type": "percentage",
        "state": p.text("state") or None,
        "tax_type": p.text("tax_type") or None,
        "_percentage": str(percentage),
    }
    p.finish()
    ctx.store.add("tax_rate", rate)
    ctx.emit("tax_rate.created", rate)
    return ctx.render(rate)


def retrieve_tax_rate(ctx: Ctx, p: Params, rate_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get("tax_rate", rate_id))


def update_tax_rate(ctx: Ctx, p: Params, rate_id: str) -> JsonDict:
    rate = ctx.store.get("tax_rate", rate_id)
    before = ctx.render(rate)
    active = p.boolean("active")
    display_name = p.text("display_name")
    metadata = p.metadata()
    p.finish()
    if active is not None:
        rate["active"] = active
    if display_name:
        rate["display_name"] = display_name
    rate["metadata"] = apply_metadata(rate["metadata"], metadata)
    ctx.emit_updated("tax_rate.updated", rate, before)
    return ctx.render(rate)


def list_tax_rates(ctx: Ctx, p: Params) -> JsonDict:
    active = p.boolean("active")
    found = [r for r in ctx.store.all("tax_rate") if active is None or r["active"] == active]
    result = list_response(ctx, p, newest_first(found), "/v1/tax_rates")
    p.finish()
    return result


def active_tax_rates(ctx: Ctx, ids: list[str], param: str) -> list[str]:
    for rate_id in ids:
        rate = ctx.store.get("tax_rate", rate_id, param)
        if not rate["active"]:
            raise invalid(f"Tax rate {rate_id} is inactive.", param=param)
    return ids


ROUTES: list[Route] = [
    route("POST", "/v1/products", create_product),
    route("GET", "/v1/products", list_products),
    route("GET", "/v1/products/{id}", retrieve_product),
    route("POST", "/v1/products/{id}", update_product),
    route("POST", "/v1/prices", create_price),
    route("GET", "/v1/prices", list_prices),
    route("GET", "/v1/prices/{id}", retrieve_price),
    route("POST", "/v1/prices/{id}", update_price),
    route("POST", "/v1/tax_rates", create_tax_rate),
    route("GET", "/v1/tax_rates", list_tax_rates),
    route("GET", "/v1/tax_rates/{id}", retrieve_tax_rate),
    route("POST", "/v1/tax_rates/{id}", update_tax_rate),
]
