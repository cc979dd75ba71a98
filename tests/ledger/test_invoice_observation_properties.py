"""Never trusting order: whatever order (and however often) the snapshots of one
Stripe invoice's history are observed in, the ledger ends in Stripe's final state
with each fact recorded at most once, and observing them all again records nothing."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.app import Ledger
from ledger.invoices.application import CreditNoteSnapshot, InvoiceSnapshot
from ledger.invoices.domain import Invoice, Totals
from ledger.sources import Source
from ledger.values import Line, Period

D = Decimal
ADMIN = Source("admin", "admin-1", actor="alice@example.com")
PERIOD = Period(date(2026, 1, 1), date(2026, 2, 1))
TOTAL = D("60.00")
LINES = [Line("il_1", "usage", "Calls", D("4800"), D("0.0125"), TOTAL)]
STEPS = ["fail", "credit", "void_credit", "uncollectible", "pay", "void"]


def snapshot(stripe_id: str, state: dict[str, Any], newest_first: bool) -> InvoiceSnapshot:
    status = state["status"]
    final = status != "draft"
    notes = [
        CreditNoteSnapshot(note_id, f"CN-{note_id}", amount, "goodwill", "", voided=voided)
        for note_id, (amount, voided) in state["notes"].items()
    ]
    return InvoiceSnapshot(
        stripe_id=stripe_id,
        entity_id="acme",
        currency="usd",
        period=PERIOD,
        status=status,
        lines=LINES,
        totals=Totals(TOTAL, D("0"), TOTAL),
        number=f"N-{stripe_id}" if final else None,
        issue_date=date(2026, 2, 1) if final else None,
        due_date=date(2026, 2, 15) if final else None,
        attempt_count=state["attempts"],
        last_failure="card_declined" if state["attempts"] else "",
        amount_paid=TOTAL if status == "paid" else D(0),
        paid_at=datetime(2026, 2, 3, tzinfo=UTC) if status == "paid" else None,
        credit_notes=notes[::-1] if newest_first else notes,
    )


@st.composite
def stripe_histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """The states one invoice goes through in Stripe, following Stripe's rules."""
    state: dict[str, Any] = {"status": "draft", "attempts": 0, "notes": {}}
    states = [dict(state, notes=dict(state["notes"]))]
    state["status"] = "open"
    states.append(dict(state, notes=dict(state["notes"])))
    for step in draw(st.lists(st.sampled_from(STEPS), max_size=10)):
        status, notes = state["status"], state["notes"]
        live = [n for n, (_a, voided) in notes.items() if not voided]
        credited = sum((notes[n][0] for n in live), D(0))
        if step == "fail" and status == "open":
            state["attempts"] += 1
        elif step == "credit" and status in ("open", "paid", "uncollectible"):
            amount = draw(st.sampled_from([D("10.00"), D("20.00"), D("40.00"), D("60.00")]))
            if credited + amount > TOTAL:
                continue
            notes[f"cn_{len(notes) + 1}"] = (amount, False)
        elif step == "void_credit" and live:
            note = draw(st.sampled_from(live))
            notes[note] = (notes[note][0], True)
        elif step == "uncollectible" and status == "open":
            state["status"] = "uncollectible"
        elif step == "pay" and status in ("open", "uncollectible"):
            state["status"] = "paid"
        elif step == "void" and status in ("open", "uncollectible"):
            state["status"] = "void"
        else:
            continue
        states.append(dict(state, notes=dict(notes)))
    return states


EXAMPLES = {"sqlite": 60, "postgres": 25}


def test_any_observation_order_ends_in_stripes_final_state(fresh_ledgers: Any) -> None:
    with fresh_ledgers() as (ledger, _clock, _raw):
        ledger.register_entity("Acme", "company", ADMIN)
        serial = itertools.count(1)
        events = itertools.count(1)

        def observe(snap: InvoiceSnapshot) -> bool:
            return ledger.observe_invoice(snap, Source("stripe_event", f"evt_{next(events)}"))

        @settings(
            max_examples=EXAMPLES[fresh_ledgers.backend],
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(history=stripe_histories(), data=st.data())
        def check(history: list[dict[str, Any]], data: st.DataObject) -> None:
            stripe_id = f"in_{next(serial)}"
            newest_first = data.draw(st.booleans(), label="credit notes newest first")
            snaps = [snapshot(stripe_id, state, newest_first) for state in history]
            order = data.draw(st.permutations(snaps), label="order")
            repeats = data.draw(st.lists(st.sampled_from(snaps), max_size=3), label="retries")
            for snap in [*order, *repeats]:
                observe(snap)
            check_final(ledger, stripe_id, history[-1])
            # Everything observed once more, in any order: nothing new.
            head = ledger.recorder.max_notification_id()
            for snap in data.draw(st.permutations(snaps), label="again"):
                assert observe(snap) is False
            assert ledger.recorder.max_notification_id() == head

        check()
        assert ledger.verify_seal().ok


def check_final(ledger: Ledger, stripe_id: str, final: dict[str, Any]) -> None:
    invoice = ledger.invoice(stripe_id)
    assert invoice.status == final["status"]
    expected_credit = sum((a for a, voided in final["notes"].values() if not voided), D(0))
    assert invoice.credited == expected_credit
    assert set(invoice.credit_notes) == set(final["notes"])
    assert {n for n, c in invoice.credit_notes.items() if c.voided} == {
        n for n, (_a, voided) in final["notes"].items() if voided
    }
    history = ledger.history(Invoice.create_id(stripe_id))
    kinds = Counter(type(e).__name__ for e in history)
    assert kinds["Drafted"] == kinds["Issued"] == 1
    for once in ("Paid", "Voided", "MarkedUncollectible"):
        assert kinds[once] <= 1
    issued = [e.credit_note_id for e in history if type(e).__name__ == "CreditNoteIssued"]
    voided = [e.credit_note_id for e in history if type(e).__name__ == "CreditNoteVoided"]
    assert len(issued) == len(set(issued))
    assert len(voided) == len(set(voided))
    attempts = [e.attempt_count for e in history if type(e).__name__ == "PaymentFailed"]
    assert attempts == sorted(set(attempts))
    assert all(a <= final["attempts"] for a in attempts)


def test_a_voided_credit_note_frees_room_whatever_the_order_stripe_lists_them_in(
    ledger: Ledger,
) -> None:
    """cn_1 (40 of 60) is voided and cn_2 (60) issued in its place. Stripe lists credit
    notes newest first, so a snapshot holds cn_2 before the voided cn_1: the ledger
    must not count cn_1 against the total while it records cn_2."""
    ledger.register_entity("Acme", "company", ADMIN)
    paid = {"status": "paid", "attempts": 0, "notes": {}}
    one = dict(paid, notes={"cn_1": (D("40.00"), False)})
    replaced = dict(paid, notes={"cn_1": (D("40.00"), True), "cn_2": (D("60.00"), False)})
    for newest_first, stripe_id in ((True, "in_1"), (False, "in_2")):
        # In Stripe's order...
        for state in (paid, one, replaced):
            ledger.observe_invoice(snapshot(stripe_id, state, newest_first), ADMIN)
        check_final(ledger, stripe_id, replaced)
    # ...and when the last snapshot is the first one seen.
    ledger.observe_invoice(snapshot("in_3", replaced, True), ADMIN)
    check_final(ledger, "in_3", replaced)
