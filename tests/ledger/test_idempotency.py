"""Idempotency by source: a command applied from a source with a stable id (a Stripe
event, an import file, a scheduler run) is applied at most once per aggregate; an
admin or CLI source is deduplicated by state only."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from ledger.app import Ledger
from ledger.entities.domain import BillableEntity
from ledger.errors import InvalidSource
from ledger.invoices.application import InvoiceSnapshot
from ledger.invoices.domain import Invoice, Totals
from ledger.sources import Source
from ledger.values import Period

ADMIN = Source("admin", "admin-1", actor="alice@example.com")
EVT_1 = Source(kind="stripe_event", id="evt_1")
PERIOD = Period(date(2026, 1, 1), date(2026, 2, 1))


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def snapshot(status: str, stripe_id: str = "in_1") -> InvoiceSnapshot:
    return InvoiceSnapshot(
        stripe_id=stripe_id,
        entity_id="acme",
        currency="usd",
        period=PERIOD,
        status=status,
        lines=[],
        totals=Totals(Decimal("10"), Decimal("0"), Decimal("10")),
        number=None if status == "draft" else f"N-{stripe_id}",
        issue_date=None if status == "draft" else date(2026, 2, 1),
        due_date=None if status == "draft" else date(2026, 2, 15),
        amount_paid=Decimal("10") if status == "paid" else Decimal(0),
        paid_at=datetime(2026, 2, 2, tzinfo=UTC) if status == "paid" else None,
    )


@pytest.fixture
def acme(ledger: Ledger) -> str:
    ledger.register_entity("Acme", "company", ADMIN)
    return "acme"


def test_the_same_stripe_event_applied_twice_changes_nothing_the_second_time(
    ledger: Ledger, clock, raw_log, acme: str
) -> None:
    assert ledger.link_stripe_customer(acme, "cus_A", EVT_1) is True
    clock.advance(minutes=5)
    # Meanwhile an admin relinks the customer; then Stripe retries evt_1's webhook.
    assert ledger.link_stripe_customer(acme, "cus_B", ADMIN) is True
    before = head(ledger)
    clock.advance(minutes=5)
    assert ledger.link_stripe_customer(acme, "cus_A", EVT_1) is False
    assert head(ledger) == before
    assert ledger.entity(acme).stripe_customer_id == "cus_B"
    # The key is per source, command and aggregate, stored beside the events.
    [(key,)] = raw_log.run(f"SELECT key FROM {raw_log.sources}")
    entity_id = BillableEntity.create_id(acme)
    assert key == f"stripe_event:evt_1|link_stripe_customer|{entity_id.hex}"


def test_the_same_stripe_event_observed_twice_records_the_invoice_once(
    ledger: Ledger, clock, acme: str
) -> None:
    assert ledger.observe_invoice(snapshot("open"), EVT_1) is True
    before = head(ledger)
    clock.advance(minutes=1)
    assert ledger.observe_invoice(snapshot("open"), EVT_1) is False
    assert head(ledger) == before
    kinds = [type(e).__name__ for e in ledger.history(Invoice.create_id("in_1"))]
    assert kinds == ["Drafted", "Issued"]


def test_a_retried_stripe_event_about_an_older_draft_does_not_revert_it(
    ledger: Ledger, clock, acme: str
) -> None:
    """evt_1 saw the draft at 10.00, evt_2 at 12.00. A retry of evt_1 must change
    nothing, although by state alone it would revise the lines back."""
    ten = replace(snapshot("draft"), totals=Totals(Decimal("10"), Decimal("0"), Decimal("10")))
    twelve = replace(ten, totals=Totals(Decimal("12"), Decimal("0"), Decimal("12")))
    assert ledger.observe_invoice(ten, EVT_1) is True
    clock.advance(minutes=1)
    assert ledger.observe_invoice(twelve, Source("stripe_event", "evt_2")) is True
    clock.advance(minutes=1)
    assert ledger.observe_invoice(ten, EVT_1) is False
    assert ledger.invoice("in_1").total == Decimal("12")
    # The same stale snapshot from a source without a stable id is applied by state.
    assert ledger.observe_invoice(ten, ADMIN) is True
    assert ledger.invoice("in_1").total == Decimal("10")


def test_one_stripe_event_may_apply_to_several_aggregates_and_commands(
    ledger: Ledger, acme: str
) -> None:
    ledger.register_entity("Beta", "company", ADMIN)
    assert ledger.link_stripe_customer(acme, "cus_A", EVT_1) is True
    assert ledger.link_stripe_customer("beta", "cus_B", EVT_1) is True
    assert ledger.observe_invoice(snapshot("open", "in_1"), EVT_1) is True
    assert ledger.observe_invoice(snapshot("open", "in_2"), EVT_1) is True
    assert ledger.entity("beta").stripe_customer_id == "cus_B"
    assert [i.stripe_id for i in ledger.invoices()] == ["in_1", "in_2"]


@pytest.mark.parametrize("source", [ADMIN, Source("cli", "cli-1", actor="ops")])
def test_admin_and_cli_sources_are_deduplicated_by_state_not_by_id(
    ledger: Ledger, raw_log, acme: str, source: Source
) -> None:
    assert ledger.rename_entity(acme, "Acme Two", source) is True
    assert ledger.rename_entity(acme, "Acme Three", source) is True
    assert ledger.rename_entity(acme, "Acme Two", source) is True  # the same id, again
    assert ledger.rename_entity(acme, "Acme Two", source) is False  # the same state
    assert ledger.entity(acme).name == "Acme Two"
    assert raw_log.count("sources") == 0


def test_a_scheduler_run_marks_an_invoice_past_due_once(ledger: Ledger, acme: str) -> None:
    run = Source("scheduler_run", "past-due-2026-02-20")
    ledger.observe_invoice(snapshot("open"), EVT_1)
    assert ledger.mark_past_due("in_1", date(2026, 2, 20), run) is True
    assert ledger.mark_past_due("in_1", date(2026, 2, 20), run) is False
    assert ledger.invoice("in_1").past_due_on == date(2026, 2, 20)


def test_every_event_records_its_source(ledger: Ledger, acme: str) -> None:
    ledger.link_stripe_customer(acme, "cus_A", EVT_1)
    ledger.rename_entity(acme, "Acme Inc", ADMIN)
    events = ledger.history(BillableEntity.create_id(acme))
    assert [e.source for e in events] == [ADMIN, EVT_1, ADMIN]
    assert events[-1].source.actor == "alice@example.com"


@pytest.mark.parametrize(
    ("kind", "source_id", "message"),
    [("webhook", "evt_1", "unknown source kind"), ("stripe_event", "", "needs an id")],
)
def test_a_source_needs_a_known_kind_and_an_id(kind: str, source_id: str, message: str) -> None:
    with pytest.raises(InvalidSource, match=message):
        Source(kind, source_id)
