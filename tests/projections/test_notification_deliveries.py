"""The delivery state of queued notices in the notifications read model: for random
sequences of claims, failures, sends, give-ups and withdrawals, saved in random
groups, every row equals the Notification aggregate the ledger folds from the same
events, and a rebuild in any page size gives the same rows as the live fold."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.app import Ledger
from ledger.notifications.domain import (
    DEFAULT_RETRY,
    Audience,
    DeliveryStatus,
    Notice,
    Notification,
)
from ledger.sources import Source
from projections.notifications import list_deliveries
from projections.runner import Runner
from projections.testing import dump_tables

SRC = Source("scheduler_run", "deliveries")
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
_examples = itertools.count()

step = st.one_of(
    st.tuples(st.just("attempt"), st.integers(0, 2), st.integers(0, 600)),
    st.tuples(st.just("fail"), st.integers(0, 2), st.integers(0, 1)),
    st.tuples(st.just("send"), st.integers(0, 2), st.integers(0, 0)),
    st.tuples(st.just("give_up"), st.integers(0, 2), st.integers(0, 0)),
    st.tuples(st.just("withdraw"), st.integers(0, 2), st.integers(0, 0)),
    st.tuples(st.just("save"), st.integers(0, 0), st.integers(0, 0)),
)


def notice(stripe_id: str) -> Notice:
    return Notice(
        stripe_id=stripe_id,
        number=f"N-{stripe_id}",
        entity_id="acme",
        entity_name="Acme Corp",
        currency="usd",
        total=Decimal("12.50"),
        amount_due=Decimal("12.50"),
        due_date=date(2026, 2, 1),
        past_due_on=date(2026, 3, 1),
    )


def act(note: Notification, name: str, arg: int, at: datetime) -> None:
    # The aggregate refuses what its rules forbid (returns False); that is part of
    # the random walk, not an error.
    if name == "attempt":
        note.begin_attempt(SRC, at + timedelta(minutes=arg), DEFAULT_RETRY)
    elif name == "fail":
        note.fail(note.attempts, "451 try later", bool(arg), SRC, at, DEFAULT_RETRY)
    elif name == "send":
        note.succeed(note.attempts, "250 ok", SRC, at)
    elif name == "give_up":
        note.give_up("mailbox gone", SRC, at)
    elif name == "withdraw":
        note.withdraw("the invoice is Paid now", SRC, at)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(step, max_size=30), page=st.integers(1, 9))
def test_delivery_rows_equal_the_notices_folded_from_the_same_events(
    ledger: Ledger, steps: list[tuple[str, int, int]], page: int
) -> None:
    stripe_id = f"in_prop_{next(_examples)}"
    notes = [
        Notification.queue(
            notice(stripe_id),
            "past_due",
            "invoice_past_due",
            Audience.CUSTOMER,
            "email",
            f"r{n}@x.example",
            SRC,
            T0,
        )
        for n in range(3)
    ]
    pending = set(range(3))
    for n, (name, target, arg) in enumerate(steps):
        at = T0 + timedelta(hours=n + 1)
        if name == "save":
            ledger.save(*[notes[i] for i in sorted(pending)])
            pending = set()
        else:
            act(notes[target], name, arg, at)
            pending.add(target)
    ledger.save(*[notes[i] for i in sorted(pending)])

    live = Runner(ledger, page=page)
    live.catch_up()
    rows = {
        r.recipient: r
        for r in list_deliveries(live.store, limit=10_000).rows
        if r.invoice_stripe_id == stripe_id
    }
    assert set(rows) == {f"r{n}@x.example" for n in range(3)}
    for stored in (ledger.notification(n.id) for n in notes):
        row = rows[stored.recipient]
        assert (row.status, row.attempts, row.last_error, row.detail) == (
            stored.status.value,
            stored.attempts,
            stored.last_error,
            stored.detail,
        )
        assert (row.next_attempt_at, row.sent_at) == (stored.next_attempt_at, stored.sent_at)
        assert row.number == f"N-{stripe_id}"
    before = dump_tables(live)
    rebuilt = Runner(ledger, page=page + 3)
    rebuilt.rebuild(["notifications"])
    assert dump_tables(rebuilt) == before


def test_failed_filter_lists_only_the_notices_failing_or_given_up(ledger: Ledger) -> None:
    made = []
    for n, outcome in enumerate(("sent", "retrying", "gave_up", "queued")):
        note = Notification.queue(
            notice("in_filter"),
            "past_due",
            "invoice_past_due",
            Audience.ADMIN,
            "email",
            f"a{n}@x.example",
            SRC,
            T0,
        )
        if outcome != "queued":
            note.begin_attempt(SRC, T0 + timedelta(minutes=1), DEFAULT_RETRY)
        if outcome == "sent":
            note.succeed(1, "250 ok", SRC, T0 + timedelta(minutes=2))
        elif outcome in ("retrying", "gave_up"):
            note.fail(1, "550 no such user", outcome == "gave_up", SRC, T0, DEFAULT_RETRY)
        made.append(note)
    ledger.save(*made)
    runner = Runner(ledger)
    runner.catch_up()
    failed = list_deliveries(runner.store, failed=True).rows
    assert {r.status for r in failed} == {"retrying", "gave_up"}
    assert all(r.last_error == "550 no such user" for r in failed)
    sent = list_deliveries(runner.store, status=DeliveryStatus.SENT.value).rows
    assert [r.recipient for r in sent] == ["a0@x.example"]
    first = list_deliveries(runner.store, limit=3)
    assert len(first.rows) == 3
    assert first.next_cursor is not None
    rest = list_deliveries(runner.store, limit=3, before=first.next_cursor)
    assert [r.recipient for r in first.rows + rest.rows] == [
        f"a{n}@x.example" for n in reversed(range(4))
    ]
