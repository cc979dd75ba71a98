"""The fault run: the same billing period run twice against two sandboxes over
HTTP, once cleanly and once with Stripe answering 429s, 500s after doing the work,
dropped connections and slow responses, and with the process crashing between
Stripe's answer and the ledger write at every kind of step (then run again), each
followed by `sync`. The final ledgers hold the same facts (no event lost, none
doubled), Stripe holds the same objects, and `billtrail verify` is clean."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe

from adapters.stripe.outbound.corrections import (
    RateRevision,
    correct_wrong_rate,
    credit_duplicate_calls,
)
from adapters.stripe.outbound.customers import push_customers
from adapters.stripe.outbound.outbox import AfterCall
from adapters.stripe.outbound.subscriptions import BillingTerms
from adapters.stripe.outbound.usage import push_usage
from adapters.stripe.sandbox import RunningSandbox, start_sandbox
from adapters.stripe.sandbox.testing import FAST_RETRIES
from adapters.stripe.sync import run_sync
from adapters.stripe.testing import Crash, FastRetries, crash_once, facts
from ledger.entities.domain import BillableEntity

from .conftest import ENTITIES, SEAL_KEY, World, cards, new_world


def terms(entity: BillableEntity) -> BillingTerms:
    return BillingTerms("send_invoice", 30) if entity.entity_id == "acme" else BillingTerms()


def stripe_holds(world: World) -> dict[str, Any]:
    client = world.client
    held: dict[str, Any] = {}
    for entity in world.ledger.entities():
        customer = entity.stripe_customer_id
        assert customer is not None
        invoices = client.v1.invoices.list({"customer": customer, "limit": 100}).data
        held[entity.entity_id] = sorted(
            (i.id, i.status, i.total, i.amount_paid + (i.amount_paid_off_stripe or 0))
            for i in invoices
        )
        held[f"{entity.entity_id}/notes"] = sorted(
            (n.id, n.total)
            for i in invoices
            for n in client.v1.credit_notes.list({"invoice": i.id}).data
        )
        held[f"{entity.entity_id}/customers"] = len(
            client.v1.customers.list({"email": f"billing@{entity.entity_id}.example"}).data
        )
    return held


def run_period(world: World, faulty: bool) -> None:
    control = world.sandbox.control

    def step(action: Callable[[AfterCall | None], object], crash_at: str) -> None:
        """Run `action`; in the faulty run it first crashes right after Stripe
        answered the request whose key starts with `crash_at`, then runs again."""
        if faulty:
            hook, crashed = crash_once(crash_at)
            with pytest.raises(Crash):
                action(hook)
            assert crashed, crash_at
        action(None)

    if faulty:
        control.fail_next(429, 2, path="/v1/customers", should_retry=False)
        control.fail_next(500, 1, when="after", path="/v1/prices")
        control.add_latency(150, 3, path="/v1/subscriptions")
    clocks = world.clocks.clocks
    step(
        lambda hook: push_customers(world.outbox(after_call=hook), test_clocks=clocks),
        "billtrail/customer/beta",
    )
    cards(world)
    step(
        lambda hook: world.push_with(hook, terms=terms),
        "billtrail/subscription/acme",
    )
    world.calls("acme", date(2026, 7, 1), 120)
    world.calls("acme", date(2026, 7, 2), 70)
    world.calls("beta", date(2026, 7, 1), 30)
    world.calls("beta", date(2026, 7, 3), 5)
    ends = {entity_id: world.period_end(entity_id) for entity_id in ENTITIES}
    for entity_id, end in sorted(ends.items(), key=lambda item: item[1]):
        world.at(end + timedelta(minutes=30), [entity_id])
        if faulty:
            control.drop_connections(1, when="after", path="/v1/billing/meter_events")
            control.fail_next(503, 1, path="/v1/billing/meter_events")
        step(
            lambda hook, e=entity_id: push_usage(  # type: ignore[misc]
                world.outbox(after_call=hook), entity_ids=[e]
            ),
            f"billtrail/usage/{entity_id}/",
        )
        world.at(end + timedelta(hours=2), [entity_id])
    run_sync(world.ledger, world.client)
    invoices = {
        i.entity_id: i.stripe_id
        for i in world.ledger.invoices()
        if any(li.kind == "usage" for li in i.lines)
    }
    if faulty:
        control.fail_next(500, 1, when="after", path="/v1/invoiceitems")
    step(
        lambda hook: correct_wrong_rate(
            world.outbox(after_call=hook),
            invoices["acme"],
            reason="amendment signed late",
            actor="ana",
            revision=RateRevision(Decimal("0.0110"), date(2026, 7, 1)),
        ),
        f"billtrail/correction/wrong-rate/{invoices['acme']}/void",
    )
    if faulty:
        control.fail_next(429, 1, path="/v1/credit_notes", should_retry=False)
    step(
        lambda hook: credit_duplicate_calls(
            world.outbox(after_call=hook),
            invoices["beta"],
            [f"beta-c-20260703-{i:04d}" for i in range(3)],
            reason="resent",
            actor="ana",
        ),
        "billtrail/correction/duplicates/",
    )
    run_sync(world.ledger, world.client)


@pytest.fixture
def second(tmp_path: Path) -> Iterator[tuple[RunningSandbox, stripe.StripeClient]]:
    with start_sandbox(seed="billtrail-outbound", webhook_retry_delays=FAST_RETRIES) as running:
        http = FastRetries(timeout=30)
        yield (
            running,
            stripe.StripeClient(
                running.api_key,
                base_addresses={"api": running.url},
                max_network_retries=3,
                http_client=http,
            ),
        )
        http.close()  # type: ignore[no-untyped-call]


def test_a_run_with_faults_and_crashes_ends_with_the_ledger_of_a_clean_run(
    world: World,
    other_database_url: str,
    tmp_path: Path,
    second: tuple[RunningSandbox, stripe.StripeClient],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_period(world, faulty=False)
    clean_facts = facts(world.ledger)
    clean_stripe = stripe_holds(world)
    recorded = Counter(topic for events in clean_facts.values() for topic, _ in events)
    assert recorded["billtrail:Usage.UsageReported"] == 4
    assert recorded["billtrail:Invoice.Replaced"] == 1
    assert recorded["billtrail:Invoice.CreditNoteIssued"] == 1
    assert recorded["billtrail:Invoice.Paid"] >= 2

    sandbox, client = second
    with new_world(other_database_url, tmp_path / "var-b", client, sandbox) as faulted:
        run_period(faulted, faulty=True)
        assert faulted.slept  # the 429s were backed off, not given up
        # The crashed requests were sent again and Stripe answered them from its
        # idempotency store instead of acting twice.
        assert any(r["replayed"] for r in sandbox.control.requests())
        assert sandbox.control.faults()["http"] == []  # every fault was met
        assert facts(faulted.ledger) == clean_facts
        assert stripe_holds(faulted) == clean_stripe
        assert faulted.ledger.verify_seal().ok

    # And through the real entry point.
    from billtrail.cli import main

    monkeypatch.setenv("BILLTRAIL_DATABASE_URL", other_database_url)
    monkeypatch.setenv("BILLTRAIL_VAR_DIR", str(tmp_path / "var-b"))
    monkeypatch.setenv("BILLTRAIL_SEAL_KEY", SEAL_KEY)
    with pytest.raises(SystemExit) as verified:
        main(["verify"])
    assert verified.value.code == 0
    assert "the seal is intact" in capsys.readouterr().out
