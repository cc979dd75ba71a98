"""Customers and their payment methods.

Stripe's test payment-method tokens (`pm_card_visa`...) are accepted wherever
a payment method is: `pm_card_visa` and `pm_card_mastercard` pay;
`pm_card_chargeCustomerFail` and `pm_card_chargeDeclined` attach (also as a
customer's default) but every charge with them is declined. Real Stripe declines
`pm_card_chargeDeclined` already at attach time; the sandbox deliberately lets it
attach, because the issue billtrail is built against names it as the failing
default card (see the README's known differences)."""

from __future__ import annotations

from typing import Any

from adapters.stripe.sandbox.context import Ctx, public, renders
from adapters.stripe.sandbox.errors import JsonDict, invalid, no_such
from adapters.stripe.sandbox.forms import Params, apply_metadata
from adapters.stripe.sandbox.pagination import list_response, newest_first, range_filter
from adapters.stripe.sandbox.routing import Route, route

# token -> (brand, last4, behaviour when charged)
TEST_CARDS: dict[str, tuple[str, str, str]] = {
    "pm_card_visa": ("visa", "4242", "pays"),
    "pm_card_mastercard": ("mastercard", "4444", "pays"),
    "pm_card_chargeCustomerFail": ("visa", "0341", "declines_charges"),
    # Stripe refuses this one on attach; the sandbox attaches it (see the module docstring).
    "pm_card_chargeDeclined": ("visa", "0002", "declines_charges"),
}
CUSTOMER_FIELDS = ("email", "name", "description", "phone")
TAX_EXEMPT = ("none", "exempt", "reverse")


def live_customer(ctx: Ctx, customer_id: str | None, param: str = "customer") -> JsonDict:
    if not customer_id:
        raise invalid("Missing required param: customer.", param=param, code="parameter_missing")
    customer = ctx.store.get("customer", customer_id, param)
    if customer.get("_deleted"):
        raise no_such("customer", customer_id, param)
    return customer


# Payment methods ------------------------------------------------------------------


def _card(brand: str, last4: str) -> JsonDict:
    return {
        "brand": brand,
        "checks": {
            "address_line1_check": None,
            "address_postal_code_check": None,
            "cvc_check": "pass",
        },
        "country": "US",
        "display_brand": brand,
        "exp_month": 12,
        "exp_year": 2034,
        "fingerprint": f"sbx{brand[:3]}{last4}",
        "funding": "credit",
        "generated_from": None,
        "last4": last4,
        "networks": {"available": [brand], "preferred": None},
        "three_d_secure_usage": {"supported": True},
        "wallet": None,
        "regulated_status": "unregulated",
    }


def _new_payment_method(ctx: Ctx, token: str, customer: JsonDict | None) -> JsonDict:
    brand, last4, behaviour = TEST_CARDS[token]
    pm = {
        "id": ctx.store.new_id("pm"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": {
                k: None for k in ("city", "country", "line1", "line2", "postal_code", "state")
            },
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
        },
        "card": _card(brand, last4),
        "created": ctx.now_of(customer) if customer else ctx.server.now(),
        "customer": customer["id"] if customer else None,
        "customer_account": None,
        "livemode": False,
        "metadata": {},
        "radar_options": None,
        "type": "card",
        "_behaviour": behaviour,
        "_token": token,
    }
    return ctx.store.add("payment_method", pm)


def attach(ctx: Ctx, reference: str, customer: JsonDict, param: str) -> JsonDict:
    """Attach a test token (a new payment method) or an existing unattached one."""
    if reference in TEST_CARDS:
        pm = _new_payment_method(ctx, reference, customer)
    else:
        pm = ctx.store.get("payment_method", reference, param)
        if pm["customer"] not in (None, customer["id"]):
            raise invalid(
                "The payment method you provided has already been attached to another customer.",
                param=param,
            )
        pm["customer"] = customer["id"]
    ctx.emit("payment_method.attached", pm)
    return pm


