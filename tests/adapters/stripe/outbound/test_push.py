"""Customers, prices and subscriptions pushed to the sandbox over HTTP: each made
once, linked in the ledger with its source, every POST under a key recorded in
the ledger before it was sent, and a crash between Stripe's answer and the ledger
write resumed without a second object."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from adapters.stripe.outbound.catalog import METER_KEY, ensure_meter, push_prices
from adapters.stripe.outbound.customers import push_customers
from adapters.stripe.outbound.outbox import Outbox
from adapters.stripe.outbound.push import push_all
from adapters.stripe.outbound.subscriptions import BillingTerms, subscription_of
from ledger.entities.domain import BillableEntity
from ledger.sources import Source, SourceKind

from .conftest import Crash, World, crash_once


def recorded_keys(world: World) -> set[str]:
    keys = set()
    for event in world.ledger.events_of_topics(["billtrail:StripeRequest.Prepared"]):
        request = world.ledger.stripe_request(event.key)
        assert request is not None
        keys.update(
            f"{request.key}#{n}" if n > 1 else request.key for n in range(1, 1 + request.attempt)
        )
    return keys


def test_push_all_makes_each_object_once_and_links_it_in_the_ledger(world: World) -> None:
    report = world.push("push-1")
    outbox = world.outbox("push-1")
    assert report.summary() == {"customers": 2, "prices": 3, "subscriptions": 2, "skipped": 0}

    ledger = world.ledger
    for entity_id in ("acme", "beta"):
        entity = ledger.entity(entity_id)
        assert entity.stripe_customer_id is not None
        linked = [
            e for e in ledger.history(entity.id) if type(e).__name__ == "StripeCustomerLinked"
        ]
        assert [e.source for e in linked] == [outbox.source]
        customer = world.client.v1.customers.retrieve(entity.stripe_customer_id)
        assert customer.metadata is not None
        assert customer.metadata["billtrail_entity_id"] == entity_id

    # A sub-cent per-call price: 0.0125 EUR is 1.25 cents, exactly.
    acme = ledger.rate("acme")
    price_id = acme.versions[0].stripe_price_id
    assert price_id is not None
    price = world.client.v1.prices.retrieve(price_id)
    assert price.unit_amount_decimal == Decimal("1.25")
    assert price.recurring is not None
    assert price.recurring.usage_type == "metered"
    assert price.recurring.meter is not None

    # beta's subscription carries its monthly fee (licensed) and the metered price.
    subscription_id = subscription_of(outbox, "beta")
    assert subscription_id is not None
    subscription = world.client.v1.subscriptions.retrieve(subscription_id)
    prices = {item.price.id: item.price for item in subscription.items.data}
    beta = ledger.rate("beta")
    assert set(prices) == {beta.fees["platform"].stripe_price_id, beta.versions[0].stripe_price_id}
    fee_price = prices[beta.fees["platform"].stripe_price_id]
    assert fee_price.unit_amount == 4900
    assert fee_price.recurring is not None
    assert fee_price.recurring.usage_type == "licensed"

    # Pushing again sends nothing.
    posts = len(world.posts())
    again = world.push("push-2")
    assert again.summary() == {"customers": 0, "prices": 0, "subscriptions": 0, "skipped": 0}
    assert len(world.posts()) == posts


def test_every_post_carries_an_idempotency_key_recorded_in_the_ledger(world: World) -> None:
    world.push()
    posts = [p for p in world.posts() if not p["path"].startswith("/v1/test_helpers/")]
    assert posts
    keys = recorded_keys(world)
    assert {p["idempotency_key"] for p in posts} <= keys


def test_a_crash_between_stripe_and_the_ledger_is_resumed_without_a_second_customer(
    world: World,
) -> None:
    hook, crashed = crash_once("billtrail/customer/acme")
    with pytest.raises(Crash):
        push_customers(world.outbox(after_call=hook))
    assert crashed == ["billtrail/customer/acme"]
    # Stripe made the customer; the ledger has the request, not the link.
    assert world.ledger.entity("acme").stripe_customer_id is None
    request = world.ledger.stripe_request("billtrail/customer/acme")
    assert request is not None
    assert not request.answered

    push_customers(world.outbox())
    acme = world.ledger.entity("acme")
    found = world.client.v1.customers.list({"email": "billing@acme.example"}).data
    assert [c.id for c in found] == [acme.stripe_customer_id]
    sent = [p for p in world.posts("/v1/customers") if p["idempotency_key"] == request.key]
    assert [p["replayed"] for p in sent] == [False, True]


def test_a_request_older_than_stripes_key_memory_is_looked_up_not_sent_again(
    world: World,
) -> None:
    hook, _ = crash_once("billtrail/customer/acme")
    with pytest.raises(Crash):
        push_customers(world.outbox(after_call=hook))
    # Two days later Stripe has forgotten the key: sending it again would make a
    # second customer, so the outbox finds the first.
    world.sandbox.control.advance_server_clock(2 * 86400)
    world.clock.now += timedelta(days=2)
    posts = len(world.posts("/v1/customers"))
    push_customers(world.outbox())
    found = world.client.v1.customers.list({"email": "billing@acme.example"}).data
    assert len(found) == 1
    assert world.ledger.entity("acme").stripe_customer_id == found[0].id
    # Only beta's customer was sent.
    assert len(world.posts("/v1/customers")) == posts + 1


def test_a_later_rate_version_gets_its_own_price(world: World) -> None:
    world.push()
    world.ledger.set_rate(
        "acme",
        Decimal("0.0110"),
        "eur",
        world.clock.now.date() + timedelta(days=40),
        "index",
        world.outbox().source,
    )
    report = push_prices(world.outbox())
    assert report.created == ["billtrail/price/acme/v2"]
    v2 = world.ledger.rate("acme").versions[1]
    assert v2.stripe_price_id is not None
    assert world.client.v1.prices.retrieve(v2.stripe_price_id).unit_amount_decimal == Decimal("1.1")


def test_send_invoice_terms_and_entities_not_ready_are_reported(world: World) -> None:
    outbox = world.outbox()
    push_customers(outbox, entity_ids=["acme"])

    def terms(entity: BillableEntity) -> BillingTerms:
        return BillingTerms("send_invoice", 14)

    report = push_all(outbox, terms=terms)
    acme_sub = subscription_of(outbox, "acme")
    assert acme_sub is not None
    subscription = world.client.v1.subscriptions.retrieve(acme_sub)
    assert subscription.collection_method == "send_invoice"
    assert subscription.days_until_due == 14
    assert report.subscriptions.skipped == {}


def test_a_scheduler_run_links_every_price_of_a_rate(world: World) -> None:
    # A scheduler run is an idempotent source: each command applies once per
    # aggregate, so beta's fee price and per-call price are linked as one.
    outbox = Outbox(
        world.ledger, world.client, Source(SourceKind.SCHEDULER_RUN, "stripe-push/2026-07-01")
    )
    push_prices(outbox)
    beta = world.ledger.rate("beta")
    assert beta.fees["platform"].stripe_price_id is not None
    assert beta.versions[0].stripe_price_id is not None


def test_a_meter_stripe_already_has_is_adopted_not_made_twice(world: World) -> None:
    # Stripe keeps one meter per event name; one made before this ledger existed
    # (another installation, a ledger rebuilt) is found and used.
    made = world.client.v1.billing.meters.create(
        {
            "display_name": "Calls handled",
            "event_name": "billtrail_calls",
            "default_aggregation": {"formula": "sum"},
        }
    )
    assert ensure_meter(world.outbox()) == made.id
    request = world.ledger.stripe_request(METER_KEY)
    assert request is not None
    assert (request.answered, request.object_id) == (True, made.id)
    assert len(world.client.v1.billing.meters.list().data) == 1
