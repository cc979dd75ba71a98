"""Invoices in the sandbox: amounts and rounding, taxes, the minimum charge,
collection by email with a due date, the state machine, automatic finalization
and dunning on the test clock, pending items swept into renewals, payment
methods, and credit notes on paid invoices."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import stripe

from adapters.stripe.sandbox import RunningSandbox, wait_until
from adapters.stripe.sandbox.clock import DAY, HOUR, add_interval

START = 1767225600  # 2026-01-01T00:00:00Z


def invoice_with(
    client: stripe.StripeClient, customer_id: str, *items: dict[str, Any], **invoice: Any
) -> Any:
    for item in items:
        client.v1.invoice_items.create({"customer": customer_id, "currency": "usd", **item})
    return client.v1.invoices.create(
        {"customer": customer_id, "pending_invoice_items_behavior": "include", **invoice}
    )


def advance(client: stripe.StripeClient, clock_id: str, frozen_time: int) -> Any:
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": frozen_time})
    return wait_until(
        lambda: client.v1.test_helpers.test_clocks.retrieve(clock_id),
        lambda clock: clock.status == "ready",
        timeout=10,
    )


def clock_customer(client: stripe.StripeClient, card: str = "pm_card_visa") -> tuple[Any, Any]:
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": START})
    customer = client.v1.customers.create(
        {
            "test_clock": clock.id,
            "payment_method": card,
            "invoice_settings": {"default_payment_method": card},
        }
    )
    return clock, customer


def monthly_price(client: stripe.StripeClient, amount: int = 5000) -> Any:
    return client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Monthly fee"},
        }
    )


def test_sub_cent_amounts_round_half_up_line_by_line(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create()
    invoice = invoice_with(
        stripe_client,
        customer.id,
        {"unit_amount_decimal": Decimal("0.05"), "quantity": 30},  # 1.5 -> 2
        {"unit_amount_decimal": Decimal("0.125"), "quantity": 3},  # 0.375 -> 0
        {"unit_amount_decimal": Decimal("0.000000000001"), "quantity": 500_000_000_000},  # 0.5
    )
    assert [line.amount for line in invoice.lines.data] == [2, 0, 1]
    assert invoice.subtotal == 3


def test_price_with_sub_cent_amount_has_no_integer_unit_amount(
    stripe_client: stripe.StripeClient,
) -> None:
    sub_cent = stripe_client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount_decimal": Decimal("0.0350"),
            "product_data": {"name": "Per call"},
        }
    )
    whole = stripe_client.v1.prices.create(
        {"currency": "usd", "unit_amount_decimal": Decimal(5), "product_data": {"name": "Flat"}}
    )
    # The SDK parses unit_amount_decimal into a Decimal; on the wire it is a string.
    assert (sub_cent.unit_amount, sub_cent.unit_amount_decimal) == (None, Decimal("0.035"))
    assert sub_cent.last_response is not None
    assert sub_cent.last_response.data["unit_amount_decimal"] == "0.035"
    assert (whole.unit_amount, whole.unit_amount_decimal) == (5, Decimal(5))
    with pytest.raises(stripe.InvalidRequestError) as too_precise:
        stripe_client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount_decimal": Decimal("0.0000000000001"),
                "product_data": {"name": "Too precise"},
            }
        )
    assert too_precise.value.param == "unit_amount_decimal"


def test_exclusive_tax_is_added_per_line_and_totalled_per_rate(
    stripe_client: stripe.StripeClient,
) -> None:
    vat = stripe_client.v1.tax_rates.create(
        {"display_name": "VAT", "percentage": 19, "inclusive": False}
    )
    customer = stripe_client.v1.customers.create()
    invoice = invoice_with(
        stripe_client, customer.id, {"amount": 1001}, {"amount": 250}, default_tax_rates=[vat.id]
    )
    # 1001 x 19% = 190.19 -> 190; 250 x 19% = 47.5 -> 48
    assert [line.taxes[0].amount for line in invoice.lines.data] == [190, 48]
    assert (invoice.subtotal, invoice.total, invoice.total_excluding_tax) == (1251, 1489, 1251)
    assert [(t.amount, t.tax_rate_details.tax_rate) for t in invoice.total_taxes] == [(238, vat.id)]
    assert vat.percentage == 19


def test_an_amount_due_below_the_minimum_charge_moves_to_the_customer_balance(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    tiny = invoice_with(stripe_client, customer.id, {"amount": 30})
    tiny = stripe_client.v1.invoices.finalize_invoice(tiny.id)
    assert (tiny.status, tiny.amount_due, tiny.total, tiny.ending_balance) == ("paid", 0, 30, 30)
    assert stripe_client.v1.customers.retrieve(customer.id).balance == 30

    next_one = invoice_with(stripe_client, customer.id, {"amount": 1000})
    next_one = stripe_client.v1.invoices.finalize_invoice(next_one.id)
    assert (next_one.starting_balance, next_one.amount_due) == (30, 1030)
    assert stripe_client.v1.customers.retrieve(customer.id).balance == 0


def test_send_invoice_gets_a_due_date_from_days_until_due_and_can_be_listed_by_it(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create({"email": "billing@example.com"})
    invoice = invoice_with(
        stripe_client,
        customer.id,
        {"amount": 4200},
        collection_method="send_invoice",
        days_until_due=30,
    )
    assert invoice.due_date is None
    invoice = stripe_client.v1.invoices.finalize_invoice(invoice.id)
    assert invoice.due_date == invoice.status_transitions.finalized_at + 30 * DAY
    sent = stripe_client.v1.invoices.send_invoice(invoice.id)
    assert sent.status == "open"
    assert [
        e.data.object.id for e in stripe_client.v1.events.list({"type": "invoice.sent"}).data
    ] == [invoice.id]
    due_soon = stripe_client.v1.invoices.list({"due_date": {"lte": invoice.due_date}}).data
    due_later = stripe_client.v1.invoices.list({"due_date": {"gt": invoice.due_date}}).data
    assert ([i.id for i in due_soon], due_later) == ([invoice.id], [])
    with pytest.raises(stripe.InvalidRequestError):
        invoice_with(stripe_client, customer.id, collection_method="send_invoice")


def test_illegal_transitions_are_refused_with_invoice_unexpected_state(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    draft = invoice_with(stripe_client, customer.id, {"amount": 1500})
    for action in (
        stripe_client.v1.invoices.void_invoice,
        stripe_client.v1.invoices.mark_uncollectible,
        stripe_client.v1.invoices.pay,
    ):
        with pytest.raises(stripe.InvalidRequestError) as refused:
            action(draft.id)
        assert refused.value.code == "invoice_unexpected_state"
    paid = stripe_client.v1.invoices.pay(stripe_client.v1.invoices.finalize_invoice(draft.id).id)
    assert paid.status == "paid"
    for action in (
        stripe_client.v1.invoices.finalize_invoice,
        stripe_client.v1.invoices.mark_uncollectible,
        stripe_client.v1.invoices.void_invoice,
    ):
        with pytest.raises(stripe.InvalidRequestError):
            action(paid.id)
    assert stripe_client.v1.invoices.retrieve(paid.id).status == "paid"


def test_a_draft_invoice_can_be_deleted_and_its_items_become_pending_again(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    draft = invoice_with(stripe_client, customer.id, {"amount": 700})
    deleted = stripe_client.v1.invoices.delete(draft.id)
    assert deleted.deleted is True
    pending = stripe_client.v1.invoice_items.list({"customer": customer.id, "pending": True})
    assert [i.amount for i in pending.data] == [700]
    assert [e.type for e in stripe_client.v1.events.list({"type": "invoice.deleted"}).data] == [
        "invoice.deleted"
    ]


def test_renewal_invoice_is_a_draft_for_an_hour_then_finalizes_and_is_paid(
    stripe_client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(stripe_client)
    subscription = stripe_client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": monthly_price(stripe_client).id}]}
    )
    period_end = add_interval(START, "month", 1, 1)
    advance(stripe_client, clock.id, period_end + 30 * 60)
    renewal = stripe_client.v1.invoices.list({"subscription": subscription.id, "limit": 1}).data[0]
    assert (renewal.status, renewal.created) == ("draft", period_end)
    assert renewal.automatically_finalizes_at == period_end + HOUR
    assert renewal.next_payment_attempt == period_end + HOUR
    advance(stripe_client, clock.id, period_end + 2 * HOUR)
    renewal = stripe_client.v1.invoices.retrieve(renewal.id)
    assert renewal.status == "paid"
    assert renewal.status_transitions.finalized_at == period_end + HOUR
    assert renewal.status_transitions.paid_at == period_end + HOUR


def test_usage_reported_during_the_grace_hour_is_billed(
    stripe_client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(stripe_client)
    meter = stripe_client.v1.billing.meters.create(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    per_call = stripe_client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 2,
            "product_data": {"name": "Calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    subscription = stripe_client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": per_call.id}]}
    )
    period_end = add_interval(START, "month", 1, 1)
    advance(stripe_client, clock.id, period_end + 30 * 60)
    stripe_client.v1.billing.meter_events.create(
        {
            "event_name": "calls",
            "timestamp": period_end - 60,
            "payload": {"stripe_customer_id": customer.id, "value": "40"},
        }
    )
    draft = stripe_client.v1.invoices.list({"subscription": subscription.id, "limit": 1}).data[0]
    assert draft.lines.data[0].quantity == 0
    advance(stripe_client, clock.id, period_end + 2 * HOUR)
    final = stripe_client.v1.invoices.retrieve(draft.id)
    assert (final.lines.data[0].quantity, final.amount_paid) == (40, 80)


def test_pending_invoice_items_are_swept_into_the_next_renewal(
    stripe_client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(stripe_client)
    subscription = stripe_client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": monthly_price(stripe_client).id}]}
    )
    item = stripe_client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 1234, "currency": "usd", "description": "Extra numbers"}
    )
    assert item.invoice is None
    advance(stripe_client, clock.id, add_interval(START, "month", 1, 1) + 2 * HOUR)
    renewal = stripe_client.v1.invoices.list({"subscription": subscription.id, "limit": 1}).data[0]
    assert stripe_client.v1.invoice_items.retrieve(item.id).invoice == renewal.id
    assert sorted(line.amount for line in renewal.lines.data) == [1234, 5000]
    assert renewal.amount_paid == 6234


def test_failed_automatic_payments_are_retried_on_schedule_then_dunning_stops(
    stripe_client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(stripe_client, card="pm_card_chargeCustomerFail")
    stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    visa = stripe_client.v1.payment_methods.list({"customer": customer.id}).data[0]
    subscription = stripe_client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": monthly_price(stripe_client).id}],
            "default_payment_method": visa.id,
        }
    )
    stripe_client.v1.subscriptions.update(subscription.id, {"default_payment_method": ""})
    finalized = add_interval(START, "month", 1, 1) + HOUR
    advance(stripe_client, clock.id, finalized)
    renewal = stripe_client.v1.invoices.list({"subscription": subscription.id, "limit": 1}).data[0]
    assert (renewal.attempt_count, renewal.next_payment_attempt) == (1, finalized + 3 * DAY)
    advance(stripe_client, clock.id, finalized + 16 * DAY)
    renewal = stripe_client.v1.invoices.retrieve(renewal.id)
    assert (renewal.status, renewal.attempt_count, renewal.next_payment_attempt) == (
        "open",
        4,
        None,
    )
    failures = stripe_client.v1.events.list({"type": "invoice.payment_failed"}).data
    assert [e.data.object.attempt_count for e in failures] == [4, 3, 2, 1]
    assert stripe_client.v1.subscriptions.retrieve(subscription.id).status == "past_due"


def metered_subscription(client: stripe.StripeClient, customer_id: str) -> Any:
    meter = client.v1.billing.meters.create(
        {"display_name": "Calls", "event_name": "calls", "default_aggregation": {"formula": "sum"}}
    )
    per_call = client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 3,
            "product_data": {"name": "Calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    return client.v1.subscriptions.create(
        {
            "customer": customer_id,
            "items": [{"price": monthly_price(client).id}, {"price": per_call.id}],
        }
    )


def report_calls(client: stripe.StripeClient, customer_id: str, calls: int, at: int) -> None:
    client.v1.billing.meter_events.create(
        {
            "event_name": "calls",
            "timestamp": at,
            "payload": {"stripe_customer_id": customer_id, "value": str(calls)},
        }
    )


def test_cancel_at_period_end_bills_the_last_usage_and_ends_the_subscription(
    stripe_client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(stripe_client)
    subscription = metered_subscription(stripe_client, customer.id)
    stripe_client.v1.subscriptions.update(subscription.id, {"cancel_at_period_end": True})
    advance(stripe_client, clock.id, START + 10 * DAY)
    report_calls(stripe_client, customer.id, 100, START + 9 * DAY)
    period_end = add_interval(START, "month", 1, 1)
    advance(stripe_client, clock.id, period_end + 2 * HOUR)
    ended = stripe_client.v1.subscriptions.retrieve(subscription.id)
    assert (ended.status, ended.ended_at) == ("canceled", period_end)
    final = stripe_client.v1.invoices.list({"subscription": subscription.id, "limit": 1}).data[0]
    assert [(line.quantity, line.amount) for line in final.lines.data] == [(100, 300)]
    assert final.status == "paid"
    assert [
        e.type for e in stripe_client.v1.events.list({"type": "customer.subscription.deleted"}).data
    ] == ["customer.subscription.deleted"]


def test_cancelling_now_with_invoice_now_bills_usage_so_far(
    stripe_client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(stripe_client)
    subscription = metered_subscription(stripe_client, customer.id)
    advance(stripe_client, clock.id, START + 10 * DAY)
    report_calls(stripe_client, customer.id, 7, START + 2 * DAY)
    cancelled = stripe_client.v1.subscriptions.cancel(subscription.id, {"invoice_now": True})
    assert (cancelled.status, cancelled.canceled_at) == ("canceled", START + 10 * DAY)
    final = stripe_client.v1.invoices.list({"subscription": subscription.id, "limit": 1}).data[0]
    assert [(line.quantity, line.amount) for line in final.lines.data] == [(7, 21)]
    assert (final.period_start, final.period_end) == (START, START + 10 * DAY)
    assert stripe_client.v1.subscriptions.list({"customer": customer.id}).data == []


def test_a_subscription_billed_by_email_is_active_and_its_invoices_wait_for_payment(
    stripe_client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(stripe_client)
    subscription = stripe_client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": monthly_price(stripe_client).id}],
            "collection_method": "send_invoice",
            "days_until_due": 14,
        }
    )
    first = stripe_client.v1.invoices.retrieve(subscription.latest_invoice)
    assert (subscription.status, first.status, first.attempt_count) == ("active", "open", 0)
    assert first.due_date == START + 14 * DAY
    finalized = add_interval(START, "month", 1, 1) + HOUR
    advance(stripe_client, clock.id, finalized + HOUR)
    renewal = stripe_client.v1.invoices.list({"subscription": subscription.id, "limit": 1}).data[0]
    assert (renewal.status, renewal.due_date, renewal.next_payment_attempt) == (
        "open",
        finalized + 14 * DAY,
        None,
    )
    assert stripe_client.v1.subscriptions.retrieve(subscription.id).status == "active"
    with pytest.raises(stripe.InvalidRequestError) as no_due_date:
        stripe_client.raw_request(
            "post",
            "/v1/subscriptions",
            customer=customer.id,
            items=[{"price": monthly_price(stripe_client).id}],
            collection_method="send_invoice",
            days_until_due=14,
            due_date=START,
        )
    assert no_due_date.value.code == "parameter_unknown"


def test_first_invoice_declined_leaves_the_subscription_incomplete(
    stripe_client: stripe.StripeClient,
) -> None:
    _, customer = clock_customer(stripe_client, card="pm_card_chargeCustomerFail")
    subscription = stripe_client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": monthly_price(stripe_client).id}]}
    )
    first = stripe_client.v1.invoices.retrieve(subscription.latest_invoice)
    assert (subscription.status, first.status, first.attempt_count) == ("incomplete", "open", 1)


# The issue names pm_card_chargeDeclined as the failing default card. Real Stripe
# refuses to attach it (402); the sandbox deliberately attaches it and declines every
# charge, exactly like pm_card_chargeCustomerFail (README, "Known differences"). These
# tests are sandbox-only: the contract scenarios use pm_card_chargeCustomerFail.


def test_charge_declined_as_default_card_fails_renewals_with_retries_on_schedule(
    stripe_client: stripe.StripeClient,
) -> None:
    clock, customer = clock_customer(stripe_client, card="pm_card_chargeDeclined")
    default = stripe_client.v1.payment_methods.retrieve(
        customer.invoice_settings.default_payment_method
    )
    assert (default.customer, default.card.last4) == (customer.id, "0002")
    visa = stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    subscription = stripe_client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": monthly_price(stripe_client).id}],
            "default_payment_method": visa.id,
        }
    )
    assert subscription.status == "active"
    # From now on the customer's default card (pm_card_chargeDeclined) pays.
    stripe_client.v1.subscriptions.update(subscription.id, {"default_payment_method": ""})

    finalized = add_interval(START, "month", 1, 1) + HOUR
    advance(stripe_client, clock.id, finalized)
    renewal = stripe_client.v1.invoices.list({"subscription": subscription.id, "limit": 1}).data[0]
    assert renewal.billing_reason == "subscription_cycle"
    assert (renewal.status, renewal.attempt_count, renewal.amount_paid) == ("open", 1, 0)
    assert renewal.next_payment_attempt == finalized + 3 * DAY
    assert stripe_client.v1.subscriptions.retrieve(subscription.id).status == "past_due"

    advance(stripe_client, clock.id, finalized + 3 * DAY)
    renewal = stripe_client.v1.invoices.retrieve(renewal.id)
    assert (renewal.status, renewal.attempt_count) == ("open", 2)
    assert renewal.next_payment_attempt == finalized + 8 * DAY
    failures = stripe_client.v1.events.list({"type": "invoice.payment_failed"}).data
    assert [(e.data.object.id, e.data.object.attempt_count) for e in failures] == [
        (renewal.id, 2),
        (renewal.id, 1),
    ]

    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.invoices.pay(renewal.id)
    assert (declined.value.http_status, declined.value.code) == (402, "card_declined")
    with pytest.raises(stripe.CardError):
        stripe_client.v1.invoices.pay(renewal.id, {"payment_method": default.id})
    assert stripe_client.v1.invoices.retrieve(renewal.id).attempt_count == 4
    paid = stripe_client.v1.invoices.pay(renewal.id, {"payment_method": visa.id})
    assert (paid.status, paid.attempt_count, paid.next_payment_attempt) == ("paid", 5, None)
    assert stripe_client.v1.subscriptions.retrieve(subscription.id).status == "active"


def test_charge_declined_attaches_and_becomes_the_default_on_update(
    stripe_client: stripe.StripeClient,
) -> None:
    _, customer = clock_customer(stripe_client)
    attached = stripe_client.v1.payment_methods.attach(
        "pm_card_chargeDeclined", {"customer": customer.id}
    )
    assert (attached.customer, attached.card.last4) == (customer.id, "0002")
    updated = stripe_client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": "pm_card_chargeDeclined"}}
    )
    default = updated.invoice_settings.default_payment_method
    assert default is not None
    assert stripe_client.v1.payment_methods.retrieve(default).card.last4 == "0002"
    subscription = stripe_client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": monthly_price(stripe_client).id}]}
    )
    first = stripe_client.v1.invoices.retrieve(subscription.latest_invoice)
    assert (subscription.status, first.status, first.attempt_count) == ("incomplete", "open", 1)
    failed = stripe_client.v1.events.list({"type": "invoice.payment_failed"}).data
    assert [e.data.object.id for e in failed] == [first.id]


def test_charge_declined_given_for_one_payment_fails_it(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    invoice = stripe_client.v1.invoices.finalize_invoice(
        invoice_with(stripe_client, customer.id, {"amount": 900}).id
    )
    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_chargeDeclined"})
    assert (declined.value.http_status, declined.value.code) == (402, "card_declined")
    failed = stripe_client.v1.events.list({"type": "invoice.payment_failed"}).data
    assert [e.data.object.id for e in failed] == [invoice.id]
    paid = stripe_client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
    assert (paid.status, paid.attempt_count) == ("paid", 2)


def test_paid_out_of_band_marks_paid_without_a_charge(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create()
    invoice = stripe_client.v1.invoices.finalize_invoice(
        invoice_with(stripe_client, customer.id, {"amount": 900}).id
    )
    paid = stripe_client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})
    assert (paid.status, paid.amount_paid, paid.amount_paid_off_stripe, paid.attempt_count) == (
        "paid",
        0,
        900,
        0,
    )


def test_credit_note_on_a_paid_invoice_is_allocated_and_credits_the_balance(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create(
        {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    invoice = stripe_client.v1.invoices.finalize_invoice(
        invoice_with(stripe_client, customer.id, {"amount": 3000}).id
    )
    stripe_client.v1.invoices.pay(invoice.id)
    with pytest.raises(stripe.InvalidRequestError) as unbalanced:
        stripe_client.v1.credit_notes.create(
            {"invoice": invoice.id, "amount": 1000, "credit_amount": 400}
        )
    assert unbalanced.value.param == "credit_amount"
    note = stripe_client.v1.credit_notes.create({"invoice": invoice.id, "amount": 1000})
    assert (note.type, note.post_payment_amount, note.number) == (
        "post_payment",
        1000,
        f"{invoice.number}-CN-01",
    )
    assert stripe_client.v1.customers.retrieve(customer.id).balance == -1000
    refund = stripe_client.v1.credit_notes.create(
        {"invoice": invoice.id, "amount": 500, "refund_amount": 500}
    )
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.credit_notes.void_credit_note(refund.id)
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.credit_notes.create({"invoice": invoice.id, "amount": 1501})
    stripe_client.v1.credit_notes.void_credit_note(note.id)
    assert stripe_client.v1.customers.retrieve(customer.id).balance == 0


def test_invoice_list_filters_by_customer_status_and_subscription(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
) -> None:
    ada = stripe_client.v1.customers.create({"name": "Ada"})
    bob = stripe_client.v1.customers.create({"name": "Bob"})
    ada_draft = invoice_with(stripe_client, ada.id, {"amount": 100})
    ada_open = stripe_client.v1.invoices.finalize_invoice(
        invoice_with(stripe_client, ada.id, {"amount": 200}).id
    )
    bob_draft = invoice_with(stripe_client, bob.id, {"amount": 300})

    def ids(**filters: Any) -> list[str]:
        return [i.id for i in stripe_client.v1.invoices.list(filters).data]

    assert ids(customer=ada.id) == [ada_open.id, ada_draft.id]
    assert ids(status="draft") == [bob_draft.id, ada_draft.id]
    assert ids(customer=ada.id, status="open") == [ada_open.id]
    assert ids(subscription="sub_none") == []
