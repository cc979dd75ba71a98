"""The invoice list the portal and the CLI read: filters, text search, sort, keyset
pages, count, and the list as it stood on a past date against the status history."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal

import pytest

from ledger.app import Ledger
from projections.calls import calls_of
from projections.entities import get_entity, list_entities
from projections.invoice_history import invoice_status_history, status_on
from projections.invoice_lines import invoice_lines
from projections.invoices import (
    STATUSES,
    InvalidQuery,
    InvoiceQuery,
    InvoiceRow,
    count_invoices,
    find_invoice,
    list_invoices,
)
from projections.notifications import list_notifications
from projections.rates import rate_of
from projections.runner import Runner
from projections.usage import usage_for_period


@pytest.fixture
def caught_up(runner: Runner, world: Callable[[], None]) -> Runner:
    world()
    runner.catch_up()
    return runner


def all_pages(runner: Runner, query: InvoiceQuery, limit: int) -> list[InvoiceRow]:
    rows: list[InvoiceRow] = []
    after = None
    while True:
        page = list_invoices(runner.store, query, limit=limit, after=after)
        rows += page.rows
        if page.next_cursor is None:
            return rows
        after = page.next_cursor


def every_invoice(runner: Runner) -> list[InvoiceRow]:
    return list_invoices(runner.store, limit=1000).rows


def test_keyset_pages_walk_the_whole_list_in_order_without_repeats(caught_up: Runner) -> None:
    for sort in ("date", "total"):
        for descending in (True, False):
            query = InvoiceQuery(sort=sort, descending=descending)
            whole = list_invoices(caught_up.store, query, limit=1000).rows
            assert len(whole) == count_invoices(caught_up.store, query) == 12
            for limit in (1, 5):
                assert all_pages(caught_up, query, limit) == whole
            if sort == "date":
                issued = [r.issue_date for r in whole if r.issue_date is not None]
                assert issued == sorted(issued, reverse=descending)


def test_sort_by_total_is_numeric_not_textual(caught_up: Runner) -> None:
    totals = [r.total for r in list_invoices(caught_up.store, InvoiceQuery(sort="total")).rows]
    assert totals == sorted(totals, reverse=True)
    assert Decimal("84.12") in totals
    assert Decimal("7.01") in totals


def test_filters_select_exactly_the_matching_invoices(caught_up: Runner) -> None:
    everything = every_invoice(caught_up)
    cases: list[tuple[InvoiceQuery, Callable[[InvoiceRow], bool]]] = [
        (InvoiceQuery(entity_id="acme"), lambda r: r.entity_id == "acme"),
        (InvoiceQuery(status="past_due"), lambda r: r.status == "past_due"),
        (
            InvoiceQuery(issued_from=date(2026, 2, 5), issued_to=date(2026, 2, 9)),
            lambda r: (
                r.issue_date is not None and date(2026, 2, 5) <= r.issue_date <= date(2026, 2, 9)
            ),
        ),
        (
            InvoiceQuery(total_min=Decimal("21.03"), total_max=Decimal("56.08")),
            lambda r: Decimal("21.03") <= r.total <= Decimal("56.08"),
        ),
        (
            InvoiceQuery(entity_id="globex", status="paid", total_min=Decimal(1)),
            lambda r: r.entity_id == "globex" and r.status == "paid",
        ),
        (InvoiceQuery(search="ACME-00"), lambda r: (r.number or "").startswith("ACME-00")),
        (InvoiceQuery(search="internat"), lambda r: r.entity_name == "Globex International"),
        (InvoiceQuery(search="ex"), lambda r: "ex" in r.entity_name.lower()),
    ]
    for query, expected in cases:
        found = all_pages(caught_up, query, 2)
        assert found == [r for r in everything if expected(r)], query
        assert count_invoices(caught_up.store, query) == len(found)
    assert {r.status for r in everything} == set(STATUSES)


def test_entity_rename_reaches_every_invoice_row_and_search(caught_up: Runner) -> None:
    names = {r.entity_name for r in every_invoice(caught_up) if r.entity_id == "globex"}
    assert names == {"Globex International"}
    assert list_invoices(caught_up.store, InvoiceQuery(search="Globex Int")).rows


def test_bad_queries_are_refused_with_a_reason(caught_up: Runner) -> None:
    with pytest.raises(InvalidQuery, match="status"):
        InvoiceQuery(status="overdue")
    with pytest.raises(InvalidQuery, match="sort"):
        InvoiceQuery(sort="name")
    first = list_invoices(caught_up.store, limit=2)
    assert first.next_cursor is not None
    with pytest.raises(InvalidQuery, match="cursor"):
        list_invoices(caught_up.store, InvoiceQuery(sort="total"), after=first.next_cursor)
    with pytest.raises(InvalidQuery, match="cursor"):
        list_invoices(caught_up.store, after="garbage")


def test_the_list_as_of_a_past_date_matches_each_invoice_history(caught_up: Runner) -> None:
    invoices = every_invoice(caught_up)
    day = date(2026, 1, 1)
    while day <= date(2026, 3, 15):
        as_of = {r.stripe_id: r.status for r in all_pages(caught_up, InvoiceQuery(as_of=day), 5)}
        # Invoices issued by then (drafts: drafted), with the status they had.
        expected = {
            r.stripe_id: status
            for r in invoices
            if (status := status_on(caught_up.store, r.stripe_id, day)) is not None
            and (r.issue_date is None or r.issue_date <= day)
        }
        assert as_of == expected, day
        for status in ("open", "past_due"):
            query = InvoiceQuery(as_of=day, status=status)
            assert count_invoices(caught_up.store, query) == sum(
                1 for s in expected.values() if s == status
            )
        day += timedelta(days=3)


def test_status_history_has_contiguous_valid_time_ranges(caught_up: Runner) -> None:
    for row in every_invoice(caught_up):
        spans = invoice_status_history(caught_up.store, row.stripe_id)
        assert spans[0].status == "draft"
        assert spans[-1].status == row.status
        assert spans[-1].valid_to is None
        for a, b in itertools.pairwise(spans):
            assert a.valid_to == b.valid_from
    past_due = invoice_status_history(caught_up.store, "in_initech_2")
    assert [(s.status, s.valid_from) for s in past_due][1:] == [
        ("open", date(2026, 2, 3)),
        ("past_due", date(2026, 3, 10)),
    ]


def test_the_other_read_models_answer_the_portal_queries(caught_up: Runner, ledger: Ledger) -> None:
    store = caught_up.store
    assert [e.entity_id for e in list_entities(store)] == ["acme", "globex", "initech"]
    globex = get_entity(store, "globex")
    assert globex is not None
    assert globex.name == "Globex International"
    assert globex.preferences["receipt"] == "none"
    rate = rate_of(store, "acme")
    assert rate is not None
    assert [(v.version, v.unit_price) for v in rate.versions] == [
        (1, Decimal("0.012")),
        (2, Decimal("0.010")),
    ]
    usage = usage_for_period(store, "acme", date(2026, 1, 1), date(2026, 2, 1))
    calls = calls_of(store, "acme", date(2026, 1, 1), date(2026, 2, 1), limit=7)
    everything = []
    after = None
    while True:
        page = calls_of(store, "acme", date(2026, 1, 1), date(2026, 2, 1), limit=7, after=after)
        everything += page.rows
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert usage.calls == len(everything) == 19
    assert usage.duplicates == 2
    assert usage.reported_quantity == 3
    assert usage.duration_seconds == sum(c.duration_seconds for c in everything)
    assert [c.started_at for c in everything] == sorted(c.started_at for c in everything)
    assert len(calls.rows) == 7
    invoice = find_invoice(store, "ACME-0003")
    assert invoice is not None
    assert invoice.stripe_id == "in_acme_3"
    assert [line.amount for line in invoice_lines(store, "in_acme_3")] == [Decimal("21.03")]
    notes = list_notifications(store, entity_id="globex")
    assert {(n.topic, n.channel) for n in notes if n.audience == "customer"} >= {
        ("receipt", "none"),
        ("invoice_issued", "email"),
    }
    assert ("invoice_past_due", "portal") in {
        (n.topic, n.channel) for n in list_notifications(store)
    }


def test_filters_give_the_same_pages_whichever_way_the_list_is_planned(
    caught_up: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import projections.invoices as invoices

    queries = [
        InvoiceQuery(total_min=Decimal("10"), total_max=Decimal("60")),
        InvoiceQuery(status="paid", total_min=Decimal("1")),
        InvoiceQuery(search="globex"),
        InvoiceQuery(search="ACME-000", status="void"),
        InvoiceQuery(search="nitec", total_max=Decimal("50")),
    ]
    driven = [all_pages(caught_up, q, 2) for q in queries]
    assert all(driven)
    # Every filter now counts as wide: applied while scanning the date order.
    monkeypatch.setattr(invoices, "PROBE", 1)
    assert [all_pages(caught_up, q, 2) for q in queries] == driven
    if caught_up.store.backend == "sqlite":
        plan = "\n".join(invoices.list_plan(caught_up.store, queries[0]))
        # The date order's index is read in order; only the page's rows are sorted.
        assert "proj_invoices_i0" in plan
        assert plan.count("TEMP B-TREE") == 1
