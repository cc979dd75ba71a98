"""Property: for random sequences of invoice and entity events, saved in random
groups and projected in random page sizes, every invoice row equals the invoice
aggregate the ledger folds from the same events, and the status history equals a
direct fold of the events' effective days."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.entities.domain import BillableEntity
from ledger.errors import LedgerError
from ledger.invoices.domain import Invoice, Totals
from ledger.sources import Source
from ledger.values import Line, Period
from projections.invoice_history import invoice_status_history
from projections.invoices import InvoiceQuery, list_invoices
from projections.runner import Runner

SRC = Source("admin", "prop")
T0 = datetime(2026, 1, 1, tzinfo=UTC)

op = st.one_of(
    st.tuples(st.just("issue"), st.integers(0, 1), st.integers(0, 40)),
    st.tuples(st.just("pay"), st.integers(0, 1), st.integers(0, 60)),
    st.tuples(st.just("past_due"), st.integers(0, 1), st.integers(0, 60)),
    st.tuples(st.just("void"), st.integers(0, 1), st.integers(0, 60)),
    st.tuples(st.just("uncollectible"), st.integers(0, 1), st.integers(0, 60)),
    st.tuples(st.just("fail"), st.integers(0, 1), st.integers(1, 4)),
    st.tuples(st.just("credit"), st.integers(0, 1), st.integers(1, 500)),
    st.tuples(st.just("void_credit"), st.integers(0, 1), st.integers(0, 0)),
    st.tuples(st.just("revise"), st.integers(0, 1), st.integers(1, 9999)),
    st.tuples(st.just("rename"), st.integers(0, 1), st.integers(0, 99)),
    st.tuples(st.just("save"), st.integers(0, 0), st.integers(0, 0)),
)


_NEEDS_ISSUE = {"pay", "past_due", "void", "uncollectible", "fail", "credit"}


def _totals(cents: int) -> tuple[list[Line], Totals]:
    amount = Decimal(cents).scaleb(-2)
    return (
        [Line("il_1", "usage", "Calls", Decimal(1), amount, amount)],
        Totals(amount, Decimal(0), amount),
    )


def _apply(inv: Invoice, entity: BillableEntity, name: str, arg: int, at: datetime) -> None:
    day = date(2026, 1, 1) + timedelta(days=arg)
    moment = T0 + timedelta(days=arg)
    if name in _NEEDS_ISSUE and inv.number is None:
        # Most steps need an issued invoice: issue it first, so random sequences
        # reach every status instead of being refused at the draft.
        _apply(inv, entity, "issue", arg // 2, at)
    if name == "issue":
        lines, totals = _totals(inv.total.scaleb(2).__int__())
        inv.issue(f"N-{inv.stripe_id}", day, day + timedelta(days=10), lines, totals, SRC, at)
    elif name == "pay":
        inv.pay(inv.total, moment, "r-1", None, SRC, at)
    elif name == "past_due":
        inv.mark_past_due(day, SRC, at)
    elif name == "void":
        inv.void(moment, "void", SRC, at)
    elif name == "uncollectible":
        inv.mark_uncollectible(moment, "gone", SRC, at)
    elif name == "fail":
        inv.fail_payment(arg, None, "declined", SRC, at)
    elif name == "credit":
        inv.issue_credit_note(
            f"cn_{len(inv.credit_notes)}", "CN", Decimal(arg).scaleb(-2), "r", "", [], SRC, at
        )
    elif name == "void_credit" and inv.credit_notes:
        inv.void_credit_note(sorted(inv.credit_notes)[0], SRC, at)
    elif name == "revise":
        lines, totals = _totals(arg)
        inv.revise_lines(lines, totals, SRC, at)


def expected_history(app: Any, stripe_id: str) -> list[tuple[str, date, date | None]]:
    """A direct fold of the invoice's events into (status, from, to) spans."""
    spans: list[list[Any]] = []
    for e in app.events.get(Invoice.create_id(stripe_id)):
        start: tuple[str, date] | None = {
            Invoice.Drafted: lambda e: ("draft", min(e.timestamp.date(), e.period.end)),
            Invoice.Issued: lambda e: ("open", e.issue_date),
            Invoice.Paid: lambda e: ("paid", e.paid_at.date()),
            Invoice.BecamePastDue: lambda e: ("past_due", e.on),
            Invoice.Voided: lambda e: ("void", e.voided_at.date()),
            Invoice.MarkedUncollectible: lambda e: ("uncollectible", e.marked_at.date()),
        }.get(type(e), lambda e: None)(e)
        if start is None:
            continue
        status, day = start
        if spans:
            day = max(day, spans[-1][1])
            spans[-1][2] = day
        spans.append([status, day, None])
    return [(s, f, t) for s, f, t in spans]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """A factory of empty databases, one per hypothesis example: a SQLite file, or a
    new schema in the test run's PostgreSQL database."""
    made: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if request.param == "sqlite":

            def sqlite_url() -> str:
                made.append(f"sqlite:///{Path(tmp) / f'p{len(made)}.db'}")
                return made[-1]

            yield sqlite_url
            return
        base = request.getfixturevalue("pg_database")

        def pg_url() -> str:
            schema = f"p_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            made.append(schema)
            return f"{base}?schema={schema}"

        try:
            yield pg_url
        finally:
            with psycopg.connect(base, autocommit=True) as conn:
                for schema in made:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(op, max_size=40), page=st.integers(1, 30), seed_cents=st.integers(1, 99999))
