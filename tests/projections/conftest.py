"""Fixtures for the projections' tests.

- `ledger`: a Ledger on `database_url` (both backends) with a clock that moves one
  minute per read, so recorded times are exact and no test sleeps.
- `runner`: the projections' Runner on that ledger, not attached (tests catch up
  explicitly, or attach it).
- `world`: fills the ledger through its commands with entities, rates, invoices in
  every status, calls and usage reports.
- `dump`: every read-model row of every projection, for comparing two states.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.invoices.application import CreditNoteSnapshot, InvoiceSnapshot
from ledger.invoices.domain import Totals
from ledger.sources import Source
from ledger.usage.application import CallRow
from ledger.values import Line, Period
from projections.runner import Runner
from projections.testing import dump_tables

SEAL_KEY = "seal-key-for-tests-only-0123456789abcdef"
START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
ADMIN = Source("admin", "alice", actor="alice@example.com")


class TickingClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def make_ledger(database_url: str, var_dir: Path) -> Ledger:
    settings = Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": database_url,
            "BILLTRAIL_SEAL_KEY": SEAL_KEY,
            "BILLTRAIL_VAR_DIR": str(var_dir),
        }
    )
    return bootstrap.ledger(settings, clock=TickingClock())


@pytest.fixture
def ledger(database_url: str, tmp_path: Path) -> Iterator[Ledger]:
    app = make_ledger(database_url, tmp_path / "var")
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def runner(ledger: Ledger) -> Runner:
    return Runner(ledger)


def snapshot(
    n: int, entity_id: str, status: str, total: str = "12.34", **kwargs: Any
) -> InvoiceSnapshot:
    amount = Decimal(total)
    issued = status != "draft"
    day = date(2026, 2, 1) + timedelta(days=n % 20)
    return InvoiceSnapshot(
        stripe_id=f"in_{entity_id}_{n}",
        entity_id=entity_id,
        currency="usd" if n % 3 else "eur",
        period=Period(date(2026, 1, 1), date(2026, 2, 1)),
        status=status,
        lines=[
            Line(f"il_{n}_1", "usage", "Calls", Decimal(n), Decimal("0.01"), amount),
        ],
        totals=Totals(amount, Decimal(0), amount),
        number=f"{entity_id.upper()}-{n:04d}" if issued else None,
        issue_date=day if issued else None,
        due_date=day + timedelta(days=14) if issued else None,
        **kwargs,
    )


def build_world(app: Ledger) -> None:
    """A small ledger with every kind of event the projections read."""
    for entity_id, name in (("acme", "Acme Corp"), ("globex", "Globex"), ("initech", "Initech")):
        app.register_entity(name, "company", ADMIN, entity_id=entity_id, emails=["b@x.example"])
        app.set_rate(entity_id, Decimal("0.012"), "usd", date(2026, 1, 1), "contract", ADMIN)
    app.set_rate("acme", Decimal("0.010"), "usd", date(2026, 1, 15), "discount", ADMIN)
    app.add_fixed_fee(
        "acme", "fee_min", "monthly_minimum", "Minimum", Decimal(50), date(2026, 1, 1), ADMIN
    )
    app.change_notification_preferences("globex", {"receipt": "none"}, ADMIN)
    stripe = Source("stripe_event", "evt_1")
    for n in range(1, 13):
        entity_id = ("acme", "globex", "initech")[n % 3]
        total = f"{n * 7}.{n:02d}"
        app.observe_invoice(snapshot(n, entity_id, "draft", total), Source("sync_run", f"s{n}"))
        if n % 6 == 0:
            continue  # stays a draft
        app.observe_invoice(snapshot(n, entity_id, "open", total), Source("sync_run", f"o{n}"))
        if n % 6 == 1:
            app.observe_invoice(
                snapshot(
                    n,
                    entity_id,
                    "paid",
                    total,
                    amount_paid=Decimal(total),
                    paid_at=datetime(2026, 2, 25, tzinfo=UTC),
                    credit_notes=[
                        CreditNoteSnapshot(f"cn_{n}", f"CN-{n}", Decimal("1.00"), "dispute", "")
                    ],
                ),
                Source("stripe_event", f"evt_p{n}"),
            )
        elif n % 6 == 2:
            app.mark_past_due(
                f"in_{entity_id}_{n}", date(2026, 3, 10), Source("scheduler_run", "sweep")
            )
        elif n % 6 == 3:
            app.observe_invoice(
                snapshot(n, entity_id, "void", total, voided_at=datetime(2026, 2, 20, tzinfo=UTC)),
                stripe,
            )
        elif n % 6 == 4:
            app.observe_invoice(
                snapshot(
                    n,
                    entity_id,
                    "uncollectible",
                    total,
                    attempt_count=2,
                    last_failure="card declined",
                    marked_uncollectible_at=datetime(2026, 3, 1, tzinfo=UTC),
                ),
                Source("stripe_event", f"evt_u{n}"),
            )
    app.rename_entity("globex", "Globex International", ADMIN)
    rows = [
        CallRow(i, f"call-{i}", ("acme", "globex")[i % 2], START + timedelta(hours=i * 5), 30 + i)
        for i in range(1, 40)
    ]
    app.record_calls(rows, Source("import_file", "calls-1.csv"))
    app.record_calls(rows[:5], Source("import_file", "calls-2.csv"))  # duplicates
    app.report_usage(
        "acme", date(2026, 1, 1), 3, "acme-2026-01-01", START, Source("scheduler_run", "push")
    )


@pytest.fixture
def world(ledger: Ledger) -> Callable[[], None]:
    return lambda: build_world(ledger)


Dump = Callable[[Runner], dict[str, list[tuple[Any, ...]]]]


@pytest.fixture
def dump() -> Dump:
    return dump_tables
