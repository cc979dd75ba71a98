"""Fixtures for the outbound half of the Stripe adapter, against the sandbox over
HTTP and a ledger on both backends.

- `sandbox`: a real sandbox server on a loopback port.
- `client`: the official SDK on it, with retries on and the SDK's retry pauses
  shortened (`FastRetries`), its HTTP session closed at the end.
- `world`: a ledger (on `database_url`) with two billable entities in different
  time zones, their rates, a monthly fee, and one Stripe test clock each starting
  at their local midnight of 1 July 2026. Nothing is pushed: tests push.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import stripe

from adapters.stripe.outbound.clocks import EntityClocks
from adapters.stripe.outbound.customers import push_customers
from adapters.stripe.outbound.invoice_pull import pull_invoices_from_stripe
from adapters.stripe.outbound.outbox import AfterCall, Outbox
from adapters.stripe.outbound.push import PushReport, push_all
from adapters.stripe.outbound.subscriptions import BillingTerms, subscription_of
from adapters.stripe.outbound.usage import push_usage
from adapters.stripe.sandbox import RunningSandbox, start_sandbox
from adapters.stripe.sandbox.testing import FAST_RETRIES
from adapters.stripe.testing import Crash as Crash  # the tests here import it from here
from adapters.stripe.testing import FastRetries
from adapters.stripe.testing import crash_once as crash_once
from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.entities.domain import BillableEntity
from ledger.sources import Source, SourceKind
from ledger.usage.application import CallRow

SEAL_KEY = "outbound-tests-seal-key-0123456789abcdef"
FIRST_DAY = date(2026, 7, 1)
ADMIN = Source(SourceKind.ADMIN, "setup", "ana@billtrail.example")
ENTITIES = {
    # entity id: (kind, zone, currency, per-call price)
    "acme": ("company", "Europe/Paris", "eur", Decimal("0.0125")),
    "beta": ("organization", "America/Chicago", "usd", Decimal("0.0090")),
}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start_sandbox(seed="billtrail-outbound", webhook_retry_delays=FAST_RETRIES) as running:
        yield running


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[stripe.StripeClient]:
    http = FastRetries(timeout=30)
    yield stripe.StripeClient(
        sandbox.api_key,
        base_addresses={"api": sandbox.url},
        max_network_retries=3,
        http_client=http,
    )
    http.close()  # type: ignore[no-untyped-call]


def make_ledger(database_url: str, clock: Clock, var_dir: Path) -> Ledger:
    settings = Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": database_url,
            "BILLTRAIL_SEAL_KEY": SEAL_KEY,
            "BILLTRAIL_VAR_DIR": str(var_dir),
        }
    )
    return bootstrap.ledger(settings, clock=clock)


@dataclass
class World:
    ledger: Ledger
    client: stripe.StripeClient
    sandbox: RunningSandbox
    clock: Clock
    clocks: EntityClocks
    slept: list[float] = field(default_factory=list)
    runs: int = 0

    def outbox(self, run: str | None = None, after_call: AfterCall | None = None) -> Outbox:
        self.runs += 1
        source = Source(SourceKind.CLI, run or f"run-{self.runs}", "ops")
        return Outbox(
            self.ledger, self.client, source, after_call=after_call, sleep=self.slept.append
        )

    def push(self, run: str | None = None, **kwargs: Any) -> PushReport:
        """Everything pushed, each customer on its entity's test clock."""
        return push_all(self.outbox(run), test_clocks=self.clocks.clocks, **kwargs)

    def push_with(self, after_call: AfterCall | None, **kwargs: Any) -> PushReport:
        return push_all(
            self.outbox(after_call=after_call), test_clocks=self.clocks.clocks, **kwargs
        )

    def period_end(self, entity_id: str) -> datetime:
        """The end of the entity's current billing period, as Stripe has it."""
        subscription_id = subscription_of(self.outbox("read"), entity_id)
        assert subscription_id is not None
        subscription = self.client.v1.subscriptions.retrieve(subscription_id)
        return datetime.fromtimestamp(subscription.items.data[0].current_period_end, UTC)

    def bill_july(
        self,
        terms: Callable[[BillableEntity], BillingTerms] | None = None,
        failing: frozenset[str] = frozenset(),
    ) -> dict[str, str]:
        """A period of billing: customers with cards, prices and subscriptions from
        1 July (local midnight), calls on a few days, usage pushed half an hour
        after each entity's period ends, Stripe's renewal invoices finalized (an
        hour after the period end) and charged, and the invoices recorded in the
        ledger. Returns each entity's invoice that bills the usage.

        Stripe counts a monthly period from the anchor's day of the month in UTC:
        beta's (Chicago) first period is July; acme's (Paris, whose local midnight
        of 1 July is 30 June in UTC) runs 1 to 30 July."""
        push_customers(self.outbox("customers"), test_clocks=self.clocks.clocks)
        cards(self, failing)
        self.push("push", **({"terms": terms} if terms else {}))
        self.calls("acme", date(2026, 7, 1), 120)
        self.calls("acme", date(2026, 7, 2), 70)
        self.calls("acme", date(2026, 7, 30), 50)
        self.calls("beta", date(2026, 7, 1), 30)
        self.calls("beta", date(2026, 7, 3), 5)
        ends = {entity_id: self.period_end(entity_id) for entity_id in ENTITIES}
        for entity_id, end in sorted(ends.items(), key=lambda item: item[1]):
            self.at(end + timedelta(minutes=30), [entity_id])
            push_usage(self.outbox(f"usage-{entity_id}"), entity_ids=[entity_id])
            self.at(end + timedelta(hours=2), [entity_id])
        pull_invoices_from_stripe(self.client, self.ledger, Source(SourceKind.SYNC_RUN, "pull"))
        found: dict[str, str] = {}
        for invoice in self.ledger.invoices():
            if any(line.kind == "usage" for line in invoice.lines):
                found[invoice.entity_id] = invoice.stripe_id
        return found

    def at(self, moment: datetime, entity_ids: list[str] | None = None) -> None:
        """The ledger's clock and the entities' Stripe clocks at `moment`."""
        self.clock.now = max(self.clock.now, moment)
        self.clocks.advance(moment, entity_ids)

    def local(self, entity_id: str, day: date, hour: int = 0, minute: int = 0) -> datetime:
        zone = ZoneInfo(ENTITIES[entity_id][1])
        return datetime.combine(day, time(hour, minute), zone).astimezone(UTC)

    def calls(self, entity_id: str, day: date, count: int, prefix: str = "c") -> list[str]:
        """Record `count` calls of `entity_id` at 10:00 local on `day`."""
        start = self.local(entity_id, day, 10)
        ids = [f"{entity_id}-{prefix}-{day:%Y%m%d}-{i:04d}" for i in range(count)]
        rows = [
            CallRow(i + 1, call_id, entity_id, start + timedelta(seconds=i), 60)
            for i, call_id in enumerate(ids)
        ]
        self.ledger.record_calls(rows, Source(SourceKind.IMPORT_FILE, f"{prefix}-{day}"))
        return ids

    def posts(self, path: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.sandbox.control.requests(path) if r["method"] == "POST"]


