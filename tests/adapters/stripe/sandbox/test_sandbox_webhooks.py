"""Webhook endpoints and deliveries: the secret on create, signatures the SDK
verifies, only the subscribed types, retries with backoff on non-2xx, giving up
after the schedule, and secret rotation."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import stripe

from adapters.stripe.sandbox import RunningSandbox
from adapters.stripe.sandbox.testing import WebhookReceiver


def endpoint(client: stripe.StripeClient, url: str, events: list[str] | None = None) -> Any:
    return client.v1.webhook_endpoints.create({"url": url, "enabled_events": events or ["*"]})


def test_create_returns_the_secret_once_and_list_and_delete_work(
    stripe_client: stripe.StripeClient,
) -> None:
    created = endpoint(stripe_client, "https://billtrail.example/stripe", ["invoice.paid"])
    assert created.secret.startswith("whsec_")
    fetched = stripe_client.v1.webhook_endpoints.retrieve(created.id)
    assert "secret" not in fetched
    assert [e.id for e in stripe_client.v1.webhook_endpoints.list().data] == [created.id]
    assert stripe_client.v1.webhook_endpoints.delete(created.id).deleted is True
    assert stripe_client.v1.webhook_endpoints.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as bad_url:
        endpoint(stripe_client, "ftp://billtrail.example")
    assert bad_url.value.code == "url_invalid"


def test_each_event_is_posted_signed_as_stripe_signs_with_the_send_time(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    hook = endpoint(stripe_client, webhook_receiver.url, ["customer.created", "customer.updated"])
    customer = stripe_client.v1.customers.create({"name": "Ada"})
    stripe_client.v1.customers.update(customer.id, {"name": "Ada L."})
    stripe_client.v1.products.create({"name": "Not subscribed"})
    received = webhook_receiver.wait_for(lambda r: len(r) >= 2)
    events = [
        stripe.Webhook.construct_event(r.body, r.headers["stripe-signature"], hook.secret)
        for r in received
    ]
    assert [e.type for e in events] == ["customer.created", "customer.updated"]
    assert events[1].data.object.name == "Ada L."
    signed_at = int(received[0].headers["stripe-signature"].split(",")[0].removeprefix("t="))
    assert abs(signed_at - received[0].at) <= 2
    assert all(json.loads(r.body)["pending_webhooks"] >= 0 for r in received)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            received[0].body, received[0].headers["stripe-signature"], "whsec_wrong"
        )
    # Deliveries are queued when an event commits: the product event never was.
    assert [d["type"] for d in sandbox.control.deliveries()] == [
        "customer.created",
        "customer.updated",
    ]


def test_non_2xx_answers_are_retried_with_backoff_and_recorded(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.statuses = [500, 503]
    endpoint(stripe_client, webhook_receiver.url, ["customer.created"])
    stripe_client.v1.customers.create()
    received = webhook_receiver.wait_for(lambda r: len(r) >= 3)
    assert [r.status for r in received] == [500, 503, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(received)]
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1
    delivery = sandbox.control.wait_for_deliveries(lambda d: d and d[0]["status"] == "succeeded")[0]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 200]
    assert stripe_client.v1.events.list().data[0].pending_webhooks == 0


def test_a_delivery_gives_up_after_the_retry_schedule_and_is_listed_as_undelivered(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.statuses = [500] * 10
    endpoint(stripe_client, webhook_receiver.url, ["customer.created"])
    stripe_client.v1.customers.create()
    delivery = sandbox.control.wait_for_deliveries(lambda d: d and d[0]["status"] == "failed")[0]
    assert len(delivery["attempts"]) == 4  # the first try and three retries
    undelivered = stripe_client.v1.events.list({"delivery_success": False}).data
    assert [e.id for e in undelivered] == [delivery["event"]]
    assert stripe_client.v1.events.list({"delivery_success": True}).data == []


def test_a_rolled_secret_signs_with_both_secrets_until_the_old_one_expires(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    hook = endpoint(stripe_client, webhook_receiver.url, ["customer.created"])
    new_secret = sandbox.control.roll_webhook_secret(hook.id, expires_in=3600)
    stripe_client.v1.customers.create()
    received = webhook_receiver.wait_for(lambda r: len(r) >= 1)[0]
    signature = received.headers["stripe-signature"]
    assert signature.count("v1=") == 2
    for secret in (hook.secret, new_secret):
        assert stripe.Webhook.construct_event(received.body, signature, secret).type == (
            "customer.created"
        )


def test_a_disabled_endpoint_receives_nothing(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    hook = endpoint(stripe_client, webhook_receiver.url)
    stripe_client.v1.webhook_endpoints.update(hook.id, {"disabled": True})
    stripe_client.v1.customers.create()
    assert sandbox.control.deliveries() == []
