"""The seed's corrections as application commands, against the sandbox over HTTP:
a wrong rate voids the invoice and regenerates a replacement from the ledger's
calls at the corrected rate (the two linked in the ledger), duplicate calls become
a credit note with the call ids as evidence, a credit and a write-off; each with
its reason and actor, each safe to run again, including after a crash."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from adapters.stripe.outbound.corrections import (
    CorrectionRefused,
    RateRevision,
    correct_wrong_rate,
    credit_duplicate_calls,
    issue_credit,
    void_invoice,
    write_off,
)
from adapters.stripe.outbound.subscriptions import BillingTerms
from ledger.entities.domain import BillableEntity
from ledger.explain.application import explain
from ledger.explain.domain import FlagCode
from ledger.invoices.domain import Status

from .conftest import Crash, World, crash_once

ACTOR = "ana@billtrail.example"


def by_bank_transfer(entity: BillableEntity) -> BillingTerms:
    return BillingTerms("send_invoice", 30)


def test_wrong_rate_voids_and_replaces_the_invoice_from_the_ledgers_calls(world: World) -> None:
    invoices = world.bill_july(terms=by_bank_transfer)
    wrong = world.ledger.invoice(invoices["acme"])
    assert wrong.status is Status.OPEN
    [usage_line] = [li for li in wrong.lines if li.kind == "usage"]
    assert (usage_line.quantity, usage_line.unit_amount) == (240, Decimal("0.0125"))

    result = correct_wrong_rate(
        world.outbox(),
        wrong.number or wrong.stripe_id,
        reason="volume discount signed in June",
        actor=ACTOR,
        revision=RateRevision(Decimal("0.0110"), date(2026, 7, 1)),
    )
    replacement_id = result.results["replacement"]
    assert result.results["voided"] == wrong.stripe_id

    # Stripe: the wrong invoice void, the replacement finalized, billing the 240
    # calls at 1.1 cents.
    assert world.client.v1.invoices.retrieve(wrong.stripe_id).status == "void"
    replacement = world.client.v1.invoices.retrieve(replacement_id)
    assert replacement.status == "open"
    assert replacement.total == 264
    assert replacement.collection_method == "send_invoice"
    [line] = replacement.lines.data
    assert line.quantity == 240

    # The ledger: the rate revised, both invoices recorded and linked, the
    # correction with its reason and actor.
    rate = world.ledger.rate("acme")
    assert [v.unit_price for v in rate.versions] == [Decimal("0.0125"), Decimal("0.0110")]
    old = world.ledger.invoice(wrong.stripe_id)
    new = world.ledger.invoice(replacement_id)
    assert old.status is Status.VOID
    assert old.replaced_by == replacement_id
    assert new.replaces == wrong.stripe_id
    assert new.total == Decimal("2.64")
    correction = world.ledger.correction(result.correction_id)
    assert correction is not None
    assert correction.completed
    assert (correction.reason, correction.actor) == ("volume discount signed in June", ACTOR)
    replaced = [e for e in world.ledger.history(old.id) if type(e).__name__ == "Replaced"]
    assert [(e.source.actor, e.reason) for e in replaced] == [
        (ACTOR, "volume discount signed in June")
    ]

    # Running it again changes nothing and sends nothing.
    posts = len(world.posts())
    again = correct_wrong_rate(world.outbox(), wrong.stripe_id, reason="again", actor=ACTOR)
    assert again.already_done
    assert again.results == result.results
    assert len(world.posts()) == posts


def test_a_correction_that_crashed_half_way_is_finished_by_running_it_again(
    world: World,
) -> None:
    invoices = world.bill_july(terms=by_bank_transfer)
    wrong = invoices["acme"]
    world.ledger.set_rate(
        "acme", Decimal("0.0110"), "eur", date(2026, 7, 1), "late", world.outbox().source
    )
    hook, crashed = crash_once(f"billtrail/correction/wrong-rate/{wrong}/void")
    with pytest.raises(Crash):
        correct_wrong_rate(world.outbox(after_call=hook), wrong, reason="discount", actor=ACTOR)
    assert crashed
    result = correct_wrong_rate(world.outbox(), wrong, reason="discount", actor=ACTOR)
    customer = world.ledger.entity("acme").stripe_customer_id
    assert customer is not None
    listed = world.client.v1.invoices.list({"customer": customer, "limit": 100}).data
    replacements = [i for i in listed if i.metadata and "billtrail_replaces" in i.metadata]
    assert [i.id for i in replacements] == [result.results["replacement"]]
    assert world.ledger.invoice(wrong).replaced_by == result.results["replacement"]


def test_a_paid_invoice_is_not_voided(world: World) -> None:
    invoices = world.bill_july()
    assert world.ledger.invoice(invoices["beta"]).status is Status.PAID
    with pytest.raises(CorrectionRefused, match="credit note"):
        correct_wrong_rate(world.outbox(), invoices["beta"], reason="r", actor=ACTOR)
    with pytest.raises(CorrectionRefused, match="only an open invoice"):
        write_off(world.outbox(), invoices["beta"], reason="r", actor=ACTOR)
    with pytest.raises(CorrectionRefused, match="only an open or uncollectible invoice"):
        void_invoice(world.outbox(), invoices["beta"], reason="r", actor=ACTOR)


def test_duplicate_calls_become_a_credit_note_with_the_call_ids_as_evidence(
    world: World,
) -> None:
    invoices = world.bill_july()
    # Five of beta's calls of 3 July were the same calls again under new ids.
    duplicates = [f"beta-c-20260703-{i:04d}" for i in range(5)]
    result = credit_duplicate_calls(
        world.outbox(), invoices["beta"], duplicates, reason="provider resent a batch", actor=ACTOR
    )
    note_id = result.results["credit_note"]
    note = world.client.v1.credit_notes.retrieve(note_id)
    # 5 calls at 0.90 cents: 4.5 -> 5 cents, to the customer's balance (paid invoice).
    assert note.total == 5
    assert note.reason == "duplicate"
    assert note.memo == "provider resent a batch"
    invoice = world.ledger.invoice(invoices["beta"])
    [recorded] = invoice.credit_notes.values()
    assert recorded.credit_note_id == note_id
    assert recorded.amount == Decimal("0.05")
    assert sorted(recorded.evidence) == sorted(duplicates)
    again = credit_duplicate_calls(
        world.outbox(), invoices["beta"], list(reversed(duplicates)), reason="x", actor=ACTOR
    )
    assert again.already_done
    assert len(world.client.v1.credit_notes.list({"invoice": invoices["beta"]}).data) == 1


def test_evidence_must_be_calls_the_invoice_billed(world: World) -> None:
    invoices = world.bill_july()
    with pytest.raises(CorrectionRefused, match="never counted"):
        credit_duplicate_calls(world.outbox(), invoices["beta"], ["nope"], reason="r", actor=ACTOR)
    with pytest.raises(CorrectionRefused, match="acme's"):
        credit_duplicate_calls(
            world.outbox(), invoices["beta"], ["acme-c-20260701-0000"], reason="r", actor=ACTOR
        )
    with pytest.raises(CorrectionRefused, match="actor"):
        credit_duplicate_calls(
            world.outbox(), invoices["beta"], ["beta-c-20260701-0000"], reason="r", actor=" "
        )
    assert world.client.v1.credit_notes.list({"invoice": invoices["beta"]}).data == []


def test_a_credit_and_a_write_off(world: World) -> None:
    invoices = world.bill_july(terms=by_bank_transfer)
    acme = invoices["acme"]
    credit = issue_credit(world.outbox(), acme, "0.10", reason="goodwill", actor=ACTOR)
    note = world.client.v1.credit_notes.retrieve(credit.results["credit_note"])
    assert note.total == 10
    assert world.ledger.invoice(acme).credited == Decimal("0.10")
    write_off(world.outbox(), acme, reason="customer went bust", actor=ACTOR)
    assert world.client.v1.invoices.retrieve(acme).status == "uncollectible"
    assert world.ledger.invoice(acme).status is Status.UNCOLLECTIBLE


def test_void_voids_an_open_invoice_once(world: World) -> None:
    invoices = world.bill_july(terms=by_bank_transfer)
    acme = invoices["acme"]
    result = void_invoice(world.outbox(), acme, reason="sent to the wrong company", actor=ACTOR)
    assert result.results == {"voided": acme}
    assert world.client.v1.invoices.retrieve(acme).status == "void"
    assert world.ledger.invoice(acme).status is Status.VOID
    correction = world.ledger.correction(result.correction_id)
    assert correction is not None
    assert (correction.kind, correction.reason, correction.actor) == (
        "void",
        "sent to the wrong company",
        ACTOR,
    )
    posts = len(world.posts())
    assert void_invoice(world.outbox(), acme, reason="again", actor=ACTOR).already_done
    assert len(world.posts()) == posts


def test_a_replacement_bills_its_calls_as_usage_so_its_rate_can_be_corrected_again(
    world: World,
) -> None:
    invoices = world.bill_july(terms=by_bank_transfer)
    first = correct_wrong_rate(
        world.outbox(),
        invoices["acme"],
        reason="volume discount signed in June",
        actor=ACTOR,
        revision=RateRevision(Decimal("0.0110"), date(2026, 7, 1)),
    )
    replacement_id = first.results["replacement"]

    # Read back from Stripe, the replacement's line is the usage it bills: the
    # kind its invoice item carried, the inline price Stripe made of its
    # price_data, and the corrected unit price.
    replacement = world.ledger.invoice(replacement_id)
    [line] = replacement.lines
    assert line.kind == "usage"
    assert (line.quantity, line.unit_amount, line.amount) == (
        240,
        Decimal("0.011"),
        Decimal("2.64"),
    )
    assert line.price_id is not None
    assert line.price_id.startswith("price_")
    explanation = explain(world.ledger, replacement_id)
    assert FlagCode.RATE_MISMATCH not in explanation.codes
    assert explanation.ok, explanation.flags
    [explained] = explanation.lines
    assert (explained.kind, explained.unit_amount) == ("usage", Decimal("0.011"))
    assert (explained.calls_at_issue, explained.contracted_amount) == (240, Decimal("2.64"))
    billed_days = [d for d in explanation.days if d.calls_at_issue]
    assert {d.rate_at_issue.unit_price for d in billed_days if d.rate_at_issue} == {
        Decimal("0.0110")
    }

    # So correcting the replacement's rate reprices its calls again.
    second = correct_wrong_rate(
        world.outbox(),
        replacement_id,
        reason="the discount was 1.0 cent",
        actor=ACTOR,
        revision=RateRevision(Decimal("0.0100"), date(2026, 7, 1)),
    )
    again = world.ledger.invoice(second.results["replacement"])
    assert [(li.kind, li.quantity, li.unit_amount) for li in again.lines] == [
        ("usage", 240, Decimal("0.01"))
    ]
    assert again.total == Decimal("2.40")
    assert again.replaces == replacement_id
