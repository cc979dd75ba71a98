"""How the sandbox behaves as an API, beyond any one resource: idempotency keys,
lists, expansion, authentication, Stripe-shaped errors for bad requests (never a
crash), and bad requests changing nothing."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.stripe.sandbox import RunningSandbox, wait_until


def failing_customer(client: stripe.StripeClient) -> Any:
    customer = client.v1.customers.create(
        {
            "payment_method": "pm_card_chargeCustomerFail",
            "invoice_settings": {"default_payment_method": "pm_card_chargeCustomerFail"},
        }
    )
    return customer


def open_invoice(client: stripe.StripeClient, customer_id: str, amount: int = 2000) -> Any:
    client.v1.invoice_items.create({"customer": customer_id, "amount": amount, "currency": "usd"})
    invoice = client.v1.invoices.create(
        {"customer": customer_id, "pending_invoice_items_behavior": "include"}
    )
    return client.v1.invoices.finalize_invoice(invoice.id)


# Idempotency -------------------------------------------------------------------------


def test_replayed_response_is_marked_and_identical(stripe_client: stripe.StripeClient) -> None:
    first = stripe_client.v1.products.create({"name": "Calls"}, {"idempotency_key": "k-1"})
    again = stripe_client.v1.products.create({"name": "Calls"}, {"idempotency_key": "k-1"})
    assert again.to_dict() == first.to_dict()
    assert again.last_response is not None
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert len(stripe_client.v1.products.list().data) == 1


def test_a_declined_payment_is_replayed_without_charging_again(
    stripe_client: stripe.StripeClient,
) -> None:
    invoice = open_invoice(stripe_client, failing_customer(stripe_client).id)
    for _ in range(2):
        with pytest.raises(stripe.CardError) as declined:
            stripe_client.v1.invoices.pay(invoice.id, options={"idempotency_key": "pay-1"})
        assert declined.value.code == "card_declined"
    assert stripe_client.v1.invoices.retrieve(invoice.id).attempt_count == 1
    with pytest.raises(stripe.CardError):
        stripe_client.v1.invoices.pay(invoice.id, options={"idempotency_key": "pay-2"})
    assert stripe_client.v1.invoices.retrieve(invoice.id).attempt_count == 2


def test_a_request_refused_by_validation_does_not_use_up_its_key(
    stripe_client: stripe.StripeClient,
) -> None:
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.customers.create({"balance": "lots"}, {"idempotency_key": "k-2"})  # type: ignore[typeddict-item]
    customer = stripe_client.v1.customers.create({"name": "Ada"}, {"idempotency_key": "k-2"})
    assert customer.name == "Ada"


def test_a_key_still_executing_answers_409(
    sandbox: RunningSandbox, client_factory: Callable[..., stripe.StripeClient]
) -> None:
    slow, impatient = client_factory(retries=0), client_factory(retries=0)
    sandbox.control.add_latency(600, count=1, method="POST", path="/v1/customers")
    created: list[Any] = []
    first = threading.Thread(
        target=lambda: created.append(
            slow.v1.customers.create({"name": "Slow"}, {"idempotency_key": "k-3"})
        )
    )
    first.start()
    wait_until(lambda: sandbox.sandbox.idempotency.in_flight("k-3"), bool, timeout=5)
    with pytest.raises(stripe.APIError) as conflict:
        impatient.v1.customers.create({"name": "Slow"}, {"idempotency_key": "k-3"})
    first.join(timeout=10)
    assert conflict.value.http_status == 409
    # The SDK builds APIError without `code`; the parsed body still carries it.
    assert conflict.value.error is not None
    assert conflict.value.error.code == "idempotency_key_in_use"
    replay = impatient.v1.customers.create({"name": "Slow"}, {"idempotency_key": "k-3"})
    assert replay.id == created[0].id


def test_keys_are_forgotten_after_24_hours(
    sandbox: RunningSandbox, stripe_client: stripe.StripeClient
) -> None:
    stripe_client.v1.customers.create({"name": "Monday"}, {"idempotency_key": "k-4"})
    sandbox.control.advance_server_clock(25 * 3600)
    tuesday = stripe_client.v1.customers.create({"name": "Tuesday"}, {"idempotency_key": "k-4"})
    assert tuesday.name == "Tuesday"


# Lists and expansion ----------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 101])
def test_limit_outside_1_to_100_is_refused(stripe_client: stripe.StripeClient, limit: int) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.customers.list({"limit": limit})
    assert refused.value.param == "limit"


def test_both_cursors_or_an_unknown_cursor_are_refused(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    with pytest.raises(stripe.InvalidRequestError) as both:
        stripe_client.v1.customers.list(
            {"starting_after": customer.id, "ending_before": customer.id}
        )
    assert both.value.http_status == 400
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        stripe_client.v1.customers.list({"starting_after": "cus_gone"})
    assert (unknown.value.http_status, unknown.value.param) == (404, "starting_after")


def test_lists_filter_on_created_ranges(
    sandbox: RunningSandbox, stripe_client: stripe.StripeClient
) -> None:
    early = stripe_client.v1.products.create({"name": "Early"})
    sandbox.control.advance_server_clock(3600)
    late = stripe_client.v1.products.create({"name": "Late"})
    newer = stripe_client.v1.products.list({"created": {"gt": early.created}}).data
    older = stripe_client.v1.products.list({"created": {"lte": early.created}}).data
    exact = stripe_client.v1.products.list({"created": late.created}).data
    assert ([p.id for p in newer], [p.id for p in older], [p.id for p in exact]) == (
        [late.id],
        [early.id],
        [late.id],
    )


def test_expand_replaces_ids_with_objects_on_retrieve_and_list(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create({"email": "ada@example.com"})
    invoice = open_invoice(stripe_client, customer.id)
    one = stripe_client.v1.invoices.retrieve(invoice.id, {"expand": ["customer"]})
    assert one.customer.email == "ada@example.com"
    many = stripe_client.v1.invoices.list({"expand": ["data.customer"]})
    assert [i.customer.id for i in many.data] == [customer.id]
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.invoices.retrieve(invoice.id, {"expand": ["currency"]})
    assert refused.value.param == "expand"


# Authentication and errors ----------------------------------------------------------


def test_a_request_without_an_api_key_gets_401(
    client_factory: Callable[..., stripe.StripeClient],
) -> None:
    with pytest.raises(stripe.AuthenticationError) as refused:
        client_factory(api_key="").v1.customers.list()
    assert refused.value.http_status == 401
    assert "did not provide an API key" in str(refused.value.user_message)


def test_a_live_or_unknown_key_gets_401(
    client_factory: Callable[..., stripe.StripeClient],
) -> None:
    with pytest.raises(stripe.AuthenticationError) as refused:
        client_factory(api_key="sk_live_0123456789abcdef").v1.customers.list()
    message = str(refused.value.user_message)
    assert message.startswith("Invalid API Key provided: sk_live_")
    assert "0123456789ab" not in message


def test_an_unknown_url_gets_a_stripe_shaped_404(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.raw_request("get", "/v1/charges_of_the_light_brigade")
    assert refused.value.http_status == 404
    assert "Unrecognized request URL" in str(refused.value.user_message)


def test_a_refused_request_changes_nothing(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create()
    fee = stripe_client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 100,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Fee"},
        }
    )
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": fee.id}, {"price": "price_missing"}]}
        )
    assert stripe_client.v1.subscriptions.list({"customer": customer.id}).data == []
    assert stripe_client.v1.invoices.list().data == []
    assert [
        e.type
        for e in stripe_client.v1.events.list().data
        if "subscription" in e.type or e.type.startswith("invoice.")
    ] == []


def test_an_unknown_parameter_creates_nothing(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.raw_request(
            "post",
            "/v1/prices",
            currency="usd",
            unit_amount=100,
            product_data={"name": "Orphan"},
            colour="blue",
        )
    assert refused.value.code == "parameter_unknown"
    assert stripe_client.v1.products.list().data == []
    assert stripe_client.v1.prices.list().data == []


MALFORMED: list[dict[str, Any]] = [
    {"metadata": "not-a-hash"},
    {"metadata": "x", "metadata[a]": "b"},
    {"balance": "1e9999"},
    {"email": ["a", "b"]},
    {"name": "x" * 6000},
    {"invoice_settings": "flat"},
    {"preferred_locales": {"a": "b"}},
    {"test_clock": "clock_nope"},
    {"metadata[" + "k" * 60 + "]": "v"},
    {"expand": "nothing"},
]


@pytest.mark.parametrize("params", MALFORMED)
def test_malformed_parameters_get_a_400_not_a_crash(
    sandbox: RunningSandbox, stripe_client: stripe.StripeClient, params: dict[str, Any]
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.raw_request("post", "/v1/customers", **params)
    assert refused.value.http_status in (400, 404)
    assert refused.value.error is not None
    assert refused.value.error.type == "invalid_request_error"


PATHS = [
    "/v1/customers",
    "/v1/prices",
    "/v1/subscriptions",
    "/v1/invoices",
    "/v1/billing/meter_events",
    "/v1/credit_notes",
    "/v1/test_helpers/test_clocks",
    "/v1/webhook_endpoints",
    "/v1/invoiceitems",
    "/v1/billing/meters",
]
keys = st.from_regex(r"\A[a-z_]{1,12}(\[[a-z0-9_]{0,6}\]){0,3}\Z")
values = st.text(max_size=20) | st.sampled_from(["", "0", "-1", "true", "NaN", "1e99999"])


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.sampled_from(PATHS), params=st.dictionaries(keys, values, max_size=4))
def test_random_parameters_never_crash_the_server(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
    path: str,
    params: dict[str, str],
) -> None:
    # Whatever the sandbox answers, it answers as Stripe would: a 2xx, or a 4xx error.
    with contextlib.suppress(stripe.InvalidRequestError, stripe.CardError):
        stripe_client.raw_request("post", path, **params)
    assert all(r["status"] < 500 for r in sandbox.control.requests())
