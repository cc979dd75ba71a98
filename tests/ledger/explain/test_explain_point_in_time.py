"""Point in time, as explain relies on it: for random command sequences and a
random instant T, what the ledger answers "as of T" equals a replay of the log cut
at T. The cut log (every stored event recorded at or before T, copied as stored)
is replayed into a second, fresh ledger; then

- every aggregate as recorded at T (`Ledger.as_recorded`, and explain's one-pass
  fold) equals that aggregate rebuilt by the second ledger from the cut log alone;
- `explain(ledger, invoice, as_of=T)` equals explain on the second ledger, which
  knows nothing after T."""

from __future__ import annotations

import contextlib
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.app import Ledger
from ledger.errors import LedgerError, NotFound, NotRecordedYet, UnknownInvoice
from ledger.explain.application import explain
from ledger.explain.replay import fold_at
from ledger.invoices.domain import Invoice

from .conftest import ADMIN, PERIOD, World, build

D = Decimal
DAYS = PERIOD.days()[:4]
EXAMPLES = {"sqlite": 30, "postgres": 10}

day_index = st.integers(0, len(DAYS) - 1)
any_time = st.one_of(
    st.tuples(st.just("calls"), day_index, st.integers(1, 4)),
    st.tuples(st.just("push"), day_index),
    st.tuples(st.just("push_again"), day_index),
    st.tuples(st.just("rate"), st.sampled_from(["0.01", "0.0125", "0.02"]), day_index),
    st.tuples(st.just("rename"), st.sampled_from(["Acme Two", "Zed"])),
)
after_issue = st.one_of(
    any_time,
    st.tuples(st.just("credit"), st.sampled_from(["0.01", "0.50"])),
    st.tuples(st.just("pay")),
)
# Commands, then Stripe issues the invoice (at the contracted price or a wrong
# one), then more commands: late calls, corrections, credits, payment.
commands = st.tuples(
    st.lists(any_time, max_size=8),
    st.tuples(st.just("issue"), st.sampled_from([None, "0.02"])),
    st.lists(after_issue, max_size=6),
).map(lambda t: [*t[0], t[1], *t[2]])


class Invoicing:
    def __init__(self, world: World) -> None:
        self.world = world
        self.snap: Any = None

    def apply(self, command: tuple[Any, ...]) -> None:
        w = self.world
        match command:
            case ("calls", i, n):
                w.calls(DAYS[i], n)
            case ("push", i):
                w.push(DAYS[i])
            case ("push_again", i):
                usage = w.ledger.usage(w.entity_id, DAYS[i])
                if usage is not None and usage.calls:
                    w.push(DAYS[i], quantity=usage.calls)
            case ("rate", price, i):
                w.ledger.set_rate(w.entity_id, D(price), "usd", DAYS[i], "revised", ADMIN)
            case ("issue", price):
                if self.snap is None:
                    lines = w.stripe_lines(unit_price=None if price is None else D(price))
                    self.snap = w.issue(lines=lines)
            case ("credit", amount):
                if self.snap is not None:
                    self.snap = w.credit(self.snap, D(amount), "goodwill")
            case ("pay",):
                if self.snap is not None:
                    self.snap = w.observe(
                        self.snap,
                        status="paid",
                        amount_paid=self.snap.totals.total,
                        paid_at=w.clock.now,
                    )
            case ("rename", name):
                w.ledger.rename_entity(w.entity_id, name, ADMIN)


def state(aggregate: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


def copy_cut_log(source: Ledger, target: Ledger, at: Any) -> set[Any]:
    """Every stored event of `source` recorded at or before `at`, as stored, into
    `target`'s log; the ids of the aggregates copied."""
    notes = source.recorder.select_notifications(start=None, limit=1_000_000)
    cut = [n for n in notes if source.mapper.to_domain_event(n).timestamp <= at]
    if cut:
        target.recorder.insert_events(
            [StoredEvent(n.originator_id, n.originator_version, n.topic, n.state) for n in cut]
        )
    return {n.originator_id for n in cut}


def missing() -> LedgerError:
    return NotFound("gone")


def test_as_of_t_equals_a_replay_of_the_log_cut_at_t(fresh_ledgers: Any) -> None:
    @settings(
        max_examples=EXAMPLES[fresh_ledgers.backend],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(commands, st.data())
    def check(sequence: list[tuple[Any, ...]], data: st.DataObject) -> None:
        with fresh_ledgers() as (ledger, clock, _raw), fresh_ledgers() as (replayed, _c, _r):
            world = build(ledger, clock)
            invoicing = Invoicing(world)
            clock.set(clock.now.replace(year=2026, month=1, day=20))
            times = [clock.now]
            for command in sequence:
                clock.advance(seconds=data.draw(st.sampled_from([1, 60, 86400])))
                with contextlib.suppress(LedgerError):
                    invoicing.apply(command)
                times.append(clock.now)
            # Mostly after the invoice exists (the interesting half), sometimes before.
            issued = next(i for i, c in enumerate(sequence, start=1) if c[0] == "issue")
            pool = times[issued:] if data.draw(st.integers(0, 3)) else times
            at = data.draw(st.sampled_from(pool)) + data.draw(
                st.sampled_from([timedelta(0), timedelta(milliseconds=500)])
            )
            copied = copy_cut_log(ledger, replayed, at)

            every = {n.originator_id for n in ledger.recorder.select_notifications(None, 10**6)}
            for aggregate_id in every:
                if aggregate_id not in copied:
                    try:
                        ledger.as_recorded(Aggregate, aggregate_id, at, missing)
                    except NotRecordedYet:
                        continue
                    raise AssertionError(f"{aggregate_id} has state at {at} but no cut event")
                expected = state(replayed.repository.get(aggregate_id))
                assert state(ledger.as_recorded(Aggregate, aggregate_id, at, missing)) == expected
                # Folded once to T and on to the end: the cut at T is a copy that
                # folding the later events leaves alone.
                events = list(ledger.events.get(aggregate_id))
                at_t, at_end = fold_at(events, [at, at + timedelta(days=3650)])
                assert state(at_t) == expected
                assert state(at_end) == state(ledger.repository.get(aggregate_id))

            if Invoice.create_id("in_1") not in copied:
                # Issued after T: the ledger knew nothing of it then, the cut log never.
                with pytest.raises(NotRecordedYet):
                    explain(ledger, "in_1", as_of=at)
                with pytest.raises(UnknownInvoice):
                    explain(replayed, "in_1", as_of=at)
                return
            live = explain(ledger, "in_1", as_of=at)
            assert explain(replayed, "in_1", as_of=at) == live

    check()


def test_fold_at_gives_none_before_the_first_event_and_each_cut_after(world: World) -> None:
    day = date(2026, 1, 2)
    world.calls(day, 3)
    first = world.clock.now
    world.clock.advance(seconds=10)
    world.calls(day, 2)
    second = world.clock.now
    from ledger.usage.domain import Usage

    events = list(world.ledger.events.get(Usage.create_id("acme", day)))
    before, at_first, between, at_second = fold_at(
        events, [first - timedelta(seconds=1), first, second - timedelta(seconds=1), second]
    )
    assert before is None
    assert (at_first.calls, between.calls, at_second.calls) == (3, 3, 5)
    # Each cut is its own copy: folding further did not change the earlier ones.
    assert at_first is not at_second
