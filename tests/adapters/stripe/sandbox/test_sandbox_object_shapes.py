"""Every resource type the sandbox serves carries at least the keys of Stripe's
own example of that resource (`shared/stripe/fixtures3.json`), so code written
against the sandbox reads the same fields from Stripe. In a clone without the
shared folder the expected keys come from the installed SDK's annotations on
its resource classes; a second test checks that path too, wherever it runs."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import stripe
from stripe._object_classes import OBJECT_CLASSES

from adapters.stripe.sandbox.store import SERVED_OBJECTS

FIXTURES = Path(__file__).resolve().parents[5] / "shared" / "stripe" / "fixtures3.json"

# Keys an SDK class declares that Stripe returns only on request (expand/include),
# only on deleted objects, only in one response, or only for other payment method
# types; the fixture omits them for the same reason.
CONDITIONAL: dict[str, set[str]] = {
    "customer": {
        "cash_balance",
        "invoice_credit_balance",
        "sources",
        "subscriptions",
        "tax",
        "tax_ids",
    },
    "invoice": {"confirmation_secret", "payments"},
    "price": {"currency_options", "tiers"},
    "plan": {"tiers"},
    "webhook_endpoint": {"secret"},
}


def annotated_keys(resource: str) -> set[str]:
    if resource.startswith("deleted_"):
        return {"id", "object", "deleted"}
    module, name = OBJECT_CLASSES[resource]
    cls = getattr(importlib.import_module(module), name)
    keys = {
        key
        for klass in cls.__mro__
        for key, hint in getattr(klass, "__annotations__", {}).items()
        if not key.startswith("_") and "ClassVar" not in str(hint)
    }
    if resource == "payment_method":
        keys = {k for k in keys if k == "card" or not _is_payment_method_type(cls, k)}
    return keys - {"deleted"} - CONDITIONAL.get(resource, set())


def _is_payment_method_type(cls: Any, key: str) -> bool:
    return key in str(cls.__annotations__.get("type", ""))


def fixture_keys() -> dict[str, set[str]] | None:
    if not FIXTURES.exists():
        return None
    resources = json.loads(FIXTURES.read_text())["resources"]
    return {name: set(example) for name, example in resources.items()}


def raw(obj: Any) -> dict[str, Any]:
    """The JSON the sandbox sent, before the SDK turned it into objects."""
    assert obj.last_response is not None
    data: dict[str, Any] = obj.last_response.data
    return data


def served_objects(client: stripe.StripeClient) -> dict[str, dict[str, Any]]:
    """One of every resource type the sandbox serves, as served."""
    served: dict[str, dict[str, Any]] = {}
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": 1767225600})
    served["test_helpers.test_clock"] = raw(clock)
    customer = client.v1.customers.create(
        {
            "test_clock": clock.id,
            "email": "shapes@example.com",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    served["customer"] = raw(customer)
    served["payment_method"] = raw(
        client.v1.payment_methods.retrieve(customer.invoice_settings.default_payment_method)
    )
    meter = client.v1.billing.meters.create(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    served["billing.meter"] = raw(meter)
    product = client.v1.products.create({"name": "Calls"})
    served["product"] = raw(product)
    price = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount_decimal": "0.5",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    served["price"] = raw(price)
    fee = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
        }
    )
    vat = client.v1.tax_rates.create({"display_name": "VAT", "percentage": 20, "inclusive": False})
    served["tax_rate"] = raw(vat)
    served["billing.meter_event"] = raw(
        client.v1.billing.meter_events.create(
            {
                "event_name": "calls",
                "identifier": "shape-1",
                "payload": {"stripe_customer_id": customer.id, "value": "3"},
            }
        )
    )
    client.v1.billing.meter_events.create(
        {
            "event_name": "calls",
            "identifier": "shape-2",
            "payload": {"stripe_customer_id": customer.id, "value": "4"},
        }
    )
    served["billing.meter_event_adjustment"] = raw(
        client.v1.billing.meter_event_adjustments.create(
            {"event_name": "calls", "type": "cancel", "cancel": {"identifier": "shape-2"}}
        )
    )
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {"customer": customer.id, "start_time": 1767225600 - 3600, "end_time": 1767225600 + 3600},
    )
    served["billing.meter_event_summary"] = raw(summaries)["data"][0]
    subscription = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": fee.id}, {"price": price.id}],
            "default_tax_rates": [vat.id],
        }
    )
    served["subscription"] = raw(subscription)
    item = raw(subscription)["items"]["data"][0]
    served["subscription_item"] = item
    served["plan"] = item["plan"]
    invoice_item = client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 700, "currency": "usd"}
    )
    served["invoiceitem"] = raw(invoice_item)
    invoice = client.v1.invoices.retrieve(subscription.latest_invoice)
    served["invoice"] = raw(invoice)
    served["line_item"] = raw(client.v1.invoices.line_items.list(invoice.id))["data"][0]
    note = client.v1.credit_notes.create({"invoice": invoice.id, "amount": 100})
    served["credit_note"] = raw(note)
    served["credit_note_line_item"] = raw(note)["lines"]["data"][0]
    hook = client.v1.webhook_endpoints.create(
        {"url": "https://billtrail.example/hook", "enabled_events": ["*"]}
    )
    served["webhook_endpoint"] = raw(client.v1.webhook_endpoints.retrieve(hook.id))
    served["event"] = raw(client.v1.events.list({"limit": 1}))["data"][0]
    served["deleted_webhook_endpoint"] = raw(client.v1.webhook_endpoints.delete(hook.id))
    served["deleted_invoiceitem"] = raw(client.v1.invoice_items.delete(invoice_item.id))
    draft = client.v1.invoices.create({"customer": customer.id})
    served["deleted_invoice"] = raw(client.v1.invoices.delete(draft.id))
    served["deleted_customer"] = raw(client.v1.customers.delete(customer.id))
    served["deleted_test_helpers.test_clock"] = raw(
        client.v1.test_helpers.test_clocks.delete(clock.id)
    )
    return served


@pytest.fixture
def served(stripe_client: stripe.StripeClient) -> dict[str, Any]:
    return served_objects(stripe_client)


def test_every_served_resource_type_has_the_keys_of_its_stripe_example(
    served: dict[str, dict[str, Any]],
) -> None:
    assert sorted(served) == sorted(SERVED_OBJECTS)
    expected = fixture_keys()
    missing = {
        resource: sorted((expected[resource] if expected else annotated_keys(resource)) - set(obj))
        for resource, obj in served.items()
    }
    assert {r: keys for r, keys in missing.items() if keys} == {}
    assert all(
        obj["object"] == resource.removeprefix("deleted_") for resource, obj in served.items()
    )


def test_served_resources_also_have_the_fields_the_sdk_declares(
    served: dict[str, dict[str, Any]],
) -> None:
    missing = {
        resource: sorted(annotated_keys(resource) - set(obj)) for resource, obj in served.items()
    }
    assert {r: keys for r, keys in missing.items() if keys} == {}
