"""Customers, payment methods, products, prices and tax rates: updates that
unset fields, the list filters billtrail uses, and Stripe's habit of leaving
test-clock customers out of lists unless the clock is asked for."""

from __future__ import annotations

import pytest
import stripe


def test_customer_update_sets_and_unsets_fields_and_metadata(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create(
        {"name": "Acme", "email": "ap@acme.example", "metadata": {"entity": "e-1", "tier": "gold"}}
    )
    updated = stripe_client.v1.customers.update(
        customer.id, {"email": "", "metadata": {"tier": "", "region": "eu"}, "name": "Acme Ltd"}
    )
    assert (updated.name, updated.email) == ("Acme Ltd", None)
    assert updated.metadata.to_dict() == {"entity": "e-1", "region": "eu"}
    cleared = stripe_client.v1.customers.update(customer.id, {"metadata": ""})  # type: ignore[typeddict-item]
    assert cleared.metadata.to_dict() == {}


def test_customers_on_a_test_clock_are_listed_only_for_that_clock(
    stripe_client: stripe.StripeClient,
) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": 1767225600})
    simulated = stripe_client.v1.customers.create({"test_clock": clock.id})
    real = stripe_client.v1.customers.create()
    assert [c.id for c in stripe_client.v1.customers.list().data] == [real.id]
    assert [c.id for c in stripe_client.v1.customers.list({"test_clock": clock.id}).data] == [
        simulated.id
    ]
    assert simulated.created == 1767225600


def test_payment_methods_attach_list_default_and_detach(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    visa = stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    assert (visa.customer, visa.card.last4, visa.card.brand) == (customer.id, "4242", "visa")
    stripe_client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": visa.id}}
    )
    listed = stripe_client.v1.customers.payment_methods.list(customer.id)
    assert [pm.id for pm in listed.data] == [visa.id]
    detached = stripe_client.v1.payment_methods.detach(visa.id)
    assert detached.customer is None
    again = stripe_client.v1.customers.retrieve(customer.id)
    assert again.invoice_settings.default_payment_method is None
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.customers.update(
            customer.id, {"invoice_settings": {"default_payment_method": visa.id}}
        )


def test_products_and_prices_update_and_filter(stripe_client: stripe.StripeClient) -> None:
    product = stripe_client.v1.products.create({"name": "Calls", "description": "Per call"})
    price = stripe_client.v1.prices.create(
        {"product": product.id, "currency": "EUR", "unit_amount": 3, "lookup_key": "calls-v1"}
    )
    other = stripe_client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 4}
    )
    assert (price.currency, price.type, price.recurring) == ("eur", "one_time", None)
    renamed = stripe_client.v1.products.update(
        product.id, {"name": "Calls handled", "description": "", "default_price": price.id}
    )
    assert (renamed.name, renamed.description, renamed.default_price) == (
        "Calls handled",
        None,
        price.id,
    )
    retired = stripe_client.v1.prices.update(other.id, {"active": False, "nickname": "old"})
    assert (retired.active, retired.nickname) == (False, "old")
    active = stripe_client.v1.prices.list({"product": product.id, "active": True}).data
    assert [p.id for p in active] == [price.id]
    by_key = stripe_client.v1.prices.list({"lookup_keys": ["calls-v1"]}).data
    assert [p.id for p in by_key] == [price.id]
    with pytest.raises(stripe.InvalidRequestError) as both:
        stripe_client.v1.prices.create(
            {"product": product.id, "currency": "usd", "unit_amount": 1, "unit_amount_decimal": "1"}
        )
    assert both.value.param == "unit_amount_decimal"


def test_tax_rates_are_exclusive_and_can_be_archived(stripe_client: stripe.StripeClient) -> None:
    vat = stripe_client.v1.tax_rates.create(
        {"display_name": "VAT", "percentage": 7.5, "inclusive": False, "country": "DE"}
    )
    assert (vat.percentage, vat.inclusive, vat.country) == (7.5, False, "DE")
    archived = stripe_client.v1.tax_rates.update(vat.id, {"active": False})
    assert stripe_client.v1.tax_rates.list({"active": True}).data == []
    assert archived.active is False
    with pytest.raises(stripe.InvalidRequestError) as inclusive:
        stripe_client.v1.tax_rates.create(
            {"display_name": "VAT", "percentage": 20, "inclusive": True}
        )
    assert inclusive.value.param == "inclusive"
    customer = stripe_client.v1.customers.create()
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.create({"customer": customer.id, "default_tax_rates": [vat.id]})
