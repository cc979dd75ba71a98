"""The fault run: the same seeded billing world built twice, webhooks delivered
over HTTP from the sandbox to the app served on loopback, once without faults
and once with them (429s, 500s and slow answers on the re-reads; dropped,
duplicated and reordered webhooks; in the last step every webhook lost for good,
then `sync`). The two ledgers must hold the same history of every invoice: no
event lost, none doubled, and the seal intact.

Processing runs at quiescent points (after each step, once the sandbox has
delivered or given up every webhook): a re-read sees what Stripe holds at that
point in both runs. (A live worker records whatever intermediate states it
happens to see; those are valid histories too, but not comparable run to run.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.stripe.client import close_client, make_client
from adapters.stripe.sandbox import RunningSandbox, start_sandbox
from adapters.stripe.sandbox.testing import FAST_RETRIES
from adapters.stripe.sync import EVENT_TYPES, run_sync
from adapters.stripe.testing import (
    BillingWorld,
    LoopbackServer,
    drain,
    invoice_histories,
    settled,
)
from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.stripe_inbox.domain import Disposition
from web import create_app, shutdown

DAY = 86_400
HOUR = 3_600

Step = Callable[[BillingWorld], None]


def subscribe(world: BillingWorld) -> None:
    world.subscribe(world.customer("acme"))
    world.subscribe(world.customer("bolt", link="ledger", timezone="America/New_York"))
    world.manual_invoice(world.customer("cove"), [("Onboarding", 30_000), ("Goodwill", -5_000)])


def invoice_and_use(world: BillingWorld) -> None:
    client = world.client
    cove = world.customers["cove"]
    draft = client.v1.invoices.list({"customer": cove.customer.id}).data[0]
    client.v1.invoices.finalize_invoice(draft.id)
    client.v1.credit_notes.create({"invoice": draft.id, "amount": 1_000, "reason": "duplicate"})
    failing = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", {"customer": world.customers["bolt"].customer.id}
    )
    client.v1.customers.update(
        world.customers["bolt"].customer.id,
        {"invoice_settings": {"default_payment_method": failing.id}},
    )
    world.advance(2 * DAY)
    world.report_calls(world.customers["acme"], 1_234, "acme-day-1", world.start + DAY)
    world.report_calls(world.customers["bolt"], 77, "bolt-day-1", world.start + DAY)


def renew(world: BillingWorld) -> None:
    world.advance(29 * DAY + 2 * HOUR)  # past the first period's end: renewals


def dun_and_correct(world: BillingWorld) -> None:
    client = world.client
    world.advance(4 * DAY)  # bolt's renewal is retried and fails again
    cove = world.customers["cove"]
    sent = client.v1.invoices.list({"customer": cove.customer.id}).data[0]
    note = client.v1.credit_notes.list({"invoice": sent.id}).data[0]
    client.v1.credit_notes.void_credit_note(note.id)
    client.v1.invoices.mark_uncollectible(sent.id)
    extra = world.manual_invoice(world.customers["acme"], [("Extra numbers", 2_500)])
    client.v1.invoices.finalize_invoice(extra.id)
    client.v1.invoices.void_invoice(extra.id)


STEPS: list[Step] = [subscribe, invoice_and_use, renew, dun_and_correct]


@dataclass
class Faults:
    """What to break around each step (`webhooks` before it, `reads` before the
    step's events are processed)."""

    webhooks: dict[str, int]
    reads: Callable[[RunningSandbox], Any]


def _reads_429(sandbox: RunningSandbox) -> None:
    sandbox.control.fail_next(429, count=2, method="GET", path="/v1/invoices")


def _reads_500_and_slow(sandbox: RunningSandbox) -> None:
    sandbox.control.fail_next(500, count=2, method="GET", path="/v1/invoices")
    sandbox.control.add_latency(150, count=4, method="GET", path="/v1/")


def _notes_429_and_drop(sandbox: RunningSandbox) -> None:
    sandbox.control.fail_next(429, count=2, method="GET", path="/v1/credit_notes")
    sandbox.control.drop_connections(count=1, method="GET", path="/v1/invoices")


FAULTS = [
    Faults({"duplicate": 6, "reorder": 4}, _reads_429),
    Faults({"drop": 2, "duplicate": 2, "reorder": 3}, _reads_500_and_slow),
    Faults({"drop": 3, "duplicate": 3, "reorder": 5}, _notes_429_and_drop),
    # The last step's webhooks are all lost for good: only `sync` can repair them.
    Faults({"drop": 10_000}, lambda sandbox: None),
]


@dataclass
class Outcome:
    histories: dict[str, list[tuple[str, dict[str, Any]]]]
    seal_ok: bool
    lost_webhooks: int
    duplicated_webhooks: int
    synced_events: int
    failed_reads: int


def run_world(
    make_settings: Callable[..., Settings], database_url: str, var_dir: Path, *, faults: bool
) -> Outcome:
    with start_sandbox(seed="billtrail-fault-run", webhook_retry_delays=FAST_RETRIES) as sandbox:
        client = make_client(sandbox.api_key, sandbox.url)
        hook = client.v1.webhook_endpoints.create(
            {"url": "http://127.0.0.1:9/not-yet", "enabled_events": ["*"]}
        )
        settings = make_settings(database_url, var_dir, STRIPE_WEBHOOK_SECRET=str(hook.secret))
        ledger = bootstrap.ledger(settings)
        app = create_app(ledger, client, settings, start_worker=False)
        try:
            with LoopbackServer(app) as server:
                client.v1.webhook_endpoints.update(hook.id, {"url": server.webhook_url})
                world = BillingWorld.create(client, ledger)
                for step, broken in zip(STEPS, FAULTS, strict=True):
                    if faults:
                        sandbox.control.webhook_faults(**broken.webhooks, reorder_hold_ms=200)
                    step(world)
                    settled(sandbox)
                    if faults:
                        broken.reads(sandbox)
                    drain(ledger, client)
                    sandbox.control.clear_faults()
                before_sync = invoice_histories(ledger)
                report = run_sync(ledger, client)
                if not faults:
                    # A ledger that missed nothing: sync finds nothing to add.
                    assert invoice_histories(ledger) == before_sync
                    assert report.events_stored == 0
                deliveries = sandbox.control.deliveries()
                for event in client.v1.events.list({"limit": 100, "types": EVENT_TYPES}).data:
                    stored = ledger.stripe_event(event.id)
                    assert stored.disposition in (Disposition.PROCESSED, Disposition.IGNORED)
                return Outcome(
                    histories=invoice_histories(ledger),
                    seal_ok=ledger.verify_seal().ok,
                    lost_webhooks=sum(1 for d in deliveries if d["status"] == "failed"),
                    duplicated_webhooks=sum(
                        1 for d in deliveries for a in d["attempts"] if a["duplicate"]
                    ),
                    synced_events=report.events_stored,
                    failed_reads=sum(
                        1
                        for r in sandbox.control.requests()
                        if r["method"] == "GET" and (r["fault"] or r["dropped"])
                    ),
                )
        finally:
            shutdown(app)
            ledger.close()
            close_client(client)


@pytest.mark.slow
def test_the_fault_run_ends_with_the_same_ledger_as_the_clean_run(
    database_url: str, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    clean = run_world(make_settings, database_url, tmp_path / "clean", faults=False)
    other = _another_database(database_url, tmp_path)
    faulty = run_world(make_settings, other, tmp_path / "faulty", faults=True)
    assert clean.lost_webhooks == 0
    assert faulty.lost_webhooks > 0
    assert faulty.duplicated_webhooks > 0
    assert faulty.synced_events > 0
    assert faulty.failed_reads >= 7  # 429s, 500s, a dropped connection
    # Six invoices: paid, dunned twice, credited and uncredited then uncollectible, voided.
    kinds = sorted(sorted({k for k, _ in h}) for h in clean.histories.values())
    assert len(kinds) == 6
    assert [
        "CreditNoteIssued",
        "CreditNoteVoided",
        "Drafted",
        "Issued",
        "MarkedUncollectible",
    ] in kinds
    assert ["Drafted", "Issued", "PaymentFailed"] in kinds
    assert ["Drafted", "Issued", "Voided"] in kinds
    assert faulty.histories == clean.histories
    assert clean.seal_ok
    assert faulty.seal_ok


def _another_database(database_url: str, tmp_path: Path) -> str:
    """An empty database on the same backend, for the second run."""
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'faulty.db'}"
    base, _, _ = database_url.partition("?")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{base}?schema={schema}"
