"""Billing meters, meter events, cancel adjustments and event summaries.

Stripe ingests meter events asynchronously; the sandbox applies them at once,
but keeps Stripe's synchronous rules: an `identifier` is unique (Stripe
promises at least 24 hours; the sandbox remembers it for good), a `timestamp`
lies within the past 35 days or 5 minutes ahead of the customer's clock (its
test clock when it has one), and an event can be cancelled only within 24
hours of being received."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from adapters.stripe.sandbox.catalog import json_number
from adapters.stripe.sandbox.clock import DAY, HOUR, MINUTE
from adapters.stripe.sandbox.context import Ctx, public, renders
from adapters.stripe.sandbox.customers import live_customer
from adapters.stripe.sandbox.errors import JsonDict, StripeError, invalid
from adapters.stripe.sandbox.forms import Params
from adapters.stripe.sandbox.pagination import list_response, newest_first
from adapters.stripe.sandbox.routing import Route, route

FORMULAS = ("sum", "count", "last")
WINDOWS = {"hour": HOUR, "day": DAY}
PAST_LIMIT = 35 * DAY
FUTURE_LIMIT = 5 * MINUTE
CANCEL_WINDOW = DAY
MAX_SUMMARY_WINDOWS = 10_000
EVENTS = "billing.meter_event"


# Meters -----------------------------------------------------------------------------


def _payload_key(p: Params, key: str, default: str) -> str:
    given = p.nested(key)
    if given is None:
        return default
    if key == "customer_mapping":
        given.choice("type", ("by_id",), required=True)
    value = given.text("event_payload_key", required=True)
    assert value is not None
    return value


def create_meter(ctx: Ctx, p: Params) -> JsonDict:
    display_name = p.text("display_name", required=True)
    event_name = p.text("event_name", required=True, max_length=100)
    aggregation = p.nested("default_aggregation", required=True)
    assert aggregation is not None
    formula = aggregation.choice("formula", FORMULAS, required=True)
    customer_key = _payload_key(p, "customer_mapping", "stripe_customer_id")
    value_key = _payload_key(p, "value_settings", "value")
    window = p.choice("event_time_window", tuple(WINDOWS))
    p.finish()
    if any(m["event_name"] == event_name for m in ctx.store.all("billing.meter")):
        raise invalid(f"A meter with event_name {event_name} already exists.", param="event_name")
    now = ctx.server.now()
    meter = {
        "id": ctx.store.new_id("mtr"),
        "object": "billing.meter",
        "created": now,
        "customer_mapping": {"event_payload_key": customer_key, "type": "by_id"},
        "default_aggregation": {"formula": formula},
        "display_name": display_name,
        "event_name": event_name,
        "event_time_window": window,
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": now,
        "value_settings": {"event_payload_key": value_key},
    }
    ctx.store.add("billing.meter", meter)
    ctx.emit("billing.meter.created", meter)
    return ctx.render(meter)


def retrieve_meter(ctx: Ctx, p: Params, meter_id: str) -> JsonDict:
    p.finish()
    return ctx.render(ctx.store.get("billing.meter", meter_id))


def update_meter(ctx: Ctx, p: Params, meter_id: str) -> JsonDict:
    meter = ctx.store.get("billing.meter", meter_id)
    display_name = p.text("display_name")
    p.finish()
    before = ctx.render(meter)
    if display_name:
        meter["display_name"] = display_name
        meter["updated"] = ctx.server.now()
    ctx.emit_updated("billing.meter.updated", meter, before)
    return ctx.render(meter)


def _set_status(ctx: Ctx, p: Params, meter_id: str, active: bool) -> JsonDict:
    p.finish()
    meter = ctx.store.get("billing.meter", meter_id)
    wanted = "active" if active else "inactive"
    if meter["status"] == wanted:
        raise invalid(f"The meter is already {wanted}.")
    now = ctx.server.now()
    meter.update(status=wanted, updated=now)
    meter["status_transitions"]["deactivated_at"] = None if active else now
    ctx.emit("billing.meter.reactivated" if active else "billing.meter.deactivated", meter)
    return ctx.render(meter)


def list_meters(ctx: Ctx, p: Params) -> JsonDict:
    status = p.choice("status", ("active", "inactive"))
    found = [m for m in ctx.store.all("billing.meter") if status in (None, m["status"])]
    result = list_response(ctx, p, newest_first(found), "/v1/billing/meters")
    p.finish()
    return result


# Meter events -----------------------------------------------------------------------


def _active_meter(ctx: Ctx, event_name: str) -> JsonDict:
    for meter in ctx.store.all("billing.meter"):
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    raise invalid(
        f"Invalid event_name: {event_name}. No active meter found with this event name.",
        param="event_name",
    )


def _event_value(meter: JsonDict, payload: Params) -> Decimal:
    key = meter["value_settings"]["event_payload_key"]
    raw = payload.text(key)
    if raw is None:
        if meter["default_aggregation"]["formula"] == "count":
            return Decimal(1)
        raise invalid(f"Missing required payload key: {key}.", param=payload.name(key))
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise invalid(f"Invalid payload value: {raw} is not a number.", param=payload.name(key))
    return value


def _check_timestamp(timestamp: int, now: int) -> None:
    if timestamp < now - PAST_LIMIT:
        raise invalid(
            "Timestamp must be within the past 35 calendar days.",
            param="timestamp",
            code="timestamp_too_far_in_past",
        )
    if timestamp > now + FUTURE_LIMIT:
        raise invalid(
            "Timestamp must not be more than 5 minutes in the future.",
            param="timestamp",
            code="timestamp_in_future",
        )


def create_meter_event(ctx: Ctx, p: Params) -> JsonDict:
    event_name = p.text("event_name", required=True, max_length=100)
    assert event_name is not None
    payload = p.nested("payload", required=True)
    assert payload is not None
    identifier = p.text("identifier", max_length=100) or ctx.store.new_id("mevt")
    timestamp = p.integer("timestamp", minimum=0)
    meter = _active_meter(ctx, event_name)
    customer_key = meter["customer_mapping"]["event_payload_key"]
    customer = live_customer(ctx, payload.text(customer_key), payload.name(customer_key))
    value = _event_value(meter, payload)
    values = payload.free_form()
    p.finish()
    now = ctx.now_of(customer)
    timestamp = now if timestamp is None else timestamp
    _check_timestamp(timestamp, now)
    if ctx.store.has(EVENTS, identifier):
        raise StripeError(
            400,
            "invalid_request_error",
            f"An event already exists with identifier {identifier}.",
            param="identifier",
            headers={"Stripe-Should-Retry": "false"},
        )
    event = {
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": values,
        "timestamp": timestamp,
        "_meter": meter["id"],
        "_customer": customer["id"],
        "_value": str(value),
        "_received": ctx.server.now(),
        "_cancelled": False,
    }
    ctx.store.next_seq()
    ctx.store.add(EVENTS, event, key=identifier)
    return public(event)


def create_adjustment(ctx: Ctx, p: Params) -> JsonDict:
    event_name = p.text("event_name", required=True)
    p.choice("type", ("cancel",), required=True)
    cancel = p.nested("cancel", required=True)
    assert cancel is not None
    identifier = cancel.text("identifier", required=True)
    assert identifier is not None
    p.finish()
    event = ctx.store.lookup(EVENTS, identifier)
    if event is None or event["event_name"] != event_name:
        raise invalid(
            f"No meter event with identifier {identifier} for event_name {event_name}.",
            param="cancel[identifier]",
        )
    if ctx.server.now() - int(event["_received"]) > CANCEL_WINDOW:
        raise invalid(
            "You can only cancel events within 24 hours of Stripe receiving them.",
            param="cancel[identifier]",
        )
    if event["_cancelled"]:
        raise invalid(
            f"The meter event {identifier} is already cancelled.", param="cancel[identifier]"
        )
    event["_cancelled"] = True
    return {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": event_name,
        "livemode": False,
        "status": "complete",
        "type": "cancel",
    }


# Aggregation and summaries ----------------------------------------------------------


def _counted_events(
    ctx: Ctx, meter: JsonDict, customer_id: str, start: int, end: int
) -> list[JsonDict]:
    events = [
        e
        for e in ctx.store.scan(EVENTS)
        if e["_meter"] == meter["id"]
        and e["_customer"] == customer_id
        and not e["_cancelled"]
        and start <= e["timestamp"] < end
    ]
    events.sort(key=lambda e: (e["timestamp"], e["_seq"]))
    window = WINDOWS.get(meter["event_time_window"] or "")
    if window:
        # Pre-aggregated reporting: only the latest event of each window counts.
        latest = {e["timestamp"] // window: e for e in events}
        events = [latest[k] for k in sorted(latest)]
    return events


def aggregate(ctx: Ctx, meter_id: str, customer_id: str, start: int, end: int) -> Decimal:
    meter = ctx.store.get("billing.meter", meter_id)
    events = _counted_events(ctx, meter, customer_id, start, end)
    formula = meter["default_aggregation"]["formula"]
    if formula == "count":
        return Decimal(len(events))
    if formula == "last":
        return Decimal(events[-1]["_value"]) if events else Decimal(0)
    return sum((Decimal(e["_value"]) for e in events), Decimal(0))


def list_summaries(ctx: Ctx, p: Params, meter_id: str) -> JsonDict:
    meter = ctx.store.get("billing.meter", meter_id)
    customer = live_customer(ctx, p.text("customer", required=True))
    start = p.integer("start_time", required=True, minimum=0)
    end = p.integer("end_time", required=True, minimum=0)
    assert start is not None
    assert end is not None
    grouping = p.choice("value_grouping_window", tuple(WINDOWS))
    step = WINDOWS[grouping] if grouping else MINUTE
    if start >= end:
        raise invalid("start_time must be before end_time.", param="start_time")
    if grouping and (end - start) // step > MAX_SUMMARY_WINDOWS:
        raise invalid(f"At most {MAX_SUMMARY_WINDOWS} {grouping}s per request.", param="end_time")
    if start % step or end % step:
        raise invalid(
            f"start_time and end_time must be aligned to {grouping or 'minute'} boundaries.",
            param="start_time",
        )
    bounds = (
        [(t, min(t + step, end)) for t in range(start, end, step)] if grouping else [(start, end)]
    )
    summaries = [_summary(ctx, meter, customer["id"], s, e) for s, e in reversed(bounds)]
    url = f"/v1/billing/meters/{meter_id}/event_summaries"
    result = list_response(ctx, p, summaries, url, render=lambda s: s)
    p.finish()
    return result


def _summary(ctx: Ctx, meter: JsonDict, customer_id: str, start: int, end: int) -> JsonDict:
    value = aggregate(ctx, meter["id"], customer_id, start, end)
    return {
        "id": f"mtrusg_{meter['id'].split('_', 1)[1]}_{start}_{end}",
        "object": "billing.meter_event_summary",
        "aggregated_value": json_number(value),
        "end_time": end,
        "livemode": False,
        "meter": meter["id"],
        "start_time": start,
    }


@renders("billing.meter")
def render_meter(ctx: Ctx, meter: JsonDict) -> JsonDict:
    return public(meter)


ROUTES: list[Route] = [
    route("POST", "/v1/billing/meters", create_meter),
    route("GET", "/v1/billing/meters", list_meters),
    route("GET", "/v1/billing/meters/{id}", retrieve_meter),
    route("POST", "/v1/billing/meters/{id}", update_meter),
    route(
        "POST",
        "/v1/billing/meters/{id}/deactivate",
        lambda ctx, p, mid: _set_status(ctx, p, mid, active=False),
    ),
    route(
        "POST",
        "/v1/billing/meters/{id}/reactivate",
        lambda ctx, p, mid: _set_status(ctx, p, mid, active=True),
    ),
    route("GET", "/v1/billing/meters/{id}/event_summaries", list_summaries),
    route("POST", "/v1/billing/meter_events", create_meter_event),
    route("POST", "/v1/billing/meter_event_adjustments", create_adjustment),
]
