"""The `/_sandbox/` fault switches, driven over HTTP as the README documents
them, and what the SDK does about each: retries (same idempotency key) on 5xx,
409 and dropped connections, no retry on 429 unless told, replay of a request
that committed before its answer was lost; webhooks dropped, duplicated and
reordered; reset; and the switches refused when faults are not enabled."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from adapters.stripe.sandbox import RunningSandbox, SandboxControlError, start_sandbox
from adapters.stripe.sandbox.testing import WebhookReceiver


def customer_requests(sandbox: RunningSandbox) -> list[dict[str, Any]]:
    return sandbox.control.requests(path="/v1/customers")


def test_a_500_before_execution_is_retried_with_the_same_key_and_runs_once(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
) -> None:
    sandbox.control.fail_next(500, method="POST", path="/v1/customers")
    customer = stripe_client.v1.customers.create({"name": "Ada"})
    attempts = customer_requests(sandbox)
    assert [a["status"] for a in attempts] == [500, 200]
    assert attempts[0]["idempotency_key"] == attempts[1]["idempotency_key"]
    assert [c.id for c in stripe_client.v1.customers.list().data] == [customer.id]


def test_a_500_after_commit_is_retried_and_replays_the_saved_response(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
) -> None:
    sandbox.control.fail_next(500, when="after", method="POST", path="/v1/customers")
    customer = stripe_client.v1.customers.create({"name": "Ada"})
    attempts = customer_requests(sandbox)
    assert [(a["status"], a["replayed"]) for a in attempts] == [(500, False), (200, True)]
    assert [c.id for c in stripe_client.v1.customers.list().data] == [customer.id]


def test_without_retries_the_client_sees_the_500_as_an_api_error(
    sandbox: RunningSandbox,
    client_factory: Callable[..., stripe.StripeClient],
) -> None:
    sandbox.control.fail_next(503, code="service_unavailable")
    with pytest.raises(stripe.APIError) as failed:
        client_factory(retries=0).v1.customers.list()
    assert failed.value.http_status == 503
    assert failed.value.error is not None
    assert failed.value.error.type == "api_error"


def test_a_429_is_not_retried_unless_stripe_should_retry_says_so(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
) -> None:
    sandbox.control.fail_next(429, path="/v1/customers")
    with pytest.raises(stripe.RateLimitError) as limited:
        stripe_client.v1.customers.list()
    assert limited.value.http_status == 429
    # RateLimitError, like APIError, leaves `code` unset; the parsed body has it.
    assert limited.value.error is not None
    assert limited.value.error.code == "rate_limit"
    assert len(customer_requests(sandbox)) == 1

    sandbox.control.fail_next(429, should_retry=True, code="lock_timeout", path="/v1/customers")
    stripe_client.v1.customers.list()
    assert [a["status"] for a in customer_requests(sandbox)] == [429, 429, 200]


def test_a_409_is_retried_by_the_sdk(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
) -> None:
    sandbox.control.fail_next(409, path="/v1/customers")
    stripe_client.v1.customers.create()
    assert [a["status"] for a in customer_requests(sandbox)] == [409, 200]


def test_a_connection_dropped_after_commit_is_retried_and_replayed(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
) -> None:
    sandbox.control.drop_connections(when="after", method="POST", path="/v1/customers")
    customer = stripe_client.v1.customers.create({"name": "Ada"})
    attempts = customer_requests(sandbox)
    assert [(a["dropped"], a["replayed"]) for a in attempts] == [(True, False), (False, True)]
    assert [c.id for c in stripe_client.v1.customers.list().data] == [customer.id]


def test_a_dropped_connection_without_retries_is_a_connection_error(
    sandbox: RunningSandbox,
    client_factory: Callable[..., stripe.StripeClient],
) -> None:
    sandbox.control.drop_connections()
    with pytest.raises(stripe.APIConnectionError):
        client_factory(retries=0).v1.customers.list()


def test_latency_slows_the_next_responses(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
) -> None:
    sandbox.control.add_latency(300, count=1)
    started = time.monotonic()
    stripe_client.v1.customers.list()
    slow = time.monotonic() - started
    started = time.monotonic()
    stripe_client.v1.customers.list()
    fast = time.monotonic() - started
    assert slow >= 0.3
    assert fast < 0.3


def test_switches_count_down_and_can_be_listed_and_cleared(sandbox: RunningSandbox) -> None:
    sandbox.control.fail_next(500, count=3)
    sandbox.control.webhook_faults(drop=2)
    faults = sandbox.control.faults()
    assert (faults["http"][0]["count"], faults["webhooks"]["drop"]) == (3, 2)
    cleared = sandbox.control.clear_faults()
    assert (cleared["http"], cleared["webhooks"]["drop"]) == ([], 0)
    with pytest.raises(SandboxControlError) as refused:
        sandbox.control.fail_next(418)
    assert refused.value.status == 400
    assert refused.value.body["error"]["param"] == "status"


def test_a_dropped_webhook_attempt_is_delivered_by_the_next_retry(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    stripe_client.v1.webhook_endpoints.create(
        {"url": webhook_receiver.url, "enabled_events": ["customer.created"]}
    )
    sandbox.control.webhook_faults(drop=1)
    stripe_client.v1.customers.create()
    delivery = sandbox.control.wait_for_deliveries(lambda d: d and d[0]["status"] == "succeeded")[0]
    assert [a["status_code"] for a in delivery["attempts"]] == [None, 200]
    assert "dropped" in delivery["attempts"][0]["error"]
    assert len(webhook_receiver.snapshot()) == 1


def test_a_duplicated_webhook_arrives_twice_with_the_same_event_id(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    hook = stripe_client.v1.webhook_endpoints.create(
        {"url": webhook_receiver.url, "enabled_events": ["customer.created"]}
    )
    sandbox.control.webhook_faults(duplicate=1)
    stripe_client.v1.customers.create()
    received = webhook_receiver.wait_for(lambda r: len(r) >= 2)
    events = [
        stripe.Webhook.construct_event(r.body, r.headers["stripe-signature"], hook.secret)
        for r in received
    ]
    assert events[0].id == events[1].id


def test_reordered_webhooks_arrive_in_reverse(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    hook = stripe_client.v1.webhook_endpoints.create(
        {"url": webhook_receiver.url, "enabled_events": ["customer.created"]}
    )
    sandbox.control.webhook_faults(reorder=3)
    customers = [stripe_client.v1.customers.create({"name": n}).id for n in ("a", "b", "c")]
    received = webhook_receiver.wait_for(lambda r: len(r) >= 3)
    objects = [
        stripe.Webhook.construct_event(
            r.body, r.headers["stripe-signature"], hook.secret
        ).data.object.id
        for r in received
    ]
    assert objects == customers[::-1]


def test_reset_forgets_everything(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
) -> None:
    before = stripe_client.v1.customers.create({}, {"idempotency_key": "before-reset"})
    sandbox.control.fail_next(500, count=5)
    assert sandbox.control.reset() == {"reset": True}
    assert stripe_client.v1.customers.list().data == []
    assert sandbox.control.faults()["http"] == []
    again = stripe_client.v1.customers.create({"name": "New"}, {"idempotency_key": "before-reset"})
    assert again.name == "New"
    assert again.id != before.id  # a seeded sandbox does not hand out old ids again


def test_the_sandbox_routes_are_refused_unless_faults_are_enabled() -> None:
    with start_sandbox(faults_enabled=False) as plain:
        with pytest.raises(SandboxControlError) as refused:
            plain.control.fail_next(500)
        assert refused.value.status == 404
        assert refused.value.body["error"]["type"] == "invalid_request_error"
        assert "Unrecognized request URL" in refused.value.body["error"]["message"]
