"""The billing scenarios billtrail depends on, run against the sandbox and (in
contract mode) against Stripe test mode with the same code: a customer on a
test clock with a fixed fee and a metered price, usage over two periods, paid
and failed payments, void, uncollectible, credit notes, an invoice item's line
(its metadata, its `price_data` made an inline price), idempotency, pagination
and error shapes. Only the SDK is used."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import stripe

from adapters.stripe.sandbox.clock import DAY, HOUR, add_interval
from adapters.stripe.sandbox.testing import StripeTarget

# 2026-01-01T00:00:00Z: a fixed start keeps the sandbox's periods the same every run.
SANDBOX_START = 1767225600
FEE = 5000  # $50.00 a month, billed in advance
PER_CALL = Decimal("0.25")  # a quarter of a cent per call, billed in arrears


@dataclass
class World:
    target: StripeTarget
    clock: Any
    customer: Any
    meter: Any
    fee: Any
    per_call: Any
    start: int

    @property
    def client(self) -> stripe.StripeClient:
        return self.target.client

    def period_end(self, n: int) -> int:
        return add_interval(self.start, "month", 1, n)

    def report(self, value: int, identifier: str, timestamp: int) -> Any:
        return self.client.v1.billing.meter_events.create(
            {
                "event_name": self.meter.event_name,
                "payload": {"stripe_customer_id": self.customer.id, "value": str(value)},
                "identifier": identifier,
                "timestamp": timestamp,
            }
        )

    def usage(self, start: int, end: int) -> float:
        summaries = self.client.v1.billing.meters.event_summaries.list(
            self.meter.id, {"customer": self.customer.id, "start_time": start, "end_time": end}
        )
        return sum(s.aggregated_value for s in summaries.data)


def start_time(target: StripeTarget) -> int:
    return SANDBOX_START if target.is_sandbox else int(time.time()) // HOUR * HOUR


def make_world(target: StripeTarget, card: str = "pm_card_visa") -> World:
    client, start, tag = target.client, start_time(target), uuid.uuid4().hex[:10]
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": start, "name": tag})
    target.cleanups.append(lambda: client.v1.test_helpers.test_clocks.delete(clock.id))
    customer = client.v1.customers.create(
        {
            "email": f"{tag}@example.com",
            "test_clock": clock.id,
            "payment_method": card,
            "invoice_settings": {"default_payment_method": card},
        }
    )
    meter = client.v1.billing.meters.create(
        {
            "display_name": f"Calls {tag}",
            "event_name": f"billtrail_calls_{tag}",
            "default_aggregation": {"formula": "sum"},
        }
    )
    target.cleanups.append(lambda: client.v1.billing.meters.deactivate(meter.id))
    product = client.v1.products.create({"name": f"Phone platform {tag}"})
    target.cleanups.append(lambda: client.v1.products.update(product.id, {"active": False}))
    fee = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": FEE,
            "recurring": {"interval": "month"},
        }
    )
    per_call = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount_decimal": PER_CALL,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    return World(target, clock, customer, meter, fee, per_call, start)


def subscribe(world: World, metered: bool = True) -> Any:
    items: list[Any] = [{"price": world.fee.id}]
    if metered:
        items.append({"price": world.per_call.id})
    return world.client.v1.subscriptions.create({"customer": world.customer.id, "items": items})


def lines_by_price(invoice: Any) -> dict[str, Any]:
    return {line.pricing.price_details.price: line for line in invoice.lines.data}


def test_renewal_invoices_bill_the_fee_in_advance_and_metered_usage_in_arrears(
    stripe_target: StripeTarget,
) -> None:
    world = make_world(stripe_target)
    client = world.client
    subscription = subscribe(world)
    assert subscription.status == "active"
    first = client.v1.invoices.retrieve(subscription.latest_invoice)
    assert (first.billing_reason, first.status, first.amount_paid) == (
        "subscription_create",
        "paid",
        FEE,
    )

    stripe_target.advance(world.clock.id, world.start + 10 * DAY)
    world.report(1200, "calls-day-1", world.start + 1 * DAY)
    world.report(800, "calls-day-2", world.start + 2 * DAY)
    world.report(345, "calls-day-3", world.start + 3 * DAY)
    with pytest.raises(stripe.InvalidRequestError, match="already exists"):
        world.report(999, "calls-day-2", world.start + 2 * DAY)
    stripe_target.eventually(
        lambda: world.usage(world.start, world.start + 10 * DAY), lambda total: total == 2345
    )

    stripe_target.advance(world.clock.id, world.period_end(1) + 6 * DAY)
    world.report(1002, "calls-period-2", world.period_end(1) + 5 * DAY)
    stripe_target.advance(world.clock.id, world.period_end(2) + 2 * HOUR)

    invoices = client.v1.invoices.list({"subscription": subscription.id}).data
    assert [i.billing_reason for i in invoices] == [
        "subscription_cycle",
        "subscription_cycle",
        "subscription_create",
    ]
    third, second = invoices[0], invoices[1]
    for invoice, calls, usage_amount in ((second, 2345, 586), (third, 1002, 251)):
        lines = lines_by_price(invoice)
        assert lines[world.fee.id].amount == FEE
        # 2345 x 0.25 = 586.25 -> 586; 1002 x 0.25 = 250.5 -> 251 (half up, per line).
        assert (lines[world.per_call.id].quantity, lines[world.per_call.id].amount) == (
            calls,
            usage_amount,
        )
        assert (invoice.status, invoice.total, invoice.amount_paid) == (
            "paid",
            FEE + usage_amount,
            FEE + usage_amount,
        )
    usage_line = lines_by_price(second)[world.per_call.id]
    assert (usage_line.period.start, usage_line.period.end) == (world.start, world.period_end(1))
    fee_line = lines_by_price(second)[world.fee.id]
    assert (fee_line.period.start, fee_line.period.end) == (
        world.period_end(1),
        world.period_end(2),
    )


def test_declined_renewal_leaves_the_invoice_open_until_paid_with_another_card(
    stripe_target: StripeTarget,
) -> None:
    world = make_world(stripe_target)
    client = world.client
    subscription = subscribe(world, metered=False)
    # Not pm_card_chargeDeclined: Stripe refuses to attach it (only the sandbox allows it;
    # test_sandbox_invoices.py pins that).
    failing = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", {"customer": world.customer.id}
    )
    client.v1.customers.update(
        world.customer.id, {"invoice_settings": {"default_payment_method": failing.id}}
    )

    stripe_target.advance(world.clock.id, world.period_end(1) + 2 * HOUR)

    renewal = client.v1.invoices.list({"subscription": subscription.id, "limit": 1}).data[0]
    assert renewal.billing_reason == "subscription_cycle"
    assert (renewal.status, renewal.attempt_count, renewal.amount_paid) == ("open", 1, 0)
    assert renewal.next_payment_attempt is not None
    assert renewal.next_payment_attempt > world.period_end(1)
    assert client.v1.subscriptions.retrieve(subscription.id).status == "past_due"
    failed = client.v1.events.list({"type": "invoice.payment_failed"}).data
    assert renewal.id in [e.data.object.id for e in failed]

    with pytest.raises(stripe.CardError) as declined:
        client.v1.invoices.pay(renewal.id)
    assert (declined.value.http_status, declined.value.code) == (402, "card_declined")
    assert client.v1.invoices.retrieve(renewal.id).attempt_count == 2

    visa = client.v1.payment_methods.attach("pm_card_visa", {"customer": world.customer.id})
    paid = client.v1.invoices.pay(renewal.id, {"payment_method": visa.id})
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", FEE, 0)
    assert paid.status_transitions.paid_at is not None
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"


def manual_invoice(world: World, amount: int = 10_000) -> Any:
    client = world.client
    client.v1.invoice_items.create(
        {
            "customer": world.customer.id,
            "amount": amount,
            "currency": "usd",
            "description": "Setup fee",
        }
    )
    invoice = client.v1.invoices.create(
        {"customer": world.customer.id, "pending_invoice_items_behavior": "include"}
    )
    return client.v1.invoices.finalize_invoice(invoice.id)


def test_open_invoices_can_be_voided_or_marked_uncollectible_and_then_paid_or_voided(
    stripe_target: StripeTarget,
) -> None:
    world = make_world(stripe_target)
    client = world.client
    voided = manual_invoice(world)
    assert (voided.status, voided.amount_due) == ("open", 10_000)
    assert voided.number
    voided = client.v1.invoices.void_invoice(voided.id)
    assert voided.status == "void"
    assert voided.status_transitions.voided_at is not None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(voided.id)

    rescued = client.v1.invoices.mark_uncollectible(manual_invoice(world).id)
    assert rescued.status == "uncollectible"
    assert rescued.status_transitions.marked_uncollectible_at is not None
    rescued = client.v1.invoices.pay(rescued.id)
    assert (rescued.status, rescued.amount_paid) == ("paid", 10_000)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.void_invoice(rescued.id)

    written_off = client.v1.invoices.mark_uncollectible(manual_invoice(world).id)
    written_off = client.v1.invoices.void_invoice(written_off.id)
    assert written_off.status == "void"


def test_credit_note_on_an_open_invoice_lowers_the_amount_due_until_voided(
    stripe_target: StripeTarget,
) -> None:
    world = make_world(stripe_target)
    client = world.client
    invoice = manual_invoice(world)
    line = invoice.lines.data[0]
    note = client.v1.credit_notes.create(
        {
            "invoice": invoice.id,
            "reason": "order_change",
            "lines": [{"type": "invoice_line_item", "invoice_line_item": line.id, "amount": 2500}],
        }
    )
    assert (note.status, note.type, note.total) == ("issued", "pre_payment", 2500)
    credited = client.v1.invoices.retrieve(invoice.id)
    assert (credited.amount_due, credited.pre_payment_credit_notes_amount) == (7500, 2500)
    listed = client.v1.credit_notes.list({"invoice": invoice.id}).data
    assert [n.id for n in listed] == [note.id]

    voided = client.v1.credit_notes.void_credit_note(note.id)
    assert voided.status == "void"
    assert client.v1.invoices.retrieve(invoice.id).amount_due == 10_000


def test_an_invoice_items_line_carries_its_metadata_and_its_price_data_becomes_a_price(
    stripe_target: StripeTarget,
) -> None:
    # How billtrail's wrong-rate correction bills a replacement's usage; the ledger
    # reads the kind from the line's metadata and the unit price from its pricing.
    world = make_world(stripe_target)
    client = world.client
    draft = client.v1.invoices.create({"customer": world.customer.id, "currency": "usd"})
    product = world.per_call.product
    item = client.v1.invoice_items.create(
        {
            "customer": world.customer.id,
            "invoice": draft.id,
            "currency": "usd",
            "quantity": 240,
            "price_data": {"currency": "usd", "product": product, "unit_amount_decimal": "1.1"},
            "metadata": {"billtrail_kind": "usage"},
        }
    )
    assert item.pricing is not None
    assert item.pricing.price_details is not None
    price_id = item.pricing.price_details.price
    assert isinstance(price_id, str)
    assert price_id.startswith("price_")
    assert price_id not in (world.fee.id, world.per_call.id)

    [line] = client.v1.invoices.retrieve(draft.id).lines.data
    assert line.metadata.to_dict() == {"billtrail_kind": "usage"}
    assert line.pricing is not None
    assert line.pricing.price_details is not None
    assert line.pricing.price_details.price == price_id
    assert line.pricing.unit_amount_decimal == Decimal("1.1")
    assert (line.quantity, line.amount) == (240, 264)

    price = client.v1.prices.retrieve(price_id)
    assert (price.product, price.type, price.recurring) == (product, "one_time", None)
    assert price.unit_amount_decimal == Decimal("1.1")
    listed = client.v1.prices.list({"product": product, "limit": 100}).data
    assert price_id not in [p.id for p in listed]


def test_same_idempotency_key_replays_the_first_response_and_creates_nothing_more(
    stripe_target: StripeTarget,
) -> None:
    client, key = stripe_target.client, f"billtrail-{uuid.uuid4()}"
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    first = client.v1.customers.create({"email": email}, {"idempotency_key": key})
    stripe_target.cleanups.append(lambda: client.v1.customers.delete(first.id))
    again = client.v1.customers.create({"email": email}, {"idempotency_key": key})
    assert again.id == first.id
    assert [c.id for c in client.v1.customers.list({"email": email}).data] == [first.id]


def test_same_idempotency_key_with_other_params_is_rejected(
    stripe_target: StripeTarget,
) -> None:
    client, key = stripe_target.client, f"billtrail-{uuid.uuid4()}"
    first = client.v1.customers.create({"name": "First"}, {"idempotency_key": key})
    stripe_target.cleanups.append(lambda: client.v1.customers.delete(first.id))
    with pytest.raises(stripe.IdempotencyError) as refused:
        client.v1.customers.create({"name": "Second"}, {"idempotency_key": key})
    assert refused.value.http_status == 400
    assert refused.value.error is not None
    assert refused.value.error.type == "idempotency_error"


def test_lists_paginate_newest_first_across_pages(stripe_target: StripeTarget) -> None:
    client, email = stripe_target.client, f"{uuid.uuid4().hex[:10]}@example.com"
    created = []
    for n in range(7):
        customer = client.v1.customers.create({"email": email, "name": f"Customer {n}"})
        stripe_target.cleanups.append(lambda cid=customer.id: client.v1.customers.delete(cid))
        created.append(customer.id)
    ordered = [
        c.id for c in client.v1.customers.list({"email": email, "limit": 2}).auto_paging_iter()
    ]
    assert sorted(ordered) == sorted(created)
    if stripe_target.is_sandbox:
        # Stripe orders by `created`, which ties within a second; the sandbox never ties.
        assert ordered == created[::-1]

    page = client.v1.customers.list({"email": email, "limit": 3})
    assert ([c.id for c in page.data], page.has_more) == (ordered[:3], True)
    assert page.url == "/v1/customers"
    following = client.v1.customers.list(
        {"email": email, "limit": 3, "starting_after": page.data[-1].id}
    )
    assert [c.id for c in following.data] == ordered[3:6]
    last = client.v1.customers.list(
        {"email": email, "limit": 3, "starting_after": following.data[-1].id}
    )
    assert ([c.id for c in last.data], last.has_more) == (ordered[6:], False)
    before = client.v1.customers.list(
        {"email": email, "limit": 2, "ending_before": following.data[0].id}
    )
    assert [c.id for c in before.data] == ordered[1:3]


def test_errors_have_stripes_shape_and_status(stripe_target: StripeTarget) -> None:
    client = stripe_target.client
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.customers.retrieve("cus_doesnotexist")
    assert (missing.value.http_status, missing.value.code, missing.value.param) == (
        404,
        "resource_missing",
        "id",
    )
    assert missing.value.error is not None
    assert missing.value.error.doc_url
    assert missing.value.error.message == "No such customer: 'cus_doesnotexist'"

    with pytest.raises(stripe.InvalidRequestError) as no_currency:
        client.v1.prices.create({"unit_amount": 100, "product_data": {"name": "x"}})
    assert (no_currency.value.http_status, no_currency.value.code, no_currency.value.param) == (
        400,
        "parameter_missing",
        "currency",
    )

    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.raw_request("post", "/v1/customers", colour="blue")
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "colour")
