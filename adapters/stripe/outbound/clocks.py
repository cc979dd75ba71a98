"""Stripe test clocks, one per billable entity, for the demo and the tests.

Each entity's customer lives on its own clock, which starts at midnight of the
first billing day in the entity's time zone: a subscription made then has its
periods run from local midnight to local midnight, the days the ledger counts
calls in. (Stripe also limits how many customers one test clock may hold.)

Test clocks are test-mode scaffolding, not billtrail's business with Stripe, so
these calls are not recorded in the ledger's outbox."""

from __future__ import annotations

import time as wall
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import stripe

# Stripe advances a test clock by at most two intervals of its shortest subscription.
ADVANCE_TIMEOUT = 60.0


class EntityClocks:
    def __init__(self, client: stripe.StripeClient, clocks: Mapping[str, str]) -> None:
        self.client = client
        self.clocks = dict(clocks)

    @classmethod
    def create(
        cls,
        client: stripe.StripeClient,
        zones: Mapping[str, ZoneInfo],
        first_day: date,
        *,
        key_prefix: str = "",
    ) -> EntityClocks:
        clocks: dict[str, str] = {}
        for entity_id, zone in zones.items():
            start = datetime.combine(first_day, time(0), zone)
            clock = client.v1.test_helpers.test_clocks.create(
                {"frozen_time": int(start.timestamp()), "name": entity_id},
                {"idempotency_key": f"{key_prefix}billtrail-test-clock/{entity_id}/{first_day}"},
            )
            clocks[entity_id] = clock.id
        return cls(client, clocks)

    def now(self, entity_id: str) -> datetime:
        clock = self.client.v1.test_helpers.test_clocks.retrieve(self.clocks[entity_id])
        return datetime.fromtimestamp(clock.frozen_time, UTC)

    def advance(self, moment: datetime, entity_ids: Iterable[str] | None = None) -> None:
        """Move the clocks (all, or the entities') forward to `moment` and wait
        until Stripe has run everything that fell due (renewals, finalization,
        payment attempts); a clock already there is left alone."""
        target = int(moment.timestamp())
        moving: list[str] = []
        for entity_id in self.clocks if entity_ids is None else entity_ids:
            clock_id = self.clocks[entity_id]
            clock = self.client.v1.test_helpers.test_clocks.retrieve(clock_id)
            if clock.frozen_time >= target:
                continue
            self.client.v1.test_helpers.test_clocks.advance(
                clock_id,
                {"frozen_time": target},
                {"idempotency_key": f"billtrail-test-clock/{clock_id}/{target}"},
            )
            moving.append(clock_id)
        deadline = wall.monotonic() + ADVANCE_TIMEOUT
        for clock_id in moving:
            while self.client.v1.test_helpers.test_clocks.retrieve(clock_id).status != "ready":
                if wall.monotonic() > deadline:
                    raise TimeoutError(f"test clock {clock_id} did not reach {moment}")
                wall.sleep(0.005)
