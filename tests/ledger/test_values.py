"""Small values stored inside events: periods, invoice lines, natural ids, and their
transcodings (a stored event must decode to the same values)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.app import Ledger
from ledger.invoices.application import CreditNoteSnapshot, InvoiceSnapshot
from ledger.invoices.domain import Invoice, Totals
from ledger.sources import Source
from ledger.values import InvalidLine, InvalidPeriod, Line, Period, natural_id

ADMIN = Source("admin", "admin-1", actor="alice@example.com")


@given(
    start=st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
    length=st.integers(min_value=1, max_value=400),
)
def test_a_period_holds_its_start_and_not_its_end(start: date, length: int) -> None:
    end = start + timedelta(days=length)
    period = Period(start, end)
    days = period.days()
    assert len(days) == length
    assert days[0] == start
    assert days[-1] == end - timedelta(days=1)
    assert start in period
    assert end not in period
    assert start - timedelta(days=1) not in period
    assert str(period) == f"{start} to {end - timedelta(days=1)}"


@pytest.mark.parametrize("length", [0, -1])
def test_an_empty_or_backwards_period_is_refused(length: int) -> None:
    start = date(2026, 1, 1)
    with pytest.raises(InvalidPeriod, match="is not after its start"):
        Period(start, start + timedelta(days=length))


def test_a_line_kind_must_be_known() -> None:
    Line("il_1", "usage", "Calls", Decimal(1), None, Decimal(1))
    with pytest.raises(InvalidLine, match="usage, fee, adjustment or tax"):
        Line("il_1", "discount", "Calls", Decimal(1), None, Decimal(1))


def test_a_line_amount_must_be_a_finite_decimal() -> None:
    with pytest.raises(InvalidLine, match="amount"):
        Line("il_1", "fee", "Fee", Decimal(1), None, 1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidLine, match="quantity"):
        Line("il_1", "fee", "Fee", Decimal("NaN"), None, Decimal(1))


def test_natural_ids_are_deterministic_and_distinct_per_kind() -> None:
    assert natural_id("invoice", "in_1") == natural_id("invoice", "in_1")
    assert natural_id("invoice", "in_1") != natural_id("rate", "in_1")
    assert natural_id("usage", "acme", "2026-01-01") != natural_id("usage", "acme", "2026-01-02")


def test_every_value_in_an_invoice_survives_storage(ledger: Ledger) -> None:
    """Dates, periods, lines with sub-cent unit amounts, Decimal totals, datetimes and
    the source come back from the database equal, on both backends."""
    ledger.register_entity("Acme", "company", ADMIN)
    period = Period(date(2026, 1, 1), date(2026, 2, 1))
    lines = [
        Line(
            "il_1",
            "usage",
            "Calls",
            Decimal("1234"),
            Decimal("0.0125"),
            Decimal("15.43"),
            "price_1",
            period,
        ),
        Line("il_2", "tax", "VAT", Decimal("1"), None, Decimal("3.09")),
    ]
    paid_at = datetime(2026, 2, 3, 4, 5, 6, 789, tzinfo=UTC)
    source = Source("stripe_event", "evt_1", actor="stripe")
    ledger.observe_invoice(
        InvoiceSnapshot(
            stripe_id="in_1",
            entity_id="acme",
            currency="eur",
            period=period,
            status="paid",
            lines=lines,
            totals=Totals(Decimal("15.43"), Decimal("3.09"), Decimal("18.52")),
            number="A-1",
            issue_date=date(2026, 2, 1),
            due_date=date(2026, 2, 15),
            amount_paid=Decimal("18.52"),
            paid_at=paid_at,
            credit_notes=[
                CreditNoteSnapshot("cn_1", "CN-1", Decimal("0.01"), "r", "m", evidence=("a",))
            ],
        ),
        source,
    )
    # Read the events back from the database, not from any cache.
    events = ledger.history(Invoice.create_id("in_1"))
    drafted, issued = events[0], events[1]
    assert drafted.period == period
    assert drafted.lines == lines
    assert isinstance(drafted.lines[0].quantity, Decimal)
    assert drafted.lines[0].unit_amount == Decimal("0.0125")
    assert (issued.issue_date, issued.due_date) == (date(2026, 2, 1), date(2026, 2, 15))
    assert issued.total == Decimal("18.52")
    paid = events[-1]
    assert (paid.paid_at, paid.amount_paid) == (paid_at, Decimal("18.52"))
    assert all(e.source == source for e in events)
    replayed = ledger.invoice_as_recorded("in_1", ledger.clock())
    assert replayed.lines == lines
    assert replayed.credit_notes["cn_1"].evidence == ("a",)
