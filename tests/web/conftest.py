"""Fixtures for the web app's tests.

- `settings`, `ledger`, `app`, `client` (alias `http`): the app from the factory on
  each backend, with its background threads stopped at the end. The ledger's clock
  ticks one minute per reading, so recorded times are exact without sleeping.
- `world`: a small billing world built through the ledger's commands (three
  entities, rates with a revision, a fixed fee, calls, invoices in every status)
  plus an admin and two customers (acme, globex) with API tokens; the read models
  are caught up before the fixture returns.
- `admin`, `acme`, `globex`: test clients logged in as those users; `login` logs a
  client in through the real form.
- `browser_page`: a Playwright page in Debian's headless Chromium on the app served
  on loopback (see `live_url`); screenshots go to var/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from adapters.stripe.testing import ROLLED_WEBHOOK_SECRET, WEBHOOK_SECRET, LoopbackServer
from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.invoices.application import CreditNoteSnapshot, InvoiceSnapshot
from ledger.invoices.domain import Totals
from ledger.notifications.application import Outcome
from ledger.notifications.domain import past_due_notifications
from ledger.sources import Source
from ledger.usage.application import CallRow
from ledger.values import Line, Period
from projections.runner import Runner
from web import create_app, shutdown

SEAL_KEY = "web-tests-seal-key-0123456789abcdef012345"
SECRET_KEY = "web-tests-secret-key-0123456789abcdef"
START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
ADMIN_EMAIL = "admin@billtrail.example"
ACME_EMAIL = "ap@acme.example"
GLOBEX_EMAIL = "billing@globex.example"
OPERATOR = Source("cli", "web-tests", actor="operator")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


class TickingClock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": database_url,
            "BILLTRAIL_SEAL_KEY": SEAL_KEY,
            "BILLTRAIL_SECRET_KEY": SECRET_KEY,
            "BILLTRAIL_VAR_DIR": str(tmp_path / "var"),
            "STRIPE_WEBHOOK_SECRET": f"{WEBHOOK_SECRET}, {ROLLED_WEBHOOK_SECRET}",
        }
    )


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest.fixture
def ledger(settings: Settings, clock: TickingClock) -> Iterator[Ledger]:
    app = bootstrap.ledger(settings, clock, projections=True)
    yield app
    app.close()


@pytest.fixture
def app(ledger: Ledger, settings: Settings, clock: TickingClock) -> Iterator[Flask]:
    made = create_app(ledger, None, settings, clock=clock)
    made.testing = True
    yield made
    shutdown(made)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def http(client: FlaskClient) -> FlaskClient:
    return client


# The world ------------------------------------------------------------------------


@dataclass
class World:
    """What `world` built, for tests to point at."""

    invoices: dict[str, str] = field(default_factory=dict)  # number -> entity id
    by_status: dict[str, list[str]] = field(default_factory=dict)  # status -> numbers
    stripe_ids: dict[str, str] = field(default_factory=dict)  # number -> Stripe id
    tokens: dict[str, str] = field(default_factory=dict)  # email -> API token

    def of(self, entity_id: str) -> list[str]:
        return [n for n, e in self.invoices.items() if e == entity_id]

    def one(self, entity_id: str, status: str) -> str:
        return next(n for n in self.by_status[status] if self.invoices[n] == entity_id)


RATES = {"acme": Decimal("0.012"), "globex": Decimal("0.020"), "initech": Decimal("0.015")}
# (entity, month, final status) of each invoice; numbers are ENTITY-000n in this order.
INVOICES = [
    ("acme", 1, "paid"),
    ("acme", 2, "past_due"),
    ("acme", 3, "open"),
    ("globex", 1, "void"),
    ("globex", 2, "uncollectible"),
    ("globex", 3, "open"),
    ("initech", 1, "paid"),
    ("initech", 2, "draft"),
]


def _month(month: int) -> Period:
    start = date(2026, month, 1)
    return Period(start, date(2026 + month // 12, month % 12 + 1, 1))


def invoice_snapshot(
    entity_id: str, n: int, month: int, status: str, calls: int, **kwargs: Any
) -> InvoiceSnapshot:
    rate = RATES[entity_id]
    usage = (rate * calls).quantize(Decimal("0.01"))
    lines = [
        Line(f"il_{entity_id}_{n}_u", "usage", "Calls handled", Decimal(calls), rate, usage),
        Line(
            f"il_{entity_id}_{n}_f",
            "fee",
            "Monthly platform fee",
            Decimal(1),
            Decimal(50),
            Decimal(50),
        ),
    ]
    subtotal = usage + Decimal(50)
    tax = (subtotal * Decimal("0.08")).quantize(Decimal("0.01"))
    lines.append(Line(f"il_{entity_id}_{n}_t", "tax", "Sales tax 8%", Decimal(1), tax, tax))
    issued = status != "draft"
    period = _month(month)
    return InvoiceSnapshot(
        stripe_id=f"in_{entity_id}_{n}",
        entity_id=entity_id,
        currency="usd",
        period=period,
        status=status,
        lines=lines,
        totals=Totals(subtotal, tax, subtotal + tax),
        number=f"{entity_id.upper()}-{n:04d}" if issued else None,
        issue_date=period.end if issued else None,
        due_date=period.end + timedelta(days=14) if issued else None,
        **kwargs,
    )


def build_world(ledger: Ledger) -> World:
    world = World()
    names = {"acme": "Acme Corp", "globex": "Globex Corporation", "initech": "Initech"}
    for entity_id, name in names.items():
        ledger.register_entity(
            name, "company", OPERATOR, entity_id=entity_id, emails=[f"billing@{entity_id}.example"]
        )
        ledger.set_rate(entity_id, RATES[entity_id], "usd", date(2026, 1, 1), "contract", OPERATOR)
    ledger.set_rate("acme", Decimal("0.010"), "usd", date(2026, 4, 1), "renewal", OPERATOR)
    ledger.add_fixed_fee(
        "acme",
        "fee_platform",
        "addon",
        "Monthly platform fee",
        Decimal(50),
        date(2026, 1, 1),
        OPERATOR,
    )
    calls = [
        CallRow(i, f"call-{entity_id}-{i}", entity_id, START + timedelta(hours=7 * i), 30 + i % 90)
        for entity_id in ("acme", "globex")
        for i in range(1, 61)
    ]
    ledger.record_calls(calls, Source("import_file", "web-tests-calls.csv"))
    counters: dict[str, int] = {}
    for entity_id, month, final in INVOICES:
        n = counters[entity_id] = counters.get(entity_id, 0) + 1

        def snap(status: str, e: str = entity_id, n: int = n, m: int = month, **kw: Any) -> Any:
            return invoice_snapshot(e, n, m, status, 20 * n + 5, **kw)

        sync = Source("sync_run", f"web-{entity_id}-{n}")
        ledger.observe_invoice(snap("draft"), sync)
        number = f"{entity_id.upper()}-{n:04d}"
        if final != "draft":
            ledger.observe_invoice(snap("open"), Source("stripe_event", f"evt_{entity_id}_{n}_f"))
        if final == "paid":
            first = snap("open")
            ledger.observe_invoice(
                snap(
                    "paid",
                    amount_paid=first.totals.total,
                    paid_at=datetime(2026, month + 1, 5, tzinfo=UTC),
                    receipt_number=f"RCPT-{entity_id}-{n}",
                    charge_id=f"ch_{entity_id}_{n}",
                    credit_notes=[
                        CreditNoteSnapshot(
                            f"cn_{entity_id}_{n}",
                            f"CN-{entity_id}-{n}",
                            Decimal("1.00"),
                            "order_change",
                            "goodwill",
                        )
                    ]
                    if entity_id == "acme"
                    else [],
                ),
                Source("stripe_event", f"evt_{entity_id}_{n}_p"),
            )
        elif final == "past_due":
            ledger.observe_invoice(
                snap("open", attempt_count=2, last_failure="card_declined"),
                Source("stripe_event", f"evt_{entity_id}_{n}_x"),
            )
            ledger.mark_past_due(
                f"in_{entity_id}_{n}",
                date(2026, month + 1, 20),
                Source("scheduler_run", "sweep-web"),
            )
        elif final == "void":
            ledger.observe_invoice(
                snap("void", voided_at=datetime(2026, month + 1, 3, tzinfo=UTC)),
                Source("stripe_event", f"evt_{entity_id}_{n}_v"),
            )
        elif final == "uncollectible":
            ledger.observe_invoice(
                snap(
                    "uncollectible",
                    attempt_count=4,
                    last_failure="card_declined",
                    marked_uncollectible_at=datetime(2026, month + 1, 28, tzinfo=UTC),
                ),
                Source("stripe_event", f"evt_{entity_id}_{n}_u"),
            )
        world.stripe_ids[number] = f"in_{entity_id}_{n}"
        if final != "draft":
            world.invoices[number] = entity_id
            world.by_status.setdefault(final, []).append(number)
    ledger.add_user(ADMIN_EMAIL, "admin", PASSWORD, OPERATOR)
    ledger.add_user(ACME_EMAIL, "customer", PASSWORD, OPERATOR, entity_id="acme")
    ledger.add_user(GLOBEX_EMAIL, "customer", PASSWORD, OPERATOR, entity_id="globex")
    for email in (ADMIN_EMAIL, ACME_EMAIL, GLOBEX_EMAIL):
        world.tokens[email] = ledger.issue_api_token(email, "tests", OPERATOR)
    queue_past_due_notices(ledger, world)
    Runner(ledger).catch_up()
    return world


def queue_past_due_notices(ledger: Ledger, world: World) -> None:
    """The notices a sweep queues for the past-due invoice (ACME-0002): to the admin
    by email, delivered; to acme's billing email, failed once (a retry is due)."""
    number = world.by_status["past_due"][0]
    invoice = ledger.invoice(world.stripe_ids[number])
    sweep = Source("scheduler_run", "sweep-web-notices")
    notes = past_due_notifications(
        invoice, ledger.entity(invoice.entity_id), [ADMIN_EMAIL], date(2026, 3, 20), sweep, START
    )
    ledger.save(*notes)
    for note, outcome in zip(
        notes,
        (Outcome(True, "250 2.0.0 queued"), Outcome(False, "451 4.2.1 mailbox busy")),
        strict=True,
    ):
        claimed = ledger.begin_delivery(note.id, sweep)
        assert claimed is not None
        ledger.record_delivery(note.id, claimed.attempts, outcome, sweep)