@contextmanager
def new_world(
    database_url: str, var_dir: Path, client: stripe.StripeClient, sandbox: RunningSandbox
) -> Iterator[World]:
    """Two entities with their rates (and beta's monthly fee) in a new ledger, and
    a Stripe test clock each from their local midnight of 1 July."""
    clock = Clock(datetime(2026, 6, 20, 9, 0, tzinfo=UTC))
    ledger = make_ledger(database_url, clock, var_dir)
    try:
        for entity_id, (kind, zone, currency, price) in ENTITIES.items():
            ledger.register_entity(
                entity_id.title(),
                kind,
                ADMIN,
                entity_id=entity_id,
                timezone=zone,
                emails=[f"billing@{entity_id}.example"],
            )
            ledger.set_rate(entity_id, price, currency, FIRST_DAY, "contract", ADMIN)
        ledger.add_fixed_fee(
            "beta",
            "platform",
            "monthly_minimum",
            "Platform fee",
            Decimal("49.00"),
            FIRST_DAY,
            ADMIN,
        )
        clocks = EntityClocks.create(
            client, {e: ZoneInfo(z) for e, (_, z, _, _) in ENTITIES.items()}, FIRST_DAY
        )
        # Both entities' 1 July has begun (Paris first, Chicago at 05:00 UTC).
        clock.now = datetime(2026, 7, 1, 5, 0, tzinfo=UTC)
        yield World(ledger, client, sandbox, clock, clocks)
    finally:
        ledger.close()


@pytest.fixture
def world(
    database_url: str, tmp_path: Path, client: stripe.StripeClient, sandbox: RunningSandbox
) -> Iterator[World]:
    with new_world(database_url, tmp_path / "var", client, sandbox) as made:
        yield made


@pytest.fixture
def other_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A second empty database on the same backend as `database_url`."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    import psycopg

    base, schema = database_url.split("?schema=")
    other = f"{schema}_b"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{other}"')  # type: ignore[arg-type]
    try:
        yield f"{base}?schema={other}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')  # type: ignore[arg-type]


def cards(world: World, failing: frozenset[str] = frozenset()) -> None:
    """The customers' cards (what customers do in Stripe, not billtrail)."""
    for entity in world.ledger.entities():
        customer = entity.stripe_customer_id
        assert customer is not None
        token = "pm_card_chargeCustomerFail" if entity.entity_id in failing else "pm_card_visa"
        pm = world.client.v1.payment_methods.attach(token, {"customer": customer})
        world.client.v1.customers.update(
            customer, {"invoice_settings": {"default_payment_method": pm.id}}
        )
