"""Processing behind the acknowledgement, against the sandbox over HTTP: the
events of one invoice cost one re-read, whatever order they arrive in; a 429 is
waited out, a Stripe outage leaves the events waiting, an invoice the ledger
cannot take is marked failed; the rate limit holds; the worker thread does all of
it on its own."""

from __future__ import annotations

import itertools
from typing import Any

import stripe

from adapters.stripe.client import Throttle, TokenBucket, close_client, make_client
from adapters.stripe.invoices import InvoiceReader
from adapters.stripe.processing import InboxWorker, process_pending
from adapters.stripe.sandbox import RunningSandbox, wait_until
from adapters.stripe.testing import BillingWorld, event_body
from adapters.stripe.webhooks import DirectReceiver, incoming_event, parse_event
from ledger.app import Ledger
from ledger.invoices.domain import Invoice
from ledger.sources import Source
from ledger.stripe_inbox.domain import Channel, Disposition, sha256_hex

_ids = itertools.count(1)


def deliver(
    ledger: Ledger, event_type: str, obj: dict[str, Any], created: int = 1_767_225_600
) -> str:
    """Store an event as the webhook endpoint would (already verified)."""
    event_id = f"evt_test{next(_ids)}"
    text = event_body(event_id, event_type, obj, created).decode()
    event, problem = parse_event(text)
    assert event is not None, problem
    assert ledger.receive_stripe_event(
        incoming_event(event, text, sha256_hex(text), Channel.WEBHOOK)
    )
    return event_id


def invoice_event(ledger: Ledger, invoice_id: str, event_type: str, created: int) -> str:
    return deliver(ledger, event_type, {"id": invoice_id, "object": "invoice"}, created)


def reads_of(sandbox: RunningSandbox, invoice_id: str) -> int:
    return sum(
        1
        for r in sandbox.control.requests(path=f"/v1/invoices/{invoice_id}")
        if r["method"] == "GET" and r["path"] == f"/v1/invoices/{invoice_id}"
    )


def kinds(ledger: Ledger, stripe_id: str) -> list[str]:
    return [type(e).__name__ for e in ledger.history(Invoice.create_id(stripe_id))]


def fast_reader(client: stripe.StripeClient, ledger: Ledger) -> InvoiceReader:
    return InvoiceReader(client, ledger, throttle=Throttle(retries=4, backoff=0.01))


def test_a_burst_of_events_for_one_invoice_costs_one_read_whatever_the_order(
    world: BillingWorld,
    ledger: Ledger,
    client: stripe.StripeClient,
    stripe_sandbox: RunningSandbox,
) -> None:
    acme = world.customer("acme")
    invoice_id = world.subscribe(acme).latest_invoice
    t = world.start
    # Stripe's burst for one invoice, delivered newest first.
    events = [
        invoice_event(ledger, invoice_id, kind, t + n)
        for n, kind in reversed(
            list(enumerate(["invoice.created", "invoice.finalized", "invoice.paid"]))
        )
    ]
    note = deliver(
        ledger, "credit_note.voided", {"id": "cn_x", "object": "credit_note", "invoice": invoice_id}
    )
    report = process_pending(ledger, client)
    assert (report.invoices_read, report.invoices_changed, report.processed) == (1, 1, 4)
    assert reads_of(stripe_sandbox, invoice_id) == 1
    assert kinds(ledger, invoice_id) == ["Drafted", "Issued", "Paid"]
    # Recorded under the newest event (by Stripe's time): the paid one.
    paid = ledger.history(Invoice.create_id(invoice_id))[-1]
    assert paid.source == Source("stripe_event", events[0])
    for event_id in [*events, note]:
        settled = ledger.stripe_event(event_id)
        assert (settled.disposition, settled.detail) == (Disposition.PROCESSED, "")
    assert ledger.pending_stripe_events() == []
    # The same events again are duplicates; a new one re-reads and records nothing.
    invoice_event(ledger, invoice_id, "invoice.updated", t + 10)
    again = process_pending(ledger, client)
    assert (again.invoices_read, again.invoices_changed, again.processed) == (1, 0, 1)
    assert kinds(ledger, invoice_id) == ["Drafted", "Issued", "Paid"]


