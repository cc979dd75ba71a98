"""Invoices to sweep: `issue(stripe_id, entity, due)` records an open invoice through
`observe_invoice`, as the Stripe adapter would; `acme`, `hooked` and `quiet` are
entities told of past-due invoices by email, by webhook and not at all;
`another_ledger()` is a second Ledger on the same database (another process's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.invoices.application import InvoiceSnapshot
from ledger.invoices.domain import Totals
from ledger.sources import Source
from ledger.values import Line, Period

D = Decimal
ADMIN = Source("admin", "admin-1", actor="alice@example.com")
PERIOD = Period(date(2026, 1, 1), date(2026, 2, 1))
LINES = [Line("il_1", "fee", "Monthly minimum", D("1"), D("50.00"), D("50.00"))]
TOTALS = Totals(subtotal=D("50.00"), tax=D("10.00"), total=D("60.00"))

Issue = Callable[..., str]


@pytest.fixture
def issue(ledger: Ledger) -> Issue:
    count = [0]

    def issue(stripe_id: str, entity_id: str, due: date | None, status: str = "open") -> str:
        count[0] += 1
        ledger.observe_invoice(
            InvoiceSnapshot(
                stripe_id=stripe_id,
                entity_id=entity_id,
                currency="eur",
                period=PERIOD,
                status=status,
                lines=LINES,
                totals=TOTALS,
                number=f"{entity_id.upper()}-{count[0]:04d}",
                issue_date=(due - timedelta(days=14)) if due else date(2026, 2, 1),
                due_date=due,
                amount_paid=D("60.00") if status == "paid" else D(0),
            ),
            Source("stripe_event", f"evt_{stripe_id}_{status}"),
        )
        return stripe_id

    return issue


@pytest.fixture
def acme(ledger: Ledger) -> str:
    ledger.register_entity("Acme", "company", ADMIN, emails=["billing@acme.test", "cfo@acme.test"])
    return "acme"


@pytest.fixture
def hooked(ledger: Ledger) -> str:
    ledger.register_entity("Hooked", "organization", ADMIN, emails=["ops@hooked.test"])
    ledger.change_notification_preferences(
        "hooked", {"invoice_past_due": "webhook"}, ADMIN, webhook_url="https://hooked.test/hook"
    )
    return "hooked"


@pytest.fixture
def quiet(ledger: Ledger) -> str:
    ledger.register_entity("Quiet", "company", ADMIN, emails=["q@quiet.test"])
    ledger.change_notification_preferences("quiet", {"invoice_past_due": "none"}, ADMIN)
    return "quiet"


@pytest.fixture
def another_ledger(database_url: str, tmp_path: Path) -> Iterator[Callable[[], Ledger]]:
    made: list[Ledger] = []

    def make() -> Ledger:
        settings = Settings.from_env(
            {
                "BILLTRAIL_DATABASE_URL": database_url,
                "BILLTRAIL_SEAL_KEY": "seal-key-for-tests-only-0123456789abcdef",
                "BILLTRAIL_VAR_DIR": str(tmp_path / "var"),
            }
        )
        app = bootstrap.ledger(settings, clock=lambda: datetime(2026, 2, 20, 9, tzinfo=UTC))
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()