def payment_method_for_charge(ctx: Ctx, reference: str, customer: JsonDict, param: str) -> JsonDict:
    """An explicit payment method for one charge: a test token (not attached) or
    one of the customer's payment methods."""
    if reference in TEST_CARDS:
        return _new_payment_method(ctx, reference, None)
    pm = ctx.store.get("payment_method", reference, param)
    if pm["customer"] != customer["id"]:
        raise invalid(
            f"The customer does not have a payment method with the ID {reference}. "
            "The payment method must be attached to the customer.",
            param=param,
        )
    return pm


def charge_succeeds(pm: JsonDict | None) -> bool:
    return pm is not None and pm.get("_behaviour") == "pays"


def attach_payment_method(ctx: Ctx, p: Params, pm_id: str) -> JsonDict:
    customer = live_customer(ctx, p.text("customer", required=True))
    p.finish()
    return ctx.render(attach(ctx, pm_id, customer, "payment_method"))


def detach_payment_method(ctx: Ctx, p: Params, pm_id: str) -> JsonDict:
    p.finish()
    pm = ctx.store.get("payment_method", pm_id, "payment_method")
    if pm["customer"] is None:
        raise invalid(f"The payment method {pm_id} is not attached to a customer.")
    customer = ctx.store.get("customer", pm["customer"])
    if customer["invoice_settings"]["default_payment_method"] == pm_id:
        customer["invoice_settings"]["default_payment_method"] = None
    pm["customer"] = None
    ctx.emit("payment_method.detached", pm)
    return ctx.render(pm)


def retrieve_payment_method(ctx: Ctx, p: Params, pm_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get("payment_method", pm_id, "payment_method"))


def list_payment_methods(ctx: Ctx, p: Params, customer_id: str | None = None) -> JsonDict:
    customer_id = customer_id or p.text("customer", required=True)
    live_customer(ctx, customer_id)
    p.choice("type", ("card",))
    found = [pm for pm in ctx.store.all("payment_method") if pm["customer"] == customer_id]
    url = f"/v1/customers/{customer_id}/payment_methods"
    result = list_response(ctx, p, newest_first(found), url)
    p.finish()
    return result


# Customers --------------------------------------------------------------------------


@renders("customer")
def render_customer(ctx: Ctx, customer: JsonDict) -> JsonDict:
    if customer.get("_deleted"):
        return {"id": customer["id"], "object": "customer", "deleted": True}
    return public(customer)


def _address(p: Params) -> JsonDict | None:
    given = p.nested("address")
    if given is None:
        return None
    keys = ("city", "country", "line1", "line2", "postal_code", "state")
    return {k: given.text(k) or None for k in keys}


def _invoice_prefix(customer_id: str) -> str:
    return "".join(c for c in customer_id.split("_", 1)[1].upper() if c.isalnum())[:8]


def create_customer(ctx: Ctx, p: Params) -> JsonDict:
    clock_id = p.text("test_clock")
    if clock_id:
        clock = ctx.store.get("test_helpers.test_clock", clock_id, "test_clock")
        if clock["status"] != "ready":
            raise invalid(
                "The test clock is advancing; wait until its status is ready.", param="test_clock"
            )
    fields = {k: p.text(k) or None for k in CUSTOMER_FIELDS}
    customer_id = ctx.store.new_id("cus")
    customer: JsonDict = {
        "id": customer_id,
        "object": "customer",
        "address": _address(p),
        "balance": p.integer("balance") or 0,
        "business_name": None,
        "created": ctx.now(clock_id),
        "currency": None,
        "customer_account": None,
        "default_source": None,
        "delinquent": False,
        "discount": None,
        "individual_name": None,
        "invoice_prefix": p.text("invoice_prefix") or _invoice_prefix(customer_id),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": apply_metadata({}, p.metadata()),
        "next_invoice_sequence": 1,
        "preferred_locales": p.strings("preferred_locales") or [],
        "shipping": None,
        "tax_exempt": p.choice("tax_exempt", TAX_EXEMPT) or "none",
        "test_clock": clock_id or None,
        **fields,
    }
    token = p.text("payment_method")
    settings = p.nested("invoice_settings")
    default_pm = settings.text("default_payment_method") if settings else None
    p.finish()
    ctx.store.add("customer", customer)
    ctx.emit("customer.created", customer)
    attached = attach(ctx, token, customer, "payment_method") if token else None
    if default_pm:
        _set_default_payment_method(ctx, customer, default_pm, attached, token)
    return ctx.render(customer)


