"""explain on worlds built through the ledger's commands: a clean world flags
nothing; each planted discrepancy is found, named by its code, and explaining as
of the issue instant gives the answer that was right then."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.errors import NotRecordedYet, UnknownInvoice
from ledger.explain.application import explain
from ledger.explain.domain import DayUsage, Explanation, FlagCode, build_explanation, spans
from ledger.invoices.domain import Invoice
from ledger.money import Money, line_amount
from ledger.values import Line, Period

from .conftest import ADMIN, PERIOD, RATE, World, with_tax

D = Decimal


def test_a_clean_invoice_flags_nothing_and_adds_up(billed: World) -> None:
    x = explain(billed.ledger, "ACME-0001")
    assert x.flags == ()
    assert x.ok
    assert x.invoice.number == "ACME-0001"
    assert x.invoice.stripe_id == "in_1"
    assert [d.day for d in x.days] == PERIOD.days()
    assert all(d.calls == 10 + d.day.day and d.late_calls == 0 for d in x.days)
    assert all(d.pushed == d.calls for d in x.days)
    assert all(d.rate is not None and d.rate.unit_price == RATE for d in x.days)
    usage = x.lines[0]
    assert usage.kind == "usage"
    assert usage.quantity == sum(d.calls for d in x.days) == usage.calls_at_issue
    assert usage.computed_amount == usage.amount == usage.contracted_amount
    assert x.entity.name == "Acme Corp"
    assert x.entity.stripe_customer_id == "cus_acme"
    assert [f.fee_id for f in x.fees] == ["platform"]
    assert len(x.usage_pushed) == len(PERIOD.days())
    assert not any(p.after_issue for p in x.usage_pushed)
    assert [t.event for t in x.timeline] == ["drafted", "issued"]


def test_explains_by_stripe_id_or_number_alike(billed: World) -> None:
    assert explain(billed.ledger, "in_1") == explain(billed.ledger, "ACME-0001")


def test_late_calls_are_flagged_now_and_absent_as_of_issue(billed: World) -> None:
    issued = explain(billed.ledger, "in_1").issued_at
    assert issued is not None
    late_day = PERIOD.days()[3]
    billed.calls(late_day, 7)
    x = explain(billed.ledger, "in_1")
    assert x.codes == {FlagCode.USAGE_VS_CALLS_NOW}
    day = next(d for d in x.days if d.day == late_day)
    assert (day.late_calls, day.calls - day.calls_at_issue) == (7, 7)
    [flag] = x.flags
    assert flag.days == (late_day,)
    assert "7 calls arrived after the invoice was issued" in flag.message
    then = explain(billed.ledger, "in_1", as_of=issued)
    assert then.ok
    assert all(d.late_calls == 0 for d in then.days)


def test_a_retroactive_rate_correction_is_flagged_with_who_when_and_why(billed: World) -> None:
    issued = explain(billed.ledger, "in_1").issued_at
    billed.ledger.set_rate("acme", D("0.0100"), "usd", PERIOD.start, "contract typo", ADMIN)
    x = explain(billed.ledger, "in_1")
    assert x.codes == {FlagCode.RATE_CORRECTED_AFTER_ISSUE}
    assert all(d.rate_corrected_after_issue for d in x.days)
    assert all(d.rate is not None and d.rate.version == 2 for d in x.days)
    assert all(d.rate_at_issue is not None and d.rate_at_issue.version == 1 for d in x.days)
    day = x.days[0]
    assert day.rate is not None
    assert issued is not None
    assert day.rate.recorded_at > issued
    assert (day.rate.reason, day.rate.source.actor) == ("contract typo", "alice@example.com")
    [flag] = x.flags
    assert "0.0125 USD per call when it was issued, 0.0100 USD per call now" in flag.message
    assert "contract typo" in flag.message
    assert explain(billed.ledger, "in_1", as_of=issued).ok


def test_a_correction_of_later_days_only_flags_those_days(billed: World) -> None:
    later = PERIOD.days()[5]
    billed.ledger.set_rate("acme", D("0.0150"), "usd", later, "price rise", ADMIN)
    x = explain(billed.ledger, "in_1")
    [flag] = x.flags
    assert flag.code is FlagCode.RATE_CORRECTED_AFTER_ISSUE
    assert flag.days == tuple(PERIOD.days()[5:])


def test_a_wrong_unit_price_is_a_rate_mismatch_not_an_arithmetic_error(world: World) -> None:
    world.calls_every_day()
    world.push_all()
    world.clock.advance(days=20)
    world.issue(lines=world.stripe_lines(unit_price=D("0.015")))
    x = explain(world.ledger, "in_1")
    assert x.codes == {FlagCode.RATE_MISMATCH}
    [flag] = x.flags
    assert flag.line_id == "il_usage"
    assert "0.015 USD per call" in flag.message
    assert "0.0125 USD per call" in flag.message
    assert x.lines[0].arithmetic_ok


def test_an_amount_that_is_not_quantity_times_price_is_flagged(world: World) -> None:
    world.calls_every_day()
    world.push_all()
    world.clock.advance(days=20)
    lines = world.stripe_lines()
    wrong = world.stripe_lines(amount=lines[0].amount + D("0.01"))
    world.issue(lines=wrong)
    x = explain(world.ledger, "in_1")
    assert x.codes == {FlagCode.AMOUNT_ARITHMETIC}
    assert x.lines[0].computed_amount == lines[0].amount


def test_arithmetic_is_checked_to_the_minor_unit_as_stripe_rounds(world: World) -> None:
    # 3 calls at 0.0125 = 0.0375: Stripe rounds half up to 0.04.
    day = PERIOD.start
    world.calls(day, 3)
    world.push(day)
    world.clock.advance(days=20)
    world.issue()
    x = explain(world.ledger, "in_1")
    assert x.lines[0].amount == D("0.04")
    assert x.ok


def test_a_duplicate_push_is_flagged_on_its_day_and_against_the_calls(world: World) -> None:
    world.calls_every_day()
    world.push_all()
    day = PERIOD.days()[2]
    usage = world.ledger.usage("acme", day)
    assert usage is not None
    world.push(day, quantity=usage.calls, identifier="acme-dup")
    world.clock.advance(days=20)
    world.issue()  # Stripe's meter summed both pushes
    x = explain(world.ledger, "in_1")
    assert x.codes == {FlagCode.DUPLICATE_PUSH, FlagCode.USAGE_VS_CALLS_THEN}
    dup = next(f for f in x.flags if f.code is FlagCode.DUPLICATE_PUSH)
    assert dup.days == (day,)
    assert "acme-dup" in dup.message
    assert [p.identifier for p in x.usage_pushed if p.day == day] == [f"acme-{day}-1", "acme-dup"]


def test_usage_billed_that_was_never_pushed_is_flagged(world: World) -> None:
    world.calls_every_day()
    world.push_all()
    world.calls(PERIOD.start, 4)  # recorded, not pushed: Stripe never saw them
    world.clock.advance(days=20)
    world.issue()
    x = explain(world.ledger, "in_1")
    assert x.codes == {FlagCode.USAGE_VS_CALLS_THEN}
    assert "4 calls too few billed" in x.flags[0].message


def test_a_credit_note_is_shown_and_reconciles_without_a_flag(billed: World) -> None:
    snap = billed.issue()  # the same snapshot again: nothing new
    billed.credit(snap, D("5.00"), "duplicate")
    x = explain(billed.ledger, "in_1")
    assert x.ok
    [note] = x.credit_notes
    assert (note.amount, note.reason, note.voided) == (D("5.00"), "duplicate", False)
    assert x.invoice.credited == D("5.00")
    assert x.invoice.net_total == x.invoice.total - D("5.00")
    assert x.timeline[-1].event == "credit_note_issued"


def test_the_timeline_lists_each_status_with_its_source(billed: World) -> None:
    snap = billed.issue()
    billed.clock.advance(days=1)
    snap = billed.observe(snap, attempt_count=1, last_failure="card declined")
    billed.clock.advance(days=20)
    billed.ledger.mark_past_due("in_1", PERIOD.end + timedelta(days=20), ADMIN)
    billed.clock.advance(days=1)
    paid_at = billed.clock.now
    billed.observe(snap, status="paid", amount_paid=snap.totals.total, paid_at=paid_at)
    x = explain(billed.ledger, "in_1")
    assert [(t.event, t.status) for t in x.timeline] == [
        ("drafted", "draft"),
        ("issued", "open"),
        ("payment_failed", "open"),
        ("past_due", "past_due"),
        ("paid", "paid"),
    ]
    assert x.timeline[2].source.kind == "stripe_event"
    assert x.timeline[3].source == ADMIN
    assert x.timeline[4].effective_at == paid_at
    assert x.invoice.status == "paid"
    assert x.ok
    before_paid = explain(billed.ledger, "in_1", as_of=paid_at - timedelta(seconds=1))
    assert before_paid.invoice.status == "past_due"
    assert before_paid.timeline[-1].event == "past_due"


def test_void_and_uncollectible_appear_in_the_timeline(world: World) -> None:
    world.calls_every_day()
    world.push_all()
    world.clock.advance(days=20)
    world.issue("in_1", "ACME-0001", status="uncollectible")
    world.issue("in_2", "ACME-0002", status="void", voided_at=world.clock.now)
    assert [t.event for t in explain(world.ledger, "in_1").timeline][-1] == "uncollectible"
    assert [t.status for t in explain(world.ledger, "in_2").timeline][-1] == "void"


def test_the_entity_is_shown_as_it_was_when_the_invoice_was_issued(billed: World) -> None:
    billed.ledger.rename_entity("acme", "Acme Renamed", ADMIN)
    assert explain(billed.ledger, "in_1").entity.name == "Acme Corp"


def test_subtotal_tax_and_total_are_checked_against_the_lines(world: World) -> None:
    world.calls_every_day()
    world.push_all()
    world.clock.advance(days=20)
    lines = world.stripe_lines()
    snap = world.issue(lines=lines)
    # Stripe's totals disagree with its own lines (here: a second invoice whose tax
    # line says less than the tax it charged).
    tax_line = lines[-1]
    short = [*lines[:-1], type(tax_line)(**{**tax_line.__dict__, "amount": tax_line.amount - 1})]
    world.observe(snap, stripe_id="in_2", number="ACME-0002", lines=short)
    x = explain(world.ledger, "in_2")
    assert x.codes == {FlagCode.TOTAL_MISMATCH}
    assert "tax lines add up to" in x.flags[0].message


def test_an_invoice_in_another_currency_than_the_rate_is_flagged(world: World) -> None:
    world.calls_every_day()
    world.push_all()
    world.clock.advance(days=20)
    world.currency = "eur"
    world.issue()
    assert FlagCode.CURRENCY_MISMATCH in explain(world.ledger, "in_1").codes


def test_usage_on_days_without_a_contracted_rate_is_flagged(world: World) -> None:
    # The contract starts on PERIOD.start; bill a period that begins two days before.
    early = Period(PERIOD.start - timedelta(days=2), PERIOD.end)
    world.calls(early.start, 5)
    world.push(early.start)
    world.clock.advance(days=20)
    world.issue(lines=world.stripe_lines(early, unit_price=RATE), period=early)
    x = explain(world.ledger, "in_1")
    assert x.codes == {FlagCode.RATE_MISSING}
    assert x.flags[0].days == (early.start,)


def test_unknown_invoice_and_an_invoice_not_recorded_yet_are_refused(billed: World) -> None:
    with pytest.raises(UnknownInvoice):
        explain(billed.ledger, "NOPE-1")
    with pytest.raises(UnknownInvoice):
        explain(billed.ledger, "in_nope")
    with pytest.raises(NotRecordedYet):
        explain(billed.ledger, "in_1", as_of=datetime(2025, 1, 1, tzinfo=UTC))


def test_as_of_before_issue_explains_the_draft_with_then_equal_to_as_of(world: World) -> None:
    world.calls_every_day()
    world.push_all()
    world.clock.advance(days=20)
    snap = world.issue(status="draft")
    drafted = world.clock.now
    world.clock.advance(hours=1)
    world.observe(snap, status="open")
    x = explain(world.ledger, "in_1", as_of=drafted)
    assert x.invoice.status == "draft"
    assert x.issued_at is None
    assert x.ok


def test_numbers_are_matched_whole_even_with_quotes_and_accents(world: World) -> None:
    world.calls_every_day()
    world.push_all()
    world.clock.advance(days=20)
    world.issue("in_1", 'ÉTÉ "1"\\')
    world.issue("in_2", "ACME-1")
    world.issue("in_3", "ACME-10")
    assert explain(world.ledger, 'ÉTÉ "1"\\').invoice.stripe_id == "in_1"
    assert explain(world.ledger, "ACME-10").invoice.stripe_id == "in_3"
    assert explain(world.ledger, " ACME-1 ").invoice.stripe_id == "in_2"
    with pytest.raises(UnknownInvoice):
        explain(world.ledger, "ACME")


def two_price_lines(world: World, second_price: Decimal) -> list[Line]:
    """Two usage lines over the same period, one per price, the calls split at the
    day the second price starts (how Stripe bills a price swapped mid-period)."""
    days = PERIOD.days()
    first = sum(world.ledger.usage("acme", d).calls for d in days[:5])  # type: ignore[union-attr]
    second = sum(world.ledger.usage("acme", d).calls for d in days[5:])  # type: ignore[union-attr]
    lines = [
        Line("il_u1", "usage", "Calls (v1)", D(first), RATE, D(0), "p1", PERIOD),
        Line("il_u2", "usage", "Calls (v2)", D(second), second_price, D(0), "p2", PERIOD),
    ]
    return [
        replace(x, amount=line_amount(x.quantity, Money(x.unit_amount or D(0), "usd")).amount)
        for x in lines
    ]


def test_lines_per_price_over_the_same_days_are_checked_together(world: World) -> None:
    world.ledger.set_rate("acme", D("0.02"), "usd", PERIOD.days()[5], "rise", ADMIN)
    world.calls_every_day()
    world.push_all()
    world.clock.advance(days=20)
    world.issue(lines=with_tax(two_price_lines(world, D("0.02")), "usd"))
    assert explain(world.ledger, "in_1").ok


def test_lines_per_price_that_cost_other_than_the_contract_are_a_rate_mismatch(
    world: World,
) -> None:
    world.ledger.set_rate("acme", D("0.02"), "usd", PERIOD.days()[5], "rise", ADMIN)
    world.calls_every_day()
    world.push_all()
    world.clock.advance(days=20)
    world.issue(lines=with_tax(two_price_lines(world, D("0.03")), "usd"))
    x = explain(world.ledger, "in_1")
    assert x.codes == {FlagCode.RATE_MISMATCH}
    assert x.flags[0].line_id is None
    assert "Lines 'Calls (v1)', 'Calls (v2)'" in x.flags[0].message


def test_a_subtotal_that_is_not_the_sum_of_the_lines_is_a_total_mismatch(billed: World) -> None:
    x = explain(billed.ledger, "in_1")
    invoice = billed.ledger.invoice("in_1")
    invoice.subtotal += D("1.00")
    invoice.total += D("1.00")
    y = rebuilt(billed, invoice, x.as_of)
    assert y.codes == {FlagCode.TOTAL_MISMATCH}
    assert "lines before tax add up to" in y.flags[0].message


def test_credits_beyond_the_total_are_flagged(billed: World) -> None:
    # The ledger refuses to record such a credit note; the check stands guard for
    # a log that says otherwise.
    snap = billed.issue()
    billed.credit(snap, D("1.00"), "goodwill")
    invoice = billed.ledger.invoice("in_1")
    note = invoice.credit_notes["cn_1"]
    invoice.credit_notes["cn_1"] = replace(note, amount=invoice.total + 1)
    y = rebuilt(billed, invoice, billed.clock.now)
    assert y.codes == {FlagCode.CREDITS_EXCEED_TOTAL}


def rebuilt(world: World, invoice: Invoice, at: datetime) -> Explanation:
    """build_explanation over an invoice state the ledger would not record."""
    events = world.ledger.history(invoice.id)
    entity = world.ledger.entity("acme")
    rate = world.ledger.rate("acme")
    usage = [
        DayUsage(d, world.ledger.usage("acme", d), world.ledger.usage("acme", d))
        for d in PERIOD.days()
    ]
    return build_explanation(
        as_of=at,
        invoice=invoice,
        invoice_events=events,
        entity=entity,
        usage=usage,
        rate_at_issue=rate,
        rate_as_of=rate,
    )


def test_days_are_spelled_as_runs() -> None:
    d = PERIOD.days()
    assert spans([d[0], d[1], d[2], d[5], d[7], d[8]]) == (
        "2026-01-01 to 2026-01-03, 2026-01-06, 2026-01-08 to 2026-01-09"
    )
    assert spans([]) == "no day"
