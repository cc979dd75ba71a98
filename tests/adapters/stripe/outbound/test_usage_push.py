"""Usage pushed as Billing Meter events, over HTTP to the sandbox: one event per
entity and day with a deterministic identifier, corrections for what was counted
later, every push recorded on the day's Usage; faults (429, 500, dropped
connections, slow answers) and a crash between Stripe's answer and the ledger
write never make Stripe count a call twice."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from adapters.stripe.outbound.catalog import meter_id
from adapters.stripe.outbound.outbox import StripeUnavailable
from adapters.stripe.outbound.usage import push_usage, usage_key

from .conftest import Crash, World, crash_once

JULY = [date(2026, 7, d) for d in range(1, 32)]


def meter_total(world: World, entity_id: str, first: date, last: date) -> Decimal:
    """What Stripe's meter holds for the entity's days first..last (local)."""
    zone = ZoneInfo(world.ledger.entity(entity_id).timezone)
    customer = world.ledger.entity(entity_id).stripe_customer_id
    assert customer is not None
    start = int(datetime.combine(first, time(0), zone).timestamp())
    end = int(datetime.combine(last + timedelta(days=1), time(0), zone).timestamp())
    summaries = world.client.v1.billing.meters.event_summaries.list(
        meter_id(world.outbox()), {"customer": customer, "start_time": start, "end_time": end}
    )
    return sum((Decimal(str(s.aggregated_value)) for s in summaries.data), Decimal(0))


def meter_posts(world: World) -> list[dict[str, object]]:
    return world.posts("/v1/billing/meter_events")


def setup(world: World) -> None:
    world.push("push")
    world.calls("acme", date(2026, 7, 1), 12)
    world.calls("acme", date(2026, 7, 2), 7)
    world.calls("beta", date(2026, 7, 1), 30)
    world.calls("beta", date(2026, 7, 3), 5)


def test_one_meter_event_per_entity_and_day_with_the_days_calls(world: World) -> None:
    setup(world)
    world.at(datetime(2026, 7, 5, 6, 0, tzinfo=UTC))
    outbox = world.outbox("usage-push-1")
    report = push_usage(outbox)
    pushed = {(p.entity_id, p.day): p.quantity for p in report.pushed}
    assert pushed == {
        ("acme", date(2026, 7, 1)): 12,
        ("acme", date(2026, 7, 2)): 7,
        ("beta", date(2026, 7, 1)): 30,
        ("beta", date(2026, 7, 3)): 5,
    }
    assert meter_total(world, "acme", date(2026, 7, 1), date(2026, 7, 31)) == 19
    assert meter_total(world, "beta", date(2026, 7, 1), date(2026, 7, 31)) == 35
    # Each day holds the push: quantity, identifier, when, and the run as source.
    usage = world.ledger.usage("acme", date(2026, 7, 1))
    assert usage is not None
    [reported] = usage.reports
    assert reported.quantity == 12
    assert reported.identifier == usage_key("acme", date(2026, 7, 1), 1)
    assert reported.kind == "report"
    assert reported.reported_at == world.clock.now
    assert reported.source == outbox.source
    # The identifier Stripe got is the deterministic one.
    sent = {p["idempotency_key"] for p in meter_posts(world)}
    assert usage_key("beta", date(2026, 7, 3), 1) in sent
    # Nothing new: nothing sent.
    posts = len(meter_posts(world))
    again = push_usage(world.outbox("usage-push-2"))
    assert again.pushed == []
    assert again.up_to_date == 4
    assert len(meter_posts(world)) == posts


def test_calls_counted_after_the_push_go_as_a_correction(world: World) -> None:
    setup(world)
    world.at(datetime(2026, 7, 5, 6, 0, tzinfo=UTC))
    push_usage(world.outbox())
    world.calls("acme", date(2026, 7, 2), 4, prefix="late")
    report = push_usage(world.outbox("correction-run"))
    assert [(p.entity_id, p.day, p.quantity, p.correction) for p in report.pushed] == [
        ("acme", date(2026, 7, 2), 4, True)
    ]
    usage = world.ledger.usage("acme", date(2026, 7, 2))
    assert usage is not None
    assert [(r.quantity, r.kind, r.identifier) for r in usage.reports] == [
        (7, "report", usage_key("acme", date(2026, 7, 2), 1)),
        (4, "correction", usage_key("acme", date(2026, 7, 2), 2)),
    ]
    assert usage.reported_quantity == usage.calls == 11
    assert meter_total(world, "acme", date(2026, 7, 1), date(2026, 7, 31)) == 23


def test_only_days_that_are_over_in_the_entitys_zone_are_pushed(world: World) -> None:
    world.push()
    world.calls("acme", date(2026, 7, 3), 3)
    world.calls("beta", date(2026, 7, 3), 2)
    # 23:30 UTC on 3 July: over in Paris (01:30 on the 4th), not in Chicago (18:30).
    world.at(datetime(2026, 7, 3, 23, 30, tzinfo=UTC))
    report = push_usage(world.outbox())
    assert [(p.entity_id, p.day) for p in report.pushed] == [("acme", date(2026, 7, 3))]
    asked = push_usage(world.outbox(), days=[date(2026, 7, 3)])
    assert asked.not_over == [("beta", date(2026, 7, 3))]


def test_a_crash_after_stripe_took_the_event_never_counts_it_twice(world: World) -> None:
    setup(world)
    world.at(datetime(2026, 7, 5, 6, 0, tzinfo=UTC))
    hook, crashed = crash_once(usage_key("beta", date(2026, 7, 1), 1))
    with pytest.raises(Crash):
        push_usage(world.outbox(after_call=hook))
    assert crashed
    # Meanwhile more calls of that day arrive; the rerun first sends the recorded
    # request as it was, then the difference as a correction.
    world.calls("beta", date(2026, 7, 1), 3, prefix="late")
    report = push_usage(world.outbox("rerun"))
    assert ("beta", date(2026, 7, 1), 30) in [
        (p.entity_id, p.day, p.quantity) for p in report.pushed
    ]
    push_usage(world.outbox("next"))
    usage = world.ledger.usage("beta", date(2026, 7, 1))
    assert usage is not None
    assert [(r.quantity, r.kind) for r in usage.reports] == [(30, "report"), (3, "correction")]
    assert meter_total(world, "beta", date(2026, 7, 1), date(2026, 7, 31)) == 38
    first = [
        p
        for p in meter_posts(world)
        if p["idempotency_key"] == usage_key("beta", date(2026, 7, 1), 1)
    ]
    assert [p["replayed"] for p in first] == [False, True]


def test_faults_are_retried_under_the_same_key(world: World) -> None:
    setup(world)
    world.at(datetime(2026, 7, 5, 6, 0, tzinfo=UTC))
    control = world.sandbox.control
    path = "/v1/billing/meter_events"
    # 429 without Stripe-Should-Retry: the SDK gives up, the outbox backs off.
    control.fail_next(429, 2, path=path, should_retry=False)
    # A 500 after Stripe did the work, and a connection dropped after it: the
    # SDK retries with the same key and gets the first answer.
    control.fail_next(500, 1, when="after", path=path)
    control.drop_connections(1, when="after", path=path)
    control.add_latency(150, 2, path=path)
    report = push_usage(world.outbox())
    assert len(report.pushed) == 4
    assert world.slept == [0.5, 1.0]
    armed = control.faults()
    assert armed["http"] == []  # every fault was met
    assert meter_total(world, "acme", date(2026, 7, 1), date(2026, 7, 31)) == 19
    assert meter_total(world, "beta", date(2026, 7, 1), date(2026, 7, 31)) == 35
    # Four events, each under its one key, however many times it was sent.
    assert len({p["idempotency_key"] for p in meter_posts(world)}) == 4


def test_stripe_failing_stops_the_push_and_the_rerun_finishes_it(world: World) -> None:
    setup(world)
    world.at(datetime(2026, 7, 5, 6, 0, tzinfo=UTC))
    world.sandbox.control.fail_next(503, 8, path="/v1/billing/meter_events")
    with pytest.raises(StripeUnavailable):
        push_usage(world.outbox())
    world.sandbox.control.clear_faults()
    report = push_usage(world.outbox())
    done = {(p.entity_id, p.day) for p in report.pushed}
    assert len(done) == 4
    assert meter_total(world, "beta", date(2026, 7, 1), date(2026, 7, 31)) == 35


def test_a_day_stripe_refuses_is_recorded_and_not_sent_again(world: World) -> None:
    world.push()
    world.calls("acme", date(2026, 7, 1), 2)
    # 50 days later the day is outside Stripe's 35 days: asked for explicitly,
    # Stripe refuses it, and the refusal is recorded.
    world.at(datetime(2026, 8, 20, 12, 0, tzinfo=UTC))
    report = push_usage(world.outbox(), days=[date(2026, 7, 1)])
    assert report.pushed == []
    [(entity_id, day, why)] = report.refused
    assert (entity_id, day) == ("acme", date(2026, 7, 1))
    assert "35" in why
    request = world.ledger.stripe_request(usage_key("acme", date(2026, 7, 1), 1))
    assert request is not None
    assert request.refused
    posts = len(meter_posts(world))
    again = push_usage(world.outbox(), days=[date(2026, 7, 1)])
    assert len(again.refused) == 1
    assert len(meter_posts(world)) == posts
    # The default window leaves such days out.
    assert push_usage(world.outbox()).refused == []