def _set_default_payment_method(
    ctx: Ctx, customer: JsonDict, reference: str, attached: JsonDict | None, token: str | None
) -> None:
    param = "invoice_settings[default_payment_method]"
    if attached is not None and reference == token:
        pm = attached
    elif reference in TEST_CARDS:
        pm = attach(ctx, reference, customer, param)
    else:
        pm = ctx.store.get("payment_method", reference, param)
        if pm["customer"] != customer["id"]:
            raise invalid(
                f"The customer does not have a payment method with the ID "
                f"{reference}. The payment method must be attached to the customer.",
                param=param,
            )
    customer["invoice_settings"]["default_payment_method"] = pm["id"]


def retrieve_customer(ctx: Ctx, p: Params, customer_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get("customer", customer_id))


def update_customer(ctx: Ctx, p: Params, customer_id: str) -> JsonDict:
    customer = live_customer(ctx, customer_id, "id")
    before = ctx.render(customer)
    changes: dict[str, Any] = {}
    for key in CUSTOMER_FIELDS:
        given, value = p.optional_text(key)
        if given:
            changes[key] = value
    address = _address(p)
    if address is not None:
        changes["address"] = address
    balance = p.integer("balance")
    if balance is not None:
        changes["balance"] = balance
    tax_exempt = p.choice("tax_exempt", TAX_EXEMPT)
    if tax_exempt:
        changes["tax_exempt"] = tax_exempt
    locales = p.strings("preferred_locales")
    if locales is not None:
        changes["preferred_locales"] = locales
    metadata = p.metadata()
    settings = p.nested("invoice_settings")
    default_pm = settings.optional_text("default_payment_method") if settings else (False, None)
    p.finish()
    customer.update(changes)
    customer["metadata"] = apply_metadata(customer["metadata"], metadata)
    if default_pm[0]:
        if default_pm[1] is None:
            customer["invoice_settings"]["default_payment_method"] = None
        else:
            _set_default_payment_method(ctx, customer, default_pm[1], None, None)
    ctx.emit_updated("customer.updated", customer, before)
    return ctx.render(customer)


def delete_customer(ctx: Ctx, p: Params, customer_id: str) -> JsonDict:
    p.finish()
    customer = live_customer(ctx, customer_id, "id")
    # Subscriptions are built on customers, so this one call goes the other way.
    from adapters.stripe.sandbox.subscriptions import cancel_all_for_customer

    cancel_all_for_customer(ctx, customer)
    customer["_deleted"] = True
    ctx.emit("customer.deleted", customer)
    return ctx.render(customer)


def list_customers(ctx: Ctx, p: Params) -> JsonDict:
    email = p.text("email")
    clock_id = p.text("test_clock")
    created = range_filter(p, "created")
    found = [
        c
        for c in ctx.store.all("customer")
        if not c.get("_deleted")
        and (email is None or c["email"] == email)
        # Stripe leaves customers on test clocks out unless the clock is asked for.
        and c["test_clock"] == (clock_id or None)
        and created(c["created"])
    ]
    result = list_response(ctx, p, newest_first(found), "/v1/customers")
    p.finish()
    return result


ROUTES: list[Route] = [
    route("POST", "/v1/customers", create_customer),
    route("GET", "/v1/customers", list_customers),
    route("GET", "/v1/customers/{id}", retrieve_customer),
    route("POST", "/v1/customers/{id}", update_customer),
    route("DELETE", "/v1/customers/{id}", delete_customer),
    route(
        "GET",
        "/v1/customers/{id}/payment_methods",
        lambda ctx, p, cid: list_payment_methods(ctx, p, cid),
    ),
    route("GET", "/v1/payment_methods", list_payment_methods),
    route("GET", "/v1/payment_methods/{id}", retrieve_payment_method),
    route("POST", "/v1/payment_methods/{id}/attach", attach_payment_method),
    route("POST", "/v1/payment_methods/{id}/detach", detach_payment_method),
]
