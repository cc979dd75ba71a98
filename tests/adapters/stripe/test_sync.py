"""`sync`: a ledger that missed every webhook is backfilled from the events and
invoices lists; a second run records nothing; a run that stops resumes from the
cursor in the ledger; a cursor Stripe no longer knows restarts the read; and the
`billtrail sync` command around it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import stripe

from adapters.stripe import sync as sync_module
from adapters.stripe.processing import process_pending
from adapters.stripe.sandbox import RunningSandbox
from adapters.stripe.sync import Progress, Sync, run_sync
from adapters.stripe.testing import ADMIN, BillingWorld, event_body, invoice_histories
from adapters.stripe.webhooks import incoming_event, parse_event
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.sources import Source
from ledger.stripe_inbox.domain import Channel, Disposition, SyncPosition, sha256_hex

DAY = 86_400


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def build(world: BillingWorld, client: stripe.StripeClient) -> list[str]:
    """Five invoices in several states, and no webhook endpoint: every event missed."""
    for name in ("acme", "bolt", "cove"):
        world.subscribe(world.customer(name))
    draft = world.manual_invoice(world.customers["acme"], [("Setup", 10_000)])
    sent = world.manual_invoice(world.customers["bolt"], [("Training", 25_000)])
    client.v1.invoices.finalize_invoice(sent.id)
    client.v1.credit_notes.create({"invoice": sent.id, "amount": 5_000, "reason": "duplicate"})
    return [i.id for i in client.v1.invoices.list({"limit": 100}).data] + [draft.id]


def test_a_ledger_that_missed_every_webhook_is_backfilled_and_a_second_run_records_nothing(
    world: BillingWorld, ledger: Ledger, client: stripe.StripeClient
) -> None:
    ids = build(world, client)
    report = run_sync(ledger, client)
    assert sorted(invoice_histories(ledger)) == sorted(set(ids))
    assert report.events_stored == report.events_read > 0
    assert report.invoices_listed == 5
    assert ledger.pending_stripe_events(include_failed=True) == []
    sent = next(i for i in ledger.invoices() if i.credit_notes)
    assert [n.amount for n in sent.credit_notes.values()] == [50]
    events = list(ledger.events_of_topics(["billtrail:StripeEvent.Received"]))
    assert {e.channel for e in events} == {"events_list"}
    assert all(e.sha256 and ledger.stripe_event(e.event_id).payload_intact for e in events)
    before = head(ledger)
    again = run_sync(ledger, client)
    assert (again.events_read, again.invoices_listed, again.processing.invoices_read) == (0, 0, 0)
    assert head(ledger) == before
    assert ledger.verify_seal().ok


def test_new_events_after_the_cursor_are_read_oldest_first_and_processed(
    world: BillingWorld, ledger: Ledger, client: stripe.StripeClient
) -> None:
    ids = build(world, client)
    run_sync(ledger, client)
    open_invoice = next(i for i in ledger.invoices() if i.status.value == "open")
    client.v1.invoices.pay(open_invoice.stripe_id, {"paid_out_of_band": True})
    report = run_sync(ledger, client)
    assert report.events_stored >= 1
    assert report.invoices_listed == 0  # the cursor covers it: only events are read
    assert ledger.invoice(open_invoice.stripe_id).status.value == "paid"
    assert len(invoice_histories(ledger)) == len(set(ids))


def test_a_run_that_stops_resumes_from_the_cursor(
    world: BillingWorld,
    ledger: Ledger,
    client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build(world, client)
    monkeypatch.setattr(sync_module, "PAGE", 2)
    monkeypatch.setattr(sync_module, "CHECKPOINT_PAGES", 1)

    class Crash(Exception):
        pass

    def crash_at(n: int) -> Progress:
        def progress(phase: str, done: int, total: int | None) -> None:
            if phase == "invoices" and done == n:
                raise Crash

        return progress

    with pytest.raises(Crash):
        Sync(ledger, client, progress=crash_at(3)).run()
    position = ledger.sync_position("stripe")
    assert position.invoices_listing_after is not None
    assert position.events_after is not None  # the events were read to the end
    resumed = Sync(ledger, client).run()
    assert resumed.invoices_listed == 3  # 5 listed, 2 checkpointed before the crash
    assert resumed.events_read == 0
    assert ledger.sync_position("stripe") == SyncPosition(
        events_after=position.events_after, invoices_listed=True
    )
    assert len(invoice_histories(ledger)) == 5


def test_since_relists_the_invoices_created_since_and_repairs_nothing_when_whole(
    world: BillingWorld, ledger: Ledger, client: stripe.StripeClient
) -> None:
    build(world, client)
    run_sync(ledger, client)
    before = head(ledger)
    report = run_sync(ledger, client, since=date(2026, 1, 1))
    assert report.invoices_listed == 5
    assert report.invoices_changed == 0
    assert head(ledger) == before
    assert run_sync(ledger, client, since=date(2026, 6, 1)).invoices_listed == 0


def test_a_cursor_stripe_no_longer_knows_restarts_the_read(
    world: BillingWorld, ledger: Ledger, client: stripe.StripeClient
) -> None:
    build(world, client)
    run_sync(ledger, client)
    gone = SyncPosition(events_after="evt_expired_long_ago", invoices_listed=True)
    ledger.move_sync_cursor("stripe", gone, Source("sync_run", "test"))
    report = run_sync(ledger, client)
    assert report.restarted
    assert report.invoices_listed == 5
    assert report.events_stored == 0  # all of them were in the inbox already
    assert ledger.sync_position("stripe").events_after not in (None, "evt_expired_long_ago")


def test_sync_processes_what_webhooks_stored_and_retries_failures(
    world: BillingWorld, ledger: Ledger, client: stripe.StripeClient
) -> None:
    ghost = client.v1.customers.create({"metadata": {"billtrail_entity_id": "ghost"}})
    invoice = client.v1.invoices.create({"customer": ghost.id})
    text = event_body("evt_hook1", "invoice.created", {"id": invoice.id, "object": "invoice"})
    event, _ = parse_event(text.decode())
    assert event is not None
    ledger.receive_stripe_event(
        incoming_event(event, text.decode(), sha256_hex(text.decode()), Channel.WEBHOOK)
    )
    assert process_pending(ledger, client).failed == 1
    ledger.register_entity("Ghost", "company", ADMIN, entity_id="ghost")
    report = run_sync(ledger, client)
    assert report.invoices_failed == 0
    assert ledger.stripe_event("evt_hook1").disposition is Disposition.PROCESSED
    assert ledger.invoice(invoice.id).status.value == "draft"
    assert ledger.pending_stripe_events(include_failed=True) == []


# The command ---------------------------------------------------------------------------

# run_cli(*args) -> Run(code, out, err): tests/conftest.py, in the environment below.
RunCLI = Callable[..., Any]


@pytest.fixture
def cli_env(
    database_url: str,
    tmp_path: Path,
    stripe_sandbox: RunningSandbox,
    make_settings: Callable[..., Settings],
) -> dict[str, str]:
    # The same database and seal key as the `ledger` fixture's.
    return {
        **make_settings(database_url, tmp_path / "var").env,
        "STRIPE_API_BASE": stripe_sandbox.url,
        "STRIPE_API_KEY": stripe_sandbox.api_key,
    }


def test_the_command_twice_records_nothing_the_second_time(
    world: BillingWorld, ledger: Ledger, client: stripe.StripeClient, run_cli: RunCLI
) -> None:
    build(world, client)
    code, out, err = run_cli("sync")
    assert (code, err) == (0, "")  # no progress display when not on a terminal
    assert "5 invoices listed (5 changed)" in out
    assert len(invoice_histories(ledger)) == 5
    before = head(ledger)
    code, out, _ = run_cli("sync")
    assert code == 0
    assert "0 new events of 0 read, 0 invoices listed" in out
    assert head(ledger) == before
    code, out, _ = run_cli("sync", "--since", "2026-01-01")
    assert (code, head(ledger)) == (0, before)
    assert "5 invoices listed (0 changed)" in out


def test_command_mistakes_are_one_line_and_exit_2(
    ledger: Ledger, run_cli: RunCLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_cli("sync", "--since", "yesterday")
    assert (code, out) == (2, "")
    assert err == "billtrail: --since: not a date (YYYY-MM-DD): 'yesterday'\n"
    assert run_cli("sync", "--since", "2999-01-01")[0] == 2
    monkeypatch.setenv("STRIPE_API_KEY", "sk_live_not_a_sandbox_key")
    code, out, err = run_cli("sync")
    assert code == 2
    assert err.startswith("billtrail: Stripe refused STRIPE_API_KEY")
    assert len(err.splitlines()) == 1
