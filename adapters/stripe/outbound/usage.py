"""Usage pushed to Stripe as Billing Meter events: one event per entity and day,
its value the calls the ledger counted that day; when more calls of a day are
recorded after it was pushed, a correction event carries the difference. Each is
recorded on the day's Usage as `UsageReported` (quantity, identifier, when, the
push run as its source; kind report or correction).

- Identifier and idempotency key: `billtrail/usage/<entity>/<day>/<n>`, n the
  n-th report of that day. The request (with its value) is recorded before it is
  sent, so a rerun after a crash sends the same event again (Stripe replays it, and
  would refuse a second event with that identifier anyway) instead of a new one.
- Timestamp: noon of the day in the entity's time zone, so the event falls in the
  billing period that holds that day (periods run from local midnight).
- Which days: a day is pushed once it is over in the entity's time zone, and only
  within Stripe's window (timestamps at most 35 days old). Calls can only be added
  to a day, so a correction is always an increase.
- A correction after the period's invoice was finalized is recorded but billed by
  no invoice; `reconcile` reports it (quantity_differs)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import stripe
from stripe.params.billing import MeterEventCreateParams

from adapters.stripe.outbound.catalog import METER_EVENT_NAME, meter_id
from adapters.stripe.outbound.outbox import Outbox, StripeRefused, was_replayed
from ledger.stripe_outbox.application import RequestSpec, UsageAnswer
from ledger.stripe_outbox.domain import StripeRequest

OPERATION = "billing.meter_events.create"
# Stripe takes meter events up to 35 days old; the newest complete day is
# yesterday, so 34 days back keeps every timestamp (local noon) inside.
WINDOW_DAYS = 34
# Answers recorded per ledger transaction. A crash loses at most this many
# records, which the rerun sends again under the same keys.
BATCH = 50
MAX_IDENTIFIER = 100


def usage_key(entity_id: str, day: date, n: int) -> str:
    return f"billtrail/usage/{entity_id}/{day.isoformat()}/{n}"


def meter_identifier(prefix: str, key: str) -> str:
    """The event's identifier: its key, under Stripe's 100 characters (a long
    entity id is shortened to a digest, the same on every run)."""
    identifier = prefix + key
    if len(identifier) <= MAX_IDENTIFIER:
        return identifier
    return f"{prefix}billtrail/usage/{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def meter_timestamp(day: date, zone: ZoneInfo) -> int:
    """Noon of `day` in the entity's zone, as Stripe's Unix timestamp."""
    return int(datetime.combine(day, time(12), zone).astimezone(UTC).timestamp())


@dataclass(frozen=True)
class PushedDay:
    entity_id: str
    day: date
    quantity: int
    identifier: str
    replayed: bool
    correction: bool  # the day had been pushed before: this is the difference


@dataclass
class UsagePushReport:
    pushed: list[PushedDay] = field(default_factory=list)
    refused: list[tuple[str, date, str]] = field(default_factory=list)
    up_to_date: int = 0  # days already pushed in full
    not_over: list[tuple[str, date]] = field(default_factory=list)  # asked for, not over yet
    no_customer: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Work:
    entity_id: str
    day: date
    key: str


def push_usage(
    outbox: Outbox,
    *,
    days: Sequence[date] | None = None,
    entity_ids: Sequence[str] | None = None,
) -> UsagePushReport:
    """Push what each entity's days hold beyond what was pushed before. `days`:
    those days only (default: every complete day of the last 34)."""
    ledger = outbox.ledger
    meter_id(outbox)  # refuse early when the meter was never pushed
    report = UsagePushReport()
    now = ledger.clock()
    specs: list[RequestSpec] = []
    work: list[_Work] = []
    for entity in ledger.entities():
        if entity_ids is not None and entity.entity_id not in entity_ids:
            continue
        customer = entity.stripe_customer_id
        zone = ZoneInfo(entity.timezone)
        today = now.astimezone(zone).date()
        wanted = (
            sorted(set(days))
            if days is not None
            else [today - timedelta(days=k) for k in range(WINDOW_DAYS, 0, -1)]
        )
        for day in wanted:
            usage = ledger.usage(entity.entity_id, day)
            if usage is None:
                continue
            if day >= today:
                report.not_over.append((entity.entity_id, day))
                continue
            if customer is None:
                if entity.entity_id not in report.no_customer:
                    report.no_customer.append(entity.entity_id)
                continue
            key = usage_key(entity.entity_id, day, len(usage.reports) + 1)
            pending = ledger.stripe_request(key)
            if pending is not None:
                if pending.refused:
                    report.refused.append((entity.entity_id, day, pending.refusal or ""))
                else:
                    work.append(_Work(entity.entity_id, day, key))  # sent before, unrecorded
                continue
            missing = usage.calls - usage.reported_quantity
            if missing <= 0:
                report.up_to_date += 1
                continue
            params: MeterEventCreateParams = {
                "event_name": METER_EVENT_NAME,
                "identifier": meter_identifier(outbox.key_prefix, key),
                "timestamp": meter_timestamp(day, zone),
                "payload": {"stripe_customer_id": customer, "value": str(missing)},
            }
            specs.append(RequestSpec(key, OPERATION, dict(params)))
            work.append(_Work(entity.entity_id, day, key))
    prepared = {r.key: r for r in ledger.prepare_stripe_requests(specs, outbox.source)}
    answers: list[UsageAnswer] = []
    for item in work:
        request = prepared.get(item.key) or ledger.stripe_request(item.key)
        assert request is not None, item.key  # prepared above, or found pending
        try:
            answers.append(_send(outbox, item, request))
        except StripeRefused as refused:
            report.refused.append((item.entity_id, item.day, str(refused)))
            continue
        if len(answers) >= BATCH:
            _record(outbox, answers, report)
    _record(outbox, answers, report)
    return report


def _send(outbox: Outbox, item: _Work, request: StripeRequest) -> UsageAnswer:
    obj = outbox.send(
        request, outbox.client.v1.billing.meter_events.create, done_already=_identifier_taken
    )
    quantity = int(request.params["payload"]["value"])
    replayed = obj is None or was_replayed(obj)
    return UsageAnswer(
        key=request.key,
        entity_id=item.entity_id,
        day=item.day,
        quantity=quantity,
        identifier=str(request.params["identifier"]),
        reported_at=outbox.ledger.clock(),
        replayed=replayed,
    )


def _identifier_taken(error: stripe.InvalidRequestError) -> bool:
    """Stripe already holds an event with this identifier: it was sent before (its
    key was forgotten, or the first answer was lost), so it counts as sent."""
    message = (error.user_message or "").lower()
    return "already exists" in message and "identifier" in message


def _record(outbox: Outbox, answers: list[UsageAnswer], report: UsagePushReport) -> None:
    if not answers:
        return
    outbox.ledger.record_usage_answers(answers, outbox.source)
    report.pushed.extend(
        PushedDay(
            a.entity_id, a.day, a.quantity, a.identifier, a.replayed, not a.key.endswith("/1")
        )
        for a in answers
    )
    answers.clear()
