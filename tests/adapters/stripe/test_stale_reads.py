"""Two readers of one invoice interleaved, against the sandbox, on both backends:
A reads the invoice from Stripe; Stripe changes it and B reads and records the
change (another process's inbox worker, or `sync`); only then does A record what
it read. A's older read must never win: a draft's lines are read again, and an
older status records nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import stripe

from adapters.stripe.invoices import InvoiceReader, NotForTheLedger
from adapters.stripe.processing import FRESH_READS, process_pending
from adapters.stripe.sync import Sync, run_sync
from adapters.stripe.testing import BillingWorld, event_body
from adapters.stripe.webhooks import incoming_event, parse_event
from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.invoices.application import CreditNoteSnapshot, InvoiceSnapshot
from ledger.invoices.domain import Invoice, Totals
from ledger.money import Money
from ledger.sources import Source
from ledger.stripe_inbox.domain import Channel, sha256_hex
from ledger.values import Line, Period

from .conftest import SettingsFor

_ids = itertools.count(1)


@pytest.fixture
def other(database_url: str, tmp_path: Path, make_settings: SettingsFor) -> Iterator[Ledger]:
    """A second process on the same database, with its own cache."""
    settings: Settings = make_settings(database_url, tmp_path / "var")
    app = bootstrap.ledger(settings)
    yield app
    app.close()


def stripe_event(ledger: Ledger, invoice_id: str, event_type: str) -> str:
    """Store an invoice event as the webhook endpoint would (already verified)."""
    event_id = f"evt_race{next(_ids)}"
    obj = {"id": invoice_id, "object": "invoice"}
    text = event_body(event_id, event_type, obj, 1_767_225_600 + next(_ids)).decode()
    event, problem = parse_event(text)
    assert event is not None, problem
    assert ledger.receive_stripe_event(
        incoming_event(event, text, sha256_hex(text), Channel.WEBHOOK)
    )
    return event_id


class ThenMeanwhile(InvoiceReader):
    """Reads as InvoiceReader does; after each of its first `times` reads (before
    the caller records it) runs `meanwhile`: what the caller then records is an
    older read."""

    def __init__(
        self,
        client: stripe.StripeClient,
        ledger: Ledger,
        meanwhile: Callable[[], Any],
        times: int = 1,
    ) -> None:
        super().__init__(client, ledger)
        self.meanwhile = meanwhile
        self.times = times
        self.reads = 0

    def read(self, invoice_id: str) -> InvoiceSnapshot | NotForTheLedger:
        snapshot = super().read(invoice_id)
        self.reads += 1
        if self.reads <= self.times:
            self.meanwhile()
        return snapshot


def add_item(world: BillingWorld, client: stripe.StripeClient, invoice: Any, cents: int) -> None:
    client.v1.invoice_items.create(
        {
            "customer": world.customers["acme"].customer.id,
            "invoice": invoice.id,
            "amount": cents,
            "currency": "usd",
            "description": f"Extra {cents}",
        }
    )


def stripe_total(client: stripe.StripeClient, invoice_id: str) -> Any:
    invoice = client.v1.invoices.retrieve(invoice_id)
    return Money.from_minor(invoice.total, invoice.currency).amount


def kinds(ledger: Ledger, stripe_id: str) -> list[str]:
    return [type(e).__name__ for e in ledger.history(Invoice.create_id(stripe_id))]


def test_a_draft_read_before_another_worker_recorded_its_revision_does_not_roll_it_back(
    world: BillingWorld, ledger: Ledger, other: Ledger, client: stripe.StripeClient
) -> None:
    world.customer("acme")
    draft = world.manual_invoice(world.customers["acme"], [("Setup", 1_000)])
    stripe_event(ledger, draft.id, "invoice.created")

    def revised_and_recorded_by_the_other_worker() -> None:
        add_item(world, client, draft, 1_000)
        stripe_event(other, draft.id, "invoice.updated")
        report = process_pending(other, client)
        assert report.invoices_changed == 1

    reader = ThenMeanwhile(client, ledger, revised_and_recorded_by_the_other_worker)
    report = process_pending(ledger, client, reader=reader)

    assert ledger.invoice(draft.id).total == stripe_total(client, draft.id) == 24
    assert kinds(ledger, draft.id) == ["Drafted"]  # the other worker's, never the older read
    assert reader.reads == 2  # refused as stale, read again
    assert (report.processed, report.failed, report.deferred) == (1, 0, 0)
    assert ledger.pending_stripe_events(include_failed=True) == []


def test_a_draft_other_readers_keep_revising_is_left_for_the_next_pass_not_recorded_stale(
    world: BillingWorld, ledger: Ledger, other: Ledger, client: stripe.StripeClient
) -> None:
    world.customer("acme")
    draft = world.manual_invoice(world.customers["acme"], [("Setup", 1_000)])
    stripe_event(ledger, draft.id, "invoice.created")

    def revised_and_recorded_by_the_other_worker() -> None:
        add_item(world, client, draft, 1_000)
        stripe_event(other, draft.id, "invoice.updated")
        process_pending(other, client)

    reader = ThenMeanwhile(client, ledger, revised_and_recorded_by_the_other_worker, times=9)
    report = process_pending(ledger, client, reader=reader)

    assert reader.reads == FRESH_READS
    assert (report.processed, report.deferred) == (0, 1)
    assert ledger.invoice(draft.id).total == stripe_total(client, draft.id) == 12 * 4
    assert kinds(ledger, draft.id) == ["Drafted", "LinesRevised", "LinesRevised"]


def test_a_revision_read_before_sync_recorded_a_newer_one_does_not_roll_it_back(
    world: BillingWorld, ledger: Ledger, other: Ledger, client: stripe.StripeClient
) -> None:
    world.customer("acme")
    draft = world.manual_invoice(world.customers["acme"], [("Setup", 1_000)])
    stripe_event(ledger, draft.id, "invoice.created")
    process_pending(ledger, client)
    add_item(world, client, draft, 1_000)  # 20 before tax: the worker reads this
    stripe_event(ledger, draft.id, "invoice.updated")

    def revised_again_and_synced() -> None:
        add_item(world, client, draft, 1_000)  # 30
        run_sync(other, client)

    reader = ThenMeanwhile(client, ledger, revised_again_and_synced)
    process_pending(ledger, client, reader=reader)

    assert ledger.invoice(draft.id).total == stripe_total(client, draft.id) == 36
    totals = [e.total for e in ledger.history(Invoice.create_id(draft.id))]
    assert totals == [12, 36]  # sync's revision; the worker's older 24 never recorded


def test_a_listed_draft_older_than_a_workers_revision_does_not_roll_it_back(
    world: BillingWorld, ledger: Ledger, other: Ledger, client: stripe.StripeClient
) -> None:
    world.customer("acme")
    draft = world.manual_invoice(world.customers["acme"], [("Setup", 1_000)])

    def revised_and_recorded_by_a_worker() -> None:
        add_item(world, client, draft, 1_000)
        stripe_event(other, draft.id, "invoice.updated")
        process_pending(other, client)

    class ListedThenMeanwhile(Sync):
        """Runs `meanwhile` after the page of invoices was read, before any of it
        is recorded."""

        def _invoices(self, created_gte: int | None, after: str | None) -> Iterator[Any]:
            for invoice in super()._invoices(created_gte, after):
                revised_and_recorded_by_a_worker()
                yield invoice

    ListedThenMeanwhile(ledger, client).run()

    assert ledger.invoice(draft.id).total == stripe_total(client, draft.id) == 24
    assert kinds(ledger, draft.id) == ["Drafted"]
    assert ledger.pending_stripe_events(include_failed=True) == []


def test_an_open_invoice_read_before_it_was_paid_and_recorded_paid_records_nothing(
    world: BillingWorld, ledger: Ledger, other: Ledger, client: stripe.StripeClient
) -> None:
    world.customer("acme")
    invoice = world.manual_invoice(world.customers["acme"], [("Setup", 1_000)])
    client.v1.invoices.finalize_invoice(invoice.id)
    stripe_event(ledger, invoice.id, "invoice.finalized")

    def paid_and_recorded_by_the_other_worker() -> None:
        client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})
        stripe_event(other, invoice.id, "invoice.paid")
        process_pending(other, client)

    reader = ThenMeanwhile(client, ledger, paid_and_recorded_by_the_other_worker)
    report = process_pending(ledger, client, reader=reader)

    assert ledger.invoice(invoice.id).status.value == "paid"
    assert kinds(ledger, invoice.id) == ["Drafted", "Issued", "Paid"]
    assert reader.reads == 1  # nothing in an older status can roll back: no read again
    assert (report.processed, report.invoices_changed) == (1, 0)


PERIOD = Period(date(2026, 1, 1), date(2026, 2, 1))
AT = datetime(2026, 2, 3, 12, 0, tzinfo=UTC)
CN = CreditNoteSnapshot("cn_1", "CN-1", Decimal(5), "duplicate", "")


def stripe_path(*steps: dict[str, Any]) -> list[InvoiceSnapshot]:
    """An invoice's states along Stripe's state machine: a draft, issued, then
    each of `steps` applied to the state before."""
    line = Line("il_1", "fee", "Setup", Decimal(1), Decimal(50), Decimal(50))
    state = InvoiceSnapshot(
        "in_x",
        "acme",
        "usd",
        PERIOD,
        "draft",
        [line],
        Totals(Decimal(50), Decimal(10), Decimal(60)),
    )
    issued = {"status": "open", "number": "A-1", "issue_date": date(2026, 2, 1)}
    states = [state, state := replace(state, **issued)]
    for changes in steps:
        states.append(state := replace(state, **changes))
    return states


PAID = {"status": "paid", "amount_paid": Decimal(60), "paid_at": AT}
PATHS = [
    stripe_path({"attempt_count": 1}, {"attempt_count": 2}, PAID),
    stripe_path({"status": "uncollectible", "marked_uncollectible_at": AT}, PAID),
    stripe_path({"attempt_count": 1}, {"status": "uncollectible"}, {"status": "void"}),
    stripe_path({"credit_notes": [CN]}, {"credit_notes": [replace(CN, voided=True)]}, PAID),
    stripe_path({"status": "void", "voided_at": AT}),
]


def test_an_older_state_than_one_recorded_records_nothing_whatever_the_status(
    ledger: Ledger,
) -> None:
    """A status, an attempt count, a credit note only move forward: what the
    ledger does with an older read of anything but a draft's lines is nothing."""
    ledger.register_entity("Acme", "company", Source("admin", "a", actor="ops@example.com"))
    cases = itertools.count(1)
    for path in PATHS:
        for newer in range(1, len(path)):
            for older in range(newer):
                stripe_id = f"in_older{next(cases)}"
                for step, state in enumerate(path[: newer + 1]):
                    forward = Source("stripe_event", f"evt_{stripe_id}_{step}")
                    ledger.observe_invoice(replace(state, stripe_id=stripe_id), forward)
                before = kinds(ledger, stripe_id)
                stale = replace(path[older], stripe_id=stripe_id)
                assert not ledger.observe_invoice(
                    stale, Source("stripe_event", f"evt_{stripe_id}")
                ), (
                    path[older].status,
                    path[newer].status,
                )
                assert kinds(ledger, stripe_id) == before
