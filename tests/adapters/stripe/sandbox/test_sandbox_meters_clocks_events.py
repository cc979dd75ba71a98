"""Billing meters (event rules, aggregation, adjustments, summaries), test
clocks (advancing then ready, the advance limit) and the events list."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from adapters.stripe.sandbox import RunningSandbox, wait_until
from adapters.stripe.sandbox.clock import DAY, HOUR, MINUTE

START = 1767225600  # 2026-01-01T00:00:00Z


def meter(client: stripe.StripeClient, formula: str = "sum", name: str = "calls") -> Any:
    return client.v1.billing.meters.create(
        {
            "display_name": name.title(),
            "event_name": name,
            "default_aggregation": {"formula": formula},
        }
    )


def report(
    client: stripe.StripeClient,
    customer_id: str,
    value: int,
    timestamp: int,
    event_name: str = "calls",
    identifier: str | None = None,
) -> Any:
    params: Any = {
        "event_name": event_name,
        "timestamp": timestamp,
        "payload": {"stripe_customer_id": customer_id, "value": str(value)},
    }
    if identifier:
        params["identifier"] = identifier
    return client.v1.billing.meter_events.create(params)


def usage(
    client: stripe.StripeClient,
    meter_id: str,
    customer_id: str,
    start: int,
    end: int,
    window: str | None = None,
) -> list[tuple[int, float]]:
    params: Any = {"customer": customer_id, "start_time": start, "end_time": end}
    if window:
        params["value_grouping_window"] = window
    summaries = client.v1.billing.meters.event_summaries.list(meter_id, params)
    return [(s.start_time, s.aggregated_value) for s in summaries.auto_paging_iter()]


@pytest.fixture
def on_clock(stripe_client: stripe.StripeClient) -> tuple[Any, Any]:
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": START})
    customer = stripe_client.v1.customers.create(
        {
            "test_clock": clock.id,
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    return clock, customer


def advance(client: stripe.StripeClient, clock_id: str, frozen_time: int) -> Any:
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": frozen_time})
    return wait_until(
        lambda: client.v1.test_helpers.test_clocks.retrieve(clock_id),
        lambda clock: clock.status == "ready",
        timeout=10,
    )


# Meter events -------------------------------------------------------------------------


def test_meter_event_timestamps_must_be_within_35_days_back_and_5_minutes_ahead(
    stripe_client: stripe.StripeClient,
    on_clock: tuple[Any, Any],
) -> None:
    _, customer = on_clock
    meter(stripe_client)
    report(stripe_client, customer.id, 1, START - 35 * DAY)
    report(stripe_client, customer.id, 1, START + 5 * MINUTE)
    with pytest.raises(stripe.InvalidRequestError) as too_old:
        report(stripe_client, customer.id, 1, START - 35 * DAY - 1)
    with pytest.raises(stripe.InvalidRequestError) as too_new:
        report(stripe_client, customer.id, 1, START + 5 * MINUTE + 1)
    assert (too_old.value.code, too_new.value.code) == (
        "timestamp_too_far_in_past",
        "timestamp_in_future",
    )
    assert too_old.value.param == "timestamp"


def test_a_duplicate_identifier_is_refused_and_not_counted(
    stripe_client: stripe.StripeClient,
    on_clock: tuple[Any, Any],
) -> None:
    _, customer = on_clock
    calls = meter(stripe_client)
    event = report(stripe_client, customer.id, 10, START - HOUR, identifier="day-1")
    assert (event.identifier, event.payload["value"]) == ("day-1", "10")
    with pytest.raises(stripe.InvalidRequestError) as duplicate:
        report(stripe_client, customer.id, 99, START - HOUR, identifier="day-1")
    assert duplicate.value.http_status == 400
    assert duplicate.value.headers is not None
    assert duplicate.value.headers.get("Stripe-Should-Retry") == "false"
    assert usage(stripe_client, calls.id, customer.id, START - DAY, START) == [(START - DAY, 10)]


def test_events_for_an_unknown_meter_or_customer_are_refused(
    stripe_client: stripe.StripeClient,
    on_clock: tuple[Any, Any],
) -> None:
    _, customer = on_clock
    meter(stripe_client)
    with pytest.raises(stripe.InvalidRequestError) as no_meter:
        report(stripe_client, customer.id, 1, START, event_name="texts")
    with pytest.raises(stripe.InvalidRequestError) as no_customer:
        report(stripe_client, "cus_unknown", 1, START)
    assert (no_meter.value.param, no_customer.value.param) == (
        "event_name",
        "payload[stripe_customer_id]",
    )


# "last" is the value with the latest timestamp, not the last one reported.
@pytest.mark.parametrize(("formula", "expected"), [("sum", 60), ("count", 3), ("last", 25)])
def test_meters_aggregate_with_sum_count_or_last(
    stripe_client: stripe.StripeClient,
    on_clock: tuple[Any, Any],
    formula: str,
    expected: int,
) -> None:
    _, customer = on_clock
    calls = meter(stripe_client, formula)
    for offset, value in ((3, 20), (1, 25), (2, 15)):  # reported out of order
        report(stripe_client, customer.id, value, START - offset * HOUR)
    assert usage(stripe_client, calls.id, customer.id, START - DAY, START) == [
        (START - DAY, expected)
    ]


def test_summaries_group_by_day_newest_first(
    stripe_client: stripe.StripeClient,
    on_clock: tuple[Any, Any],
) -> None:
    _, customer = on_clock
    calls = meter(stripe_client)
    report(stripe_client, customer.id, 5, START - 2 * DAY + HOUR)
    report(stripe_client, customer.id, 7, START - DAY + HOUR)
    report(stripe_client, customer.id, 1, START - DAY + 2 * HOUR)
    assert usage(stripe_client, calls.id, customer.id, START - 3 * DAY, START, "day") == [
        (START - DAY, 8),
        (START - 2 * DAY, 5),
        (START - 3 * DAY, 0),
    ]
    with pytest.raises(stripe.InvalidRequestError):
        usage(stripe_client, calls.id, customer.id, START - DAY + 1, START, "day")


def test_an_event_can_be_cancelled_within_24_hours_of_receipt_only(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
    on_clock: tuple[Any, Any],
) -> None:
    _, customer = on_clock
    calls = meter(stripe_client)
    report(stripe_client, customer.id, 10, START - HOUR, identifier="a")
    report(stripe_client, customer.id, 20, START - HOUR, identifier="b")
    cancelled = stripe_client.v1.billing.meter_event_adjustments.create(
        {"event_name": "calls", "type": "cancel", "cancel": {"identifier": "a"}}
    )
    assert (cancelled.status, cancelled.cancel.identifier) == ("complete", "a")
    assert usage(stripe_client, calls.id, customer.id, START - DAY, START) == [(START - DAY, 20)]
    sandbox.control.advance_server_clock(DAY + 1)
    with pytest.raises(stripe.InvalidRequestError) as too_late:
        stripe_client.v1.billing.meter_event_adjustments.create(
            {"event_name": "calls", "type": "cancel", "cancel": {"identifier": "b"}}
        )
    assert "within 24 hours" in str(too_late.value.user_message)


def test_meters_list_retrieve_deactivate_and_refuse_a_second_meter_for_an_event_name(
    stripe_client: stripe.StripeClient,
) -> None:
    calls = meter(stripe_client)
    with pytest.raises(stripe.InvalidRequestError):
        meter(stripe_client)
    assert stripe_client.v1.billing.meters.retrieve(calls.id).event_name == "calls"
    off = stripe_client.v1.billing.meters.deactivate(calls.id)
    assert (off.status, off.status_transitions.deactivated_at is not None) == ("inactive", True)
    assert stripe_client.v1.billing.meters.list({"status": "active"}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount": 1,
                "product_data": {"name": "Calls"},
                "recurring": {"interval": "month", "usage_type": "metered", "meter": calls.id},
            }
        )


def test_a_metered_price_needs_a_meter(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.prices.create(
            {
                "currency": "usd",
                "unit_amount": 1,
                "product_data": {"name": "Calls"},
                "recurring": {"interval": "month", "usage_type": "metered"},
            }
        )
    assert refused.value.param == "recurring[meter]"


# Test clocks --------------------------------------------------------------------------


def test_advancing_a_clock_answers_advancing_then_becomes_ready(
    stripe_client: stripe.StripeClient,
    on_clock: tuple[Any, Any],
) -> None:
    clock, _ = on_clock
    answer = stripe_client.v1.test_helpers.test_clocks.advance(
        clock.id, {"frozen_time": START + DAY}
    )
    assert answer.status == "advancing"
    assert answer.status_details.advancing.target_frozen_time == START + DAY
    ready = advance(stripe_client, clock.id, START + 2 * DAY)
    assert (ready.status, ready.frozen_time) == ("ready", START + 2 * DAY)
    types = [
        e.type for e in stripe_client.v1.events.list({"type": "test_helpers.test_clock.*"}).data
    ]
    assert types[:2] == ["test_helpers.test_clock.ready", "test_helpers.test_clock.advancing"]


def test_a_clock_advances_at_most_two_intervals_of_its_shortest_subscription(
    stripe_client: stripe.StripeClient,
    on_clock: tuple[Any, Any],
) -> None:
    clock, customer = on_clock
    weekly = stripe_client.v1.prices.create(
        {
            "currency": "usd",
            "unit_amount": 100,
            "recurring": {"interval": "week"},
            "product_data": {"name": "Weekly"},
        }
    )
    stripe_client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": weekly.id}]}
    )
    with pytest.raises(stripe.InvalidRequestError) as too_far:
        stripe_client.v1.test_helpers.test_clocks.advance(
            clock.id, {"frozen_time": START + 14 * DAY + 1}
        )
    assert too_far.value.param == "frozen_time"
    advance(stripe_client, clock.id, START + 14 * DAY)
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": START})
    invoices = stripe_client.v1.invoices.list({"customer": customer.id}).data
    assert [i.billing_reason for i in invoices] == [
        "subscription_cycle",
        "subscription_cycle",
        "subscription_create",
    ]


def test_a_clock_without_subscriptions_advances_up_to_two_years(
    stripe_client: stripe.StripeClient,
    on_clock: tuple[Any, Any],
) -> None:
    clock, _ = on_clock
    two_years = 1830297600  # 2028-01-01
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": two_years + 1})
    assert advance(stripe_client, clock.id, two_years).frozen_time == two_years


def test_deleting_a_clock_deletes_its_customers(
    stripe_client: stripe.StripeClient,
    on_clock: tuple[Any, Any],
) -> None:
    clock, customer = on_clock
    deleted = stripe_client.v1.test_helpers.test_clocks.delete(clock.id)
    assert deleted.deleted is True
    assert stripe_client.v1.customers.retrieve(customer.id).deleted is True
    assert stripe_client.v1.test_helpers.test_clocks.list().data == []


# Events -------------------------------------------------------------------------------


def test_events_filter_by_type_types_and_created(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create()
    sandbox.control.advance_server_clock(HOUR)
    product = stripe_client.v1.products.create({"name": "Calls"})
    stripe_client.v1.customers.update(customer.id, {"name": "Ada"})

    def types(**filters: Any) -> list[str]:
        return [e.type for e in stripe_client.v1.events.list(filters).data]

    assert types() == ["customer.updated", "product.created", "customer.created"]
    assert types(type="customer.*") == ["customer.updated", "customer.created"]
    assert types(types=["product.created", "customer.created"]) == [
        "product.created",
        "customer.created",
    ]
    assert types(created={"gte": product.created}) == ["customer.updated", "product.created"]
    update = stripe_client.v1.events.list({"type": "customer.updated"}).data[0]
    assert update.data.previous_attributes.to_dict() == {"name": None}
    assert stripe_client.v1.events.retrieve(update.id).data.object.name == "Ada"


def test_events_are_kept_for_30_days_of_server_clock_time(
    sandbox: RunningSandbox,
    stripe_client: stripe.StripeClient,
) -> None:
    stripe_client.v1.customers.create()
    old = stripe_client.v1.events.list().data[0]
    sandbox.control.advance_server_clock(30 * DAY + 1)
    stripe_client.v1.products.create({"name": "Fresh"})
    assert [e.type for e in stripe_client.v1.events.list().data] == ["product.created"]
    with pytest.raises(stripe.InvalidRequestError) as gone:
        stripe_client.v1.events.retrieve(old.id)
    assert gone.value.http_status == 404


def test_event_request_records_the_idempotency_key(stripe_client: stripe.StripeClient) -> None:
    stripe_client.v1.customers.create({}, {"idempotency_key": "evt-key"})
    event = stripe_client.v1.events.list().data[0]
    assert event.request.idempotency_key == "evt-key"
    assert event.request.id.startswith("req_")
