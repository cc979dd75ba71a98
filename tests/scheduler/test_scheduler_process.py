"""`billtrail scheduler` as real processes: two at once send each notice once (on
PostgreSQL the advisory lock elects one runner, on SQLite the ledger's
idempotency does the same job), a restart sends nothing more, SIGTERM stops it
cleanly, bad settings stop it at start with one line; and the APScheduler wiring
in process, its jobs triggered directly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from scheduler.runner import OUTBOX, SWEEP, Jobs, SchedulerProcess

MakeJobs = Callable[..., Jobs]
SEAL_KEY = "scheduler-tests-seal-key-0123456789abcdef"
SECRET_KEY = "scheduler-tests-secret-key-0123456789abcdef"
ADMINS = "ops@billtrail.test,boss@billtrail.test"


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Process:
    """A `billtrail` process whose stderr is read as it comes."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "billtrail", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line.rstrip("\n"))

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def finish(self, timeout: float = 30.0) -> int:
        code = self.popen.wait(timeout=timeout)
        self.reader.join(timeout)
        assert self.popen.stderr is not None
        self.popen.stderr.close()
        return code

    def stop(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.finish()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:  # a failed test leaves none behind
        if p.popen.poll() is None:
            p.popen.kill()
            p.finish()


def process_env(database_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "BILLTRAIL_DATABASE_URL": database_url,
        "BILLTRAIL_SEAL_KEY": SEAL_KEY,
        "BILLTRAIL_SECRET_KEY": SECRET_KEY,
        "BILLTRAIL_VAR_DIR": str(tmp_path / "var"),
        "BILLTRAIL_TIMEZONE": "Europe/Paris",
        "BILLTRAIL_ADMIN_EMAILS": ADMINS,
        **extra,
    }


@pytest.fixture
def real_time_ledger(database_url: str, tmp_path: Path) -> Iterator[Ledger]:
    """The ledger on the real clock, as the processes under test see it."""
    settings = Settings.from_env(process_env(database_url, tmp_path))
    app = bootstrap.ledger(settings)
    yield app
    app.close()


def test_two_scheduler_processes_at_once_send_each_notice_once(
    real_time_ledger: Ledger,
    database_url: str,
    tmp_path: Path,
    smtp: Any,
    hooks: Any,
    processes: list[Process],
) -> None:
    from scheduler.webhooks import entity_webhook_secret

    # The tests' world, due three days before the real today.
    world = _populate(real_time_ledger, hooks.url)
    hooks.secret = entity_webhook_secret(SECRET_KEY, "hooked")
    due = datetime.now(UTC).date() - timedelta(days=3)
    world.issue("in_acme", "acme", due)
    world.issue("in_hook", "hooked", due)
    world.issue("in_quiet_later", "quiet", due + timedelta(days=30))
    env = process_env(database_url, tmp_path, BILLTRAIL_SMTP_URL=smtp.url)
    processes += [Process(["scheduler"], env, tmp_path) for _ in range(2)]
    # 2 invoices x 2 admins, 2 Acme contacts, Hooked's webhook.
    wait_until(lambda: len(smtp.received) >= 6 and len(hooks.received) >= 1, what="the notices")
    wait_until(lambda: all(p.said("running") for p in processes), what="both to be running")
    wait_until(lambda: _sent(real_time_ledger) == 7, what="every notice recorded as sent")
    assert [p.stop() for p in processes] == [0, 0]
    assert all(p.said("stopping") for p in processes)
    # And a restart afterwards owes nothing.
    restart = Process(["scheduler", "--once"], env, tmp_path)
    processes.append(restart)
    assert restart.finish() == 0, restart.lines
    assert Counter(smtp.handler.message_ids()).most_common(1)[0][1] == 1
    assert len(smtp.received) == 6
    assert len(hooks.received) == 1
    assert hooks.received[0].verified
    assert _count(real_time_ledger, "billtrail:Invoice.BecamePastDue") == 2
    assert _count(real_time_ledger, "billtrail:Notification.Sent") == 7
    assert _count(real_time_ledger, "billtrail:Notification.DeliveryAttempted") == 7
    assert real_time_ledger.verify_seal().ok


def _sent(ledger: Ledger) -> int:
    return _count(ledger, "billtrail:Notification.Sent")


def _count(ledger: Ledger, topic: str) -> int:
    return sum(1 for _ in ledger.events_of_topics([topic]))


def _populate(ledger: Ledger, hook_url: str) -> Any:
    from ledger.sources import Source

    admin = Source("admin", "admin-1")
    ledger.register_entity("Acme", "company", admin, emails=["billing@acme.test", "cfo@acme.test"])
    ledger.register_entity("Hooked", "organization", admin, emails=["ops@hooked.test"])
    ledger.change_notification_preferences(
        "hooked", {"invoice_past_due": "webhook"}, admin, webhook_url=hook_url
    )
    ledger.register_entity("Quiet", "company", admin, emails=["q@quiet.test"])
    return _World(ledger)


class _World:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def issue(self, stripe_id: str, entity_id: str, due: Any) -> None:
        from decimal import Decimal

        from ledger.invoices.application import InvoiceSnapshot
        from ledger.invoices.domain import Totals
        from ledger.sources import Source
        from ledger.values import Line, Period

        total = Decimal("60.00")
        self.ledger.observe_invoice(
            InvoiceSnapshot(
                stripe_id=stripe_id,
                entity_id=entity_id,
                currency="eur",
                period=Period(due - timedelta(days=45), due - timedelta(days=14)),
                status="open",
                lines=[Line("il_1", "fee", "Monthly minimum", Decimal(1), total, total)],
                totals=Totals(total, Decimal(0), total),
                number=f"{entity_id.upper()}-0001",
                issue_date=due - timedelta(days=14),
                due_date=due,
            ),
            Source("stripe_event", f"evt_{stripe_id}"),
        )


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        (
            "BILLTRAIL_SMTP_URL",
            "nonsense",
            "billtrail: BILLTRAIL_SMTP_URL: expected smtp://[user:password@]host[:port] "
            "or smtps://..., got 'nonsense'",
        ),
        ("BILLTRAIL_TIMEZONE", "Mars/Base", "billtrail: BILLTRAIL_TIMEZONE: unknown time zone"),
    ],
)
def test_bad_settings_stop_the_scheduler_at_start_with_one_clear_line(
    tmp_path: Path, processes: list[Process], setting: str, value: str, message: str
) -> None:
    database = tmp_path / "billtrail.db"
    env = process_env(f"sqlite:///{database}", tmp_path, **{setting: value})
    p = Process(["scheduler"], env, tmp_path)
    processes.append(p)
    assert p.finish() == 2
    assert len(p.lines) == 1, p.lines
    assert p.lines[0].startswith(message)
    assert not database.exists()  # stopped before touching anything


def test_the_daily_sweep_job_marks_then_has_the_outbox_job_deliver_at_once(
    make_jobs: MakeJobs, world: Any, smtp: Any
) -> None:
    jobs = make_jobs()
    today = jobs.now_local().date()
    jobs.past_due_sweep(today)  # today's sweep ran already: the start owes nothing
    process = SchedulerProcess(jobs)
    assert process.job_ids() == sorted([SWEEP, OUTBOX, "reconcile", "usage-push"])
    world.issue("in_1", "acme", today - timedelta(days=2))
    process.start()
    try:
        assert smtp.received == []
        sweep = process.scheduler.get_job(SWEEP)
        assert sweep is not None
        sweep.func()  # the daily trigger, fired by hand
        assert world.ledger.invoice("in_1").status.value == "past_due"
        # Delivered by the outbox job on the scheduler's thread, not at the next minute.
        wait_until(lambda: len(smtp.received) == 4, timeout=10, what="the outbox job")
    finally:
        process.shutdown()
    assert not process.scheduler.running