def test_invoice_rows_equal_the_aggregates_folded_from_the_same_events(
    fresh_url: Callable[[], str], ops: list[tuple[str, int, int]], page: int, seed_cents: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings_ = Settings.from_env(
            {
                "BILLTRAIL_DATABASE_URL": fresh_url(),
                "BILLTRAIL_SEAL_KEY": "k" * 40,
                "BILLTRAIL_VAR_DIR": tmp,
            }
        )
        app = bootstrap.ledger(settings_, clock=lambda: T0)
        try:
            run(app, ops, page, seed_cents)
        finally:
            app.close()


def run(app: Any, ops: list[tuple[str, int, int]], page: int, seed_cents: int) -> None:
    at = T0
    entities = [
        app.register_entity(f"Entity {n}", "company", SRC, entity_id=f"e{n}") for n in range(2)
    ]
    entities = [app.entity(f"e{n}") for n in range(2)]
    invoices = []
    for n in range(4):
        lines, totals = _totals(seed_cents + n)
        invoices.append(
            Invoice.draft(
                f"in_{n}",
                f"e{n % 2}",
                "usd",
                Period(date(2026, 1, 1), date(2026, 2, 1)),
                lines,
                totals,
                SRC,
                at + timedelta(minutes=n),
            )
        )
    pending: set[int] = set(range(4))
    renamed: set[int] = set()
    for step, (name, target, arg) in enumerate(ops):
        at = T0 + timedelta(hours=step + 1)
        if name == "save":
            app.save(*[invoices[i] for i in sorted(pending)], *[entities[i] for i in renamed])
            pending, renamed = set(), set()
        elif name == "rename":
            entities[target].rename(f"Entity {target} v{arg}", SRC, at)
            renamed.add(target)
        else:
            # The domain may refuse the step (an issue made before it still counts).
            with contextlib.suppress(LedgerError):
                _apply(
                    invoices[target], entities[invoices[target].entity_id == "e1"], name, arg, at
                )
            pending.add(target)
    app.save(*[invoices[i] for i in sorted(pending)], *[entities[i] for i in renamed])

    runner = Runner(app, page=page)
    runner.catch_up()
    rows = {r.stripe_id: r for r in list_invoices(runner.store, InvoiceQuery(), limit=100).rows}
    assert set(rows) == {f"in_{n}" for n in range(4)}
    for n in range(4):
        inv = app.invoice(f"in_{n}")
        entity = app.entity(inv.entity_id)
        row = rows[inv.stripe_id]
        assert (row.status, row.number, row.issue_date, row.due_date, row.total, row.currency) == (
            inv.status.value,
            inv.number,
            inv.issue_date,
            inv.due_date,
            inv.total,
            inv.currency,
        )
        assert row.entity_name == entity.name
        history = [
            (s.status, s.valid_from, s.valid_to)
            for s in invoice_status_history(runner.store, inv.stripe_id)
        ]
        assert history == expected_history(app, inv.stripe_id)
