"""Fixtures for the scheduler's tests: real servers on loopback, a ledger whose
clock only moves when a test moves it, and the scheduler's jobs wired by
`bootstrap.scheduler_jobs` as `billtrail scheduler` wires them.

- `smtp`: an aiosmtpd server that requires a login (`smtp.url`), records every
  message it accepts, and can be told to refuse them (`smtp.refuse = "451 ..."`).
- `smtps`: the same over TLS from the first byte, with the self-signed certificate
  in `tls/` (valid until 2126), trusted through SSL_CERT_FILE; `starttls`: plain
  SMTP that requires STARTTLS before anything else.
- `hooks`: an HTTP server that records every POST and checks its
  Billtrail-Signature with the secret the customer would be given; it can be told
  to answer with an error status (`hooks.status = 500`).
- `world` (or `new_world(ledger)` on another ledger): entities told by email
  (`acme`), by webhook (`hooked`) and not at all (`quiet`), and `world.issue(...)`
  to record an open invoice.
- `scheduler_env(**more)`: the scheduler's settings for the test's database.
- `make_jobs(**env)`: the scheduler's jobs on the test's database and clock (one
  per "process").
- `wait_until(condition, ...)`: wait on a condition with a deadline.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.invoices.application import InvoiceSnapshot
from ledger.invoices.domain import Totals
from ledger.sources import Source
from ledger.values import Line, Period
from scheduler.runner import Jobs
from scheduler.testing import SmtpHandler, SmtpServer, smtp_server
from scheduler.webhooks import entity_webhook_secret

SEAL_KEY = "scheduler-tests-seal-key-0123456789abcdef"
SECRET_KEY = "scheduler-tests-secret-key-0123456789abcdef"
ADMINS = ("ops@billtrail.test", "boss@billtrail.test")
TLS_DIR = Path(__file__).parent / "tls"
D = Decimal


WaitUntil = Callable[..., None]


def _wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.01)


@pytest.fixture
def wait_until() -> WaitUntil:
    """`wait_until(condition, timeout=30, what="...")`: poll until true, fail after the
    deadline (never a fixed sleep)."""
    return _wait_until


# SMTP ------------------------------------------------------------------------------


def _server(handler: SmtpHandler, scheme: str, **kwargs: Any) -> Iterator[SmtpServer]:
    with smtp_server(handler, scheme, **kwargs) as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    yield from _server(SmtpHandler(), "smtp")


def _tls_context(monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS_DIR / "cert.pem", TLS_DIR / "key.pem")
    # The mailer verifies certificates against the default CA bundle: this one.
    monkeypatch.setenv("SSL_CERT_FILE", str(TLS_DIR / "cert.pem"))
    return context


@pytest.fixture
def smtps(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    yield from _server(SmtpHandler(), "smtps", ssl_context=_tls_context(monkeypatch))


@pytest.fixture
def starttls(monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    """Plain SMTP that refuses everything before STARTTLS (`url` without starttls=1)."""
    context = _tls_context(monkeypatch)
    yield from _server(SmtpHandler(), "smtp", tls_context=context, require_starttls=True)


# Webhooks --------------------------------------------------------------------------


@dataclass
class Hook:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class HookReceiver:
    url: str
    secret: str = ""  # the customer's secret, as `billtrail notifications webhook-secret` gives it
    status: int = 200
    received: list[Hook] = field(default_factory=list)

    def verify(self, header: str, body: bytes) -> bool:
        """What the customer does with Billtrail-Signature (as documented)."""
        try:
            fields = dict(part.split("=", 1) for part in header.split(","))
            t = int(fields["t"])
        except (ValueError, KeyError):
            return False
        expected = hmac.new(self.secret.encode(), f"{t}.".encode() + body, hashlib.sha256)
        fresh = abs(time.time() - t) < 300
        return fresh and hmac.compare_digest(expected.hexdigest(), fields.get("v1", ""))


@pytest.fixture
def hooks() -> Iterator[HookReceiver]:
    receiver: HookReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            signature = self.headers.get("Billtrail-Signature", "")
            receiver.received.append(
                Hook(self.path, dict(self.headers), body, receiver.verify(signature, body))
            )
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the test reads what was received

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = HookReceiver(f"http://127.0.0.1:{server.server_address[1]}/billtrail")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# The ledger and the world ------------------------------------------------------------


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


TODAY = date(2026, 2, 20)


@pytest.fixture
def clock() -> ManualClock:
    # 10:00 in Paris on TODAY: after the 06:00 sweep time.
    return ManualClock(datetime(2026, 2, 20, 9, 0, tzinfo=UTC))


SchedulerEnv = Callable[..., dict[str, str]]


@pytest.fixture
def scheduler_env(database_url: str, tmp_path: Path, smtp: SmtpServer) -> SchedulerEnv:
    """`scheduler_env(**more)`: the settings of a scheduler on the test's database,
    sending mail through `smtp`, in Europe/Paris, with two admins."""

    def env(**more: str) -> dict[str, str]:
        return {
            "BILLTRAIL_DATABASE_URL": database_url,
            "BILLTRAIL_SEAL_KEY": SEAL_KEY,
            "BILLTRAIL_SECRET_KEY": SECRET_KEY,
            "BILLTRAIL_VAR_DIR": str(tmp_path / "var"),
            "BILLTRAIL_TIMEZONE": "Europe/Paris",
            "BILLTRAIL_ADMIN_EMAILS": ",".join(ADMINS),
            "BILLTRAIL_SMTP_URL": smtp.url,
            **more,
        }

    return env


MakeJobs = Callable[..., Jobs]


@pytest.fixture
def make_jobs(scheduler_env: SchedulerEnv, clock: ManualClock) -> Iterator[MakeJobs]:
    """`make_jobs(**env)`: the jobs a new scheduler process would run (its own
    ledger, outbox follower and projections runner), on the test's clock."""
    made: list[Jobs] = []

    def make(**env: str) -> Jobs:
        settings = Settings.from_env(scheduler_env(**env))
        jobs = bootstrap.scheduler_jobs(settings, clock=clock)
        made.append(jobs)
        return jobs

    yield make
    for jobs in made:
        jobs.ledger.close()