@pytest.fixture
def world(ledger: Ledger, settings: Settings, clock: TickingClock) -> World:
    # Built through a second ledger on the same database without the in-process
    # read-model catch-up after every command (the fixture's ledger has it), then
    # caught up once: the same events, a fraction of the time.
    builder = bootstrap.ledger(settings, clock)
    try:
        built = build_world(builder)
    finally:
        builder.close()
    Runner(ledger).catch_up()
    return built


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt at the production cost takes ~90 ms a hash; the tests hash several
    passwords per test. The cost is stored in each hash, so logins still verify."""
    monkeypatch.setattr("ledger.users.application._N", 2**8)


# Logins ---------------------------------------------------------------------------

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """The CSRF token of the form on `path`, as a browser would read it."""
    page = client.get(path)
    match = _CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token in the form on {path}"
    return match.group(1)


Login = Callable[[FlaskClient, str], FlaskClient]


def log_in(client: FlaskClient, email: str, password: str = PASSWORD) -> FlaskClient:
    response = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": csrf_token(client)}
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return client


@pytest.fixture
def login() -> Callable[..., FlaskClient]:
    return log_in


@pytest.fixture
def admin(app: Flask, world: World) -> FlaskClient:
    return log_in(app.test_client(), ADMIN_EMAIL)


@pytest.fixture
def acme(app: Flask, world: World) -> FlaskClient:
    return log_in(app.test_client(), ACME_EMAIL)


@pytest.fixture
def globex(app: Flask, world: World) -> FlaskClient:
    return log_in(app.test_client(), GLOBEX_EMAIL)


# The browser ----------------------------------------------------------------------

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (it cannot download its own browser here).
    With CI=true a missing browser fails the run instead of skipping."""
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no chromium on PATH (.ci/run installs Debian's package)")
        pytest.skip("no chromium on PATH: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def live_url(app: Flask, world: World) -> Iterator[str]:
    """The app with its world, served on a loopback port for the browser."""
    with LoopbackServer(app) as server:
        yield server.url


@pytest.fixture
def page(chromium: Any, live_url: str) -> Iterator[Any]:
    context = chromium.new_context(base_url=live_url, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