def test_rate_limited_reads_are_retried_and_slow_the_bucket(
    world: BillingWorld,
    ledger: Ledger,
    client: stripe.StripeClient,
    stripe_sandbox: RunningSandbox,
) -> None:
    acme = world.customer("acme")
    invoice_id = world.subscribe(acme).latest_invoice
    invoice_event(ledger, invoice_id, "invoice.paid", world.start)
    stripe_sandbox.control.fail_next(429, count=2, method="GET", path="/v1/invoices")
    reader = fast_reader(client, ledger)
    report = process_pending(ledger, client, reader=reader)
    assert (report.processed, report.deferred) == (1, 0)
    assert reader.call.rate_limited == 2
    statuses = [
        r["status"] for r in stripe_sandbox.control.requests(path=f"/v1/invoices/{invoice_id}")
    ]
    assert statuses[:3] == [429, 429, 200]


def test_when_stripe_is_down_events_wait_and_are_processed_later(
    world: BillingWorld,
    ledger: Ledger,
    stripe_sandbox: RunningSandbox,
) -> None:
    acme = world.customer("acme")
    invoice_id = world.subscribe(acme).latest_invoice
    first = invoice_event(ledger, invoice_id, "invoice.paid", world.start)
    once = make_client(stripe_sandbox.api_key, stripe_sandbox.url, max_network_retries=0)
    try:
        stripe_sandbox.control.fail_next(503, count=5, method="GET", path="/v1/invoices")
        report = process_pending(ledger, once)
        assert (report.processed, report.deferred) == (0, 1)
        assert [p.event_id for p in ledger.pending_stripe_events()] == [first]
        assert not ledger.exists(Invoice.create_id(invoice_id))
        stripe_sandbox.control.clear_faults()
        assert process_pending(ledger, once).processed == 1
        assert kinds(ledger, invoice_id) == ["Drafted", "Issued", "Paid"]
    finally:
        close_client(once)


def test_an_invoice_the_ledger_cannot_take_fails_visibly_until_it_can(
    world: BillingWorld,
    ledger: Ledger,
    client: stripe.StripeClient,
) -> None:
    ghost = client.v1.customers.create(
        {
            "metadata": {"billtrail_entity_id": "ghost"},
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    invoice = client.v1.invoices.create({"customer": ghost.id})
    stranger = client.v1.customers.create({})
    foreign = client.v1.invoices.create({"customer": stranger.id})
    failing = invoice_event(ledger, invoice.id, "invoice.created", world.start)
    ignored = invoice_event(ledger, foreign.id, "invoice.created", world.start)
    report = process_pending(ledger, client)
    assert (report.failed, report.ignored, report.processed) == (1, 1, 0)
    assert ledger.stripe_event(failing).disposition is Disposition.FAILED
    assert "ghost" in ledger.stripe_event(failing).detail
    assert ledger.stripe_event(ignored).disposition is Disposition.IGNORED
    # A live pass leaves failed events alone; a retry (sync's) takes them again.
    assert process_pending(ledger, client).invoices_read == 0
    ledger.register_entity("Ghost", "company", Source("admin", "t"), entity_id="ghost")
    retry = process_pending(ledger, client, include_failed=True)
    assert retry.processed == 1
    assert ledger.stripe_event(failing).disposition is Disposition.PROCESSED
    assert kinds(ledger, invoice.id) == ["Drafted"]


def test_the_token_bucket_holds_the_rate() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(25, clock=lambda: now[0], sleep=sleep)
    for _ in range(125):
        bucket.acquire()
    # A burst of 25, then 25 a second: 100 more take 4 seconds.
    assert 3.99 <= now[0] <= 4.01
    bucket.drain()
    bucket.acquire()
    assert 4.03 <= now[0] <= 4.05


def test_the_worker_processes_what_the_endpoint_stores(
    world: BillingWorld,
    ledger: Ledger,
    client: stripe.StripeClient,
    stripe_sandbox: RunningSandbox,
) -> None:
    acme = world.customer("acme")
    worker = InboxWorker(ledger, client, settle=0.05, poll=0.5).start()
    try:
        receive = DirectReceiver(ledger, worker.wake)
        invoice_id = world.subscribe(acme).latest_invoice
        for n, kind in enumerate(["invoice.created", "invoice.finalized", "invoice.paid"]):
            text = event_body(f"evt_w{n}", kind, {"id": invoice_id, "object": "invoice"}).decode()
            event, _ = parse_event(text)
            assert event is not None
            receive(incoming_event(event, text, sha256_hex(text), Channel.WEBHOOK))
        wait_until(ledger.pending_stripe_events, lambda pending: pending == [])
        assert kinds(ledger, invoice_id) == ["Drafted", "Issued", "Paid"]
        assert worker.report.processed == 3
        assert reads_of(stripe_sandbox, invoice_id) <= 2  # the burst coalesced
    finally:
        worker.stop()
