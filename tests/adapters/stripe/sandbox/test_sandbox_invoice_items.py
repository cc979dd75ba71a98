"""Invoice items on their invoice lines, as Stripe has them: the line of an item
carries the item's metadata (and follows it while the invoice is a draft), and an
item created with `price_data` gets an inline Price of its own, which the item and
its line name in `pricing.price_details` and `GET /v1/prices/:id` serves, but which
no price list shows. Through the official SDK only."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import stripe

from .test_sandbox_object_shapes import annotated_keys, fixture_keys, raw


def calls_product(client: stripe.StripeClient) -> Any:
    return client.v1.products.create({"name": "Calls"})


def usage_item(client: stripe.StripeClient, customer_id: str, **extra: Any) -> Any:
    """240 calls at 1.1 cents, as billtrail's corrections bill a replacement."""
    product = extra.pop("product", None) or calls_product(client)
    return client.v1.invoice_items.create(
        {
            "customer": customer_id,
            "currency": "eur",
            "quantity": 240,
            "price_data": {
                "currency": "eur",
                "product": product.id,
                "unit_amount_decimal": Decimal("1.1"),
            },
            "metadata": {"billtrail_kind": "usage"},
            **extra,
        }
    )


def test_a_line_pulled_from_an_invoice_item_carries_the_items_metadata(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    pending = stripe_client.v1.invoice_items.create(
        {
            "customer": customer.id,
            "amount": 700,
            "currency": "usd",
            "metadata": {"billtrail_kind": "fee", "order": "42"},
        }
    )
    invoice = stripe_client.v1.invoices.create(
        {"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    direct = stripe_client.v1.invoice_items.create(
        {
            "customer": customer.id,
            "invoice": invoice.id,
            "amount": -100,
            "currency": "usd",
            "metadata": {"billtrail_kind": "adjustment"},
        }
    )
    lines = stripe_client.v1.invoices.line_items.list(invoice.id).data
    by_item = {line.parent.invoice_item_details.invoice_item: line for line in lines}
    assert by_item[pending.id].metadata.to_dict() == {"billtrail_kind": "fee", "order": "42"}
    assert by_item[direct.id].metadata.to_dict() == {"billtrail_kind": "adjustment"}

    # The line follows its item's metadata while the invoice is a draft.
    stripe_client.v1.invoice_items.update(
        pending.id, {"metadata": {"order": "", "billtrail_kind": "usage"}}
    )
    embedded = stripe_client.v1.invoices.retrieve(invoice.id).lines.data
    assert {line.id: line.metadata.to_dict() for line in embedded} == {
        by_item[pending.id].id: {"billtrail_kind": "usage"},
        by_item[direct.id].id: {"billtrail_kind": "adjustment"},
    }


def test_an_item_without_metadata_gives_its_line_empty_metadata(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    stripe_client.v1.invoice_items.create({"customer": customer.id, "amount": 700})
    invoice = stripe_client.v1.invoices.create(
        {"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    [line] = invoice.lines.data
    assert raw(invoice)["lines"]["data"][0]["metadata"] == {}
    assert line.amount == 700


def test_price_data_makes_an_inline_price_that_the_item_and_its_line_name(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    invoice = stripe_client.v1.invoices.create({"customer": customer.id, "currency": "eur"})
    product = calls_product(stripe_client)
    item = usage_item(stripe_client, customer.id, invoice=invoice.id, product=product)

    assert item.amount == 264  # 240 x 1.1 cents
    assert item.pricing is not None
    assert item.pricing.price_details is not None
    price_id = item.pricing.price_details.price
    assert isinstance(price_id, str)
    assert price_id.startswith("price_")
    assert item.pricing.price_details.product == product.id
    assert item.pricing.unit_amount_decimal == Decimal("1.1")
    assert item.description == "Calls"  # the product's name when none is given

    price = stripe_client.v1.prices.retrieve(price_id)
    assert (price.product, price.currency, price.type, price.recurring) == (
        product.id,
        "eur",
        "one_time",
        None,
    )
    assert (price.unit_amount, price.unit_amount_decimal) == (None, Decimal("1.1"))
    assert price.active is False  # generated for this item, not for reuse

    [line] = stripe_client.v1.invoices.retrieve(invoice.id).lines.data
    assert line.parent is not None
    assert line.parent.invoice_item_details is not None
    assert line.parent.invoice_item_details.invoice_item == item.id
    assert line.pricing is not None
    assert line.pricing.price_details is not None
    assert line.pricing.price_details.price == price_id
    assert line.pricing.price_details.product == product.id
    assert line.pricing.unit_amount_decimal == Decimal("1.1")
    assert (line.quantity, line.amount) == (240, 264)
    assert line.metadata.to_dict() == {"billtrail_kind": "usage"}

    expanded = stripe_client.v1.invoices.retrieve(
        invoice.id, {"expand": ["lines.data.pricing.price_details.price"]}
    )
    [line] = expanded.lines.data
    assert line.pricing is not None
    assert line.pricing.price_details is not None
    assert isinstance(line.pricing.price_details.price, stripe.Price)
    assert line.pricing.price_details.price.id == price_id


def test_each_item_gets_its_own_inline_price_and_no_price_list_shows_them(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    product = calls_product(stripe_client)
    listed = stripe_client.v1.prices.create(
        {"product": product.id, "currency": "eur", "unit_amount": 100}
    )
    first = usage_item(stripe_client, customer.id, product=product)
    second = usage_item(stripe_client, customer.id, product=product)
    assert first.pricing is not None
    assert first.pricing.price_details is not None
    assert second.pricing is not None
    assert second.pricing.price_details is not None
    inline = {first.pricing.price_details.price, second.pricing.price_details.price}
    assert len(inline) == 2

    for params in ({}, {"product": product.id}, {"active": False}, {"type": "one_time"}):
        found = {p.id for p in stripe_client.v1.prices.list({"limit": 100, **params}).data}
        assert not found & inline, params
    assert listed.id in {p.id for p in stripe_client.v1.prices.list({"limit": 100}).data}


@pytest.mark.parametrize(
    ("price_data", "param", "code"),
    [
        ({"currency": "eur"}, "price_data[unit_amount]", "parameter_missing"),
        (
            {"currency": "eur", "unit_amount": 1, "unit_amount_decimal": "1.1"},
            "price_data[unit_amount_decimal]",
            None,
        ),
        ({"currency": "eur", "unit_amount_decimal": "-1"}, "price_data[unit_amount_decimal]", None),
        ({"unit_amount": 1}, "price_data[currency]", "parameter_missing"),
        ({"currency": "eur", "unit_amount": 1, "colour": "red"}, "price_data[colour]", None),
    ],
)
def test_bad_price_data_is_refused_and_leaves_no_item(
    stripe_client: stripe.StripeClient,
    price_data: dict[str, Any],
    param: str,
    code: str | None,
) -> None:
    customer = stripe_client.v1.customers.create()
    product = calls_product(stripe_client)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.invoice_items.create(
            {
                "customer": customer.id,
                "price_data": {"product": product.id, **price_data},  # type: ignore[typeddict-item]
            }
        )
    assert refused.value.http_status == 400
    assert refused.value.param == param
    if code is not None:
        assert refused.value.code == code
    assert stripe_client.v1.invoice_items.list({"customer": customer.id}).data == []


def test_price_data_naming_no_product_is_a_missing_resource(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.invoice_items.create(
            {
                "customer": customer.id,
                "price_data": {"currency": "eur", "product": "prod_nope", "unit_amount": 1},
            }
        )
    assert (refused.value.http_status, refused.value.code, refused.value.param) == (
        404,
        "resource_missing",
        "price_data[product]",
    )


def test_a_price_data_item_its_line_and_its_price_have_stripes_keys(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    invoice = stripe_client.v1.invoices.create({"customer": customer.id, "currency": "eur"})
    item = usage_item(stripe_client, customer.id, invoice=invoice.id)
    line = raw(stripe_client.v1.invoices.line_items.list(invoice.id))["data"][0]
    assert item.pricing is not None
    assert item.pricing.price_details is not None
    price = raw(stripe_client.v1.prices.retrieve(str(item.pricing.price_details.price)))
    expected = fixture_keys()
    for resource, served in (("invoiceitem", raw(item)), ("line_item", line), ("price", price)):
        keys = expected[resource] if expected else annotated_keys(resource)
        assert keys - set(served) == set(), resource
    assert (
        set(raw(item)["pricing"])
        == set(line["pricing"])
        == {
            "type",
            "price_details",
            "unit_amount_decimal",
        }
    )


def test_a_subscription_line_reflects_the_subscriptions_current_metadata(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    fee = stripe_client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 5000,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Monthly fee"},
        }
    )
    subscription = stripe_client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": fee.id}],
            "metadata": {"billtrail_entity_id": "acme"},
        }
    )
    invoice_id = str(subscription.latest_invoice)
    [line] = stripe_client.v1.invoices.retrieve(invoice_id).lines.data
    assert line.metadata.to_dict() == {"billtrail_entity_id": "acme"}
    stripe_client.v1.subscriptions.update(subscription.id, {"metadata": {"plan": "gold"}})
    [line] = stripe_client.v1.invoices.line_items.list(invoice_id).data
    assert line.metadata.to_dict() == {"billtrail_entity_id": "acme", "plan": "gold"}
