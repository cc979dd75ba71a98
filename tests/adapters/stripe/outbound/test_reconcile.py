"""Reconcile over a billed period in the sandbox: calls counted in the ledger vs
usage pushed vs what Stripe's meter holds vs the quantity and amount invoiced;
every mismatch recorded as a finding of the run."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from adapters.stripe.outbound.corrections import correct_wrong_rate
from adapters.stripe.outbound.subscriptions import BillingTerms
from adapters.stripe.outbound.usage import push_usage
from adapters.stripe.reconcile import reconcile
from ledger.entities.domain import BillableEntity
from ledger.sources import Source, SourceKind

from .conftest import World


def run(n: int) -> Source:
    return Source(SourceKind.SCHEDULER_RUN, f"reconcile/{n}", "scheduler")


def kinds(world: World, n: int) -> dict[str, list[str]]:
    report = reconcile(world.ledger, run(n), client=world.client)
    found: dict[str, list[str]] = {}
    for finding in report.findings:
        found.setdefault(finding.entity_id, []).append(finding.kind)
    return found


def test_a_clean_period_has_no_findings_and_the_run_is_recorded(world: World) -> None:
    world.bill_july()
    report = reconcile(world.ledger, run(1), client=world.client)
    assert report.findings == []
    figures = {f.entity_id: f for f in report.figures}
    assert (figures["acme"].counted, figures["acme"].pushed, figures["acme"].invoiced) == (
        240,
        240,
        Decimal(240),
    )
    assert figures["acme"].meter == 240
    assert figures["beta"].expected_amount == figures["beta"].invoiced_amount == Decimal("0.32")
    recorded = world.ledger.latest_reconciliation()
    assert recorded is not None
    assert (recorded.run_id, recorded.checked, recorded.findings) == (run(1).key, 2, [])
    # The same scheduler run recorded twice is recorded once.
    reconcile(world.ledger, run(1), client=world.client)
    assert len(world.ledger.reconciliations()) == 1


def test_calls_counted_late_show_as_not_pushed_then_not_invoiced(world: World) -> None:
    world.bill_july()
    # Calls of 3 July reach the ledger after beta's July invoice was finalized.
    world.calls("beta", date(2026, 7, 3), 4, prefix="late")
    assert kinds(world, 1) == {"beta": ["not_pushed", "meter_differs"]} or kinds(world, 2) == {
        "beta": ["not_pushed"]
    }
    push_usage(world.outbox(), days=[date(2026, 7, 3)])
    found = reconcile(world.ledger, run(3), client=world.client).findings
    assert [(f.entity_id, f.kind, f.expected, f.actual) for f in found] == [
        ("beta", "quantity_differs", "39", "35")
    ]


def test_a_rate_corrected_after_the_invoice_shows_as_an_amount_finding(world: World) -> None:
    def by_bank_transfer(entity: BillableEntity) -> BillingTerms:
        return BillingTerms("send_invoice", 30)

    invoices = world.bill_july(terms=by_bank_transfer)
    world.ledger.set_rate(
        "acme", Decimal("0.0110"), "eur", date(2026, 7, 1), "late amendment", run(0)
    )
    [finding] = reconcile(world.ledger, run(1)).findings
    assert (finding.invoice, finding.kind, finding.expected, finding.actual) == (
        invoices["acme"],
        "amount_differs",
        "2.64",
        "3.00",
    )
    correct_wrong_rate(world.outbox(), invoices["acme"], reason="late amendment", actor="ana")
    assert reconcile(world.ledger, run(2)).findings == []


def test_usage_stripe_holds_that_billtrail_did_not_push_is_found(world: World) -> None:
    world.bill_july()
    customer = world.ledger.entity("beta").stripe_customer_id
    assert customer is not None
    world.client.v1.billing.meter_events.create(
        {
            "event_name": "billtrail_calls",
            "payload": {"stripe_customer_id": customer, "value": "9"},
            "timestamp": int(world.local("beta", date(2026, 7, 10), 12).timestamp()),
        }
    )
    found = reconcile(world.ledger, run(1), client=world.client).findings
    assert [(f.entity_id, f.kind) for f in found] == [("beta", "meter_differs")]