@pytest.fixture
def jobs(make_jobs: MakeJobs) -> Jobs:
    return make_jobs()


ADMIN = Source("admin", "admin-1", actor="alice@example.com")
PERIOD = Period(date(2026, 1, 1), date(2026, 2, 1))
LINES = [Line("il_1", "fee", "Monthly minimum", D("1"), D("50.00"), D("50.00"))]
TOTALS = Totals(subtotal=D("50.00"), tax=D("10.00"), total=D("60.00"))


@dataclass
class World:
    ledger: Ledger
    count: int = 0

    def issue(self, stripe_id: str, entity_id: str, due: date, status: str = "open") -> str:
        """An invoice issued 14 days before `due`, as the Stripe adapter records it."""
        self.count += 1
        self.ledger.observe_invoice(
            InvoiceSnapshot(
                stripe_id=stripe_id,
                entity_id=entity_id,
                currency="eur",
                period=PERIOD,
                status=status,
                lines=LINES,
                totals=TOTALS,
                number=f"{entity_id.upper()}-{self.count:04d}",
                issue_date=due - timedelta(days=14),
                due_date=due,
                amount_paid=TOTALS.total if status == "paid" else D(0),
            ),
            Source("stripe_event", f"evt_{stripe_id}_{status}"),
        )
        return stripe_id


NewWorld = Callable[[Ledger], World]


@pytest.fixture
def new_world(hooks: HookReceiver) -> NewWorld:
    """`new_world(ledger)`: Acme (told by email, two billing contacts), Hooked (by
    webhook, to `hooks`, which checks signatures with Hooked's secret) and Quiet
    (not told)."""

    def populate(ledger: Ledger) -> World:
        ledger.register_entity(
            "Acme", "company", ADMIN, emails=["billing@acme.test", "cfo@acme.test"]
        )
        ledger.register_entity("Hooked", "organization", ADMIN, emails=["ops@hooked.test"])
        ledger.change_notification_preferences(
            "hooked", {"invoice_past_due": "webhook"}, ADMIN, webhook_url=hooks.url
        )
        ledger.register_entity("Quiet", "company", ADMIN, emails=["q@quiet.test"])
        ledger.change_notification_preferences("quiet", {"invoice_past_due": "none"}, ADMIN)
        hooks.secret = entity_webhook_secret(SECRET_KEY, "hooked")
        return World(ledger)

    return populate


@pytest.fixture
def world(jobs: Jobs, new_world: NewWorld) -> World:
    return new_world(jobs.ledger)
