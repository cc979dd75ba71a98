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
WaitUntil = Callable[..., None]
SchedulerEnv = Callable[..., dict[str, str]]


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


@pytest.fixture
def real_time_ledger(scheduler_env: SchedulerEnv) -> Iterator[Ledger]:
    """The ledger on the real clock, as the processes under test see it."""
    app = bootstrap.ledger(Settings.from_env(scheduler_env()))
    yield app
    app.close()


def test_two_scheduler_processes_at_once_send_each_notice_once(
    real_time_ledger: Ledger,
    scheduler_env: SchedulerEnv,
    new_world: Any,
    tmp_path: Path,
    smtp: Any,
    hooks: Any,
    processes: list[Process],
    wait_until: WaitUntil,
) -> None:
    # The tests' world, due three days before the real today.
    world = new_world(real_time_ledger)
    due = datetime.now(UTC).date() - timedelta(days=3)
    world.issue("in_acme", "acme", due)
    world.issue("in_hook", "hooked", due)
    world.issue("in_quiet_later", "quiet", due + timedelta(days=30))
    env = {**os.environ, **scheduler_env()}
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
    env = {
        **os.environ,
        "BILLTRAIL_DATABASE_URL": f"sqlite:///{database}",
        "BILLTRAIL_VAR_DIR": str(tmp_path / "var"),
        setting: value,
    }
    p = Process(["scheduler"], env, tmp_path)
    processes.append(p)
    assert p.finish() == 2
    assert len(p.lines) == 1, p.lines
    assert p.lines[0].startswith(message)
    assert not database.exists()  # stopped before touching anything


def test_the_daily_sweep_job_sweeps_at_its_time_and_the_outbox_job_delivers_at_once(
    make_jobs: MakeJobs, world: Any, smtp: Any, clock: Any, wait_until: WaitUntil
) -> None:
    jobs = make_jobs()
    today = jobs.now_local().date()
    jobs.past_due_sweep(today - timedelta(days=1))
    clock.now = clock.now.replace(hour=4)  # 05:00 in Paris: today's sweep is not due yet
    process = SchedulerProcess(jobs)
    assert process.job_ids() == sorted([SWEEP, OUTBOX, "reconcile", "usage-push"])
    world.issue("in_1", "acme", today - timedelta(days=2))
    process.start()
    try:
        assert world.ledger.invoice("in_1").status.value == "open"
        clock.now = clock.now.replace(hour=5)  # 06:00 in Paris
        sweep = process.scheduler.get_job(SWEEP)
        assert sweep is not None
        sweep.func()  # the daily trigger, fired by hand
        assert world.ledger.invoice("in_1").status.value == "past_due"
        # Delivered by the outbox job on the scheduler's thread, not at the next minute.
        wait_until(lambda: len(smtp.received) == 4, timeout=10, what="the outbox job")
    finally:
        process.shutdown()
    assert not process.scheduler.running


def test_the_minute_job_runs_a_sweep_still_owed_then_delivers(
    make_jobs: MakeJobs, world: Any, smtp: Any, clock: Any
) -> None:
    jobs = make_jobs()
    today = jobs.now_local().date()
    jobs.past_due_sweep(today - timedelta(days=1))
    world.issue("in_1", "acme", today - timedelta(days=2))
    process = SchedulerProcess(jobs)  # not started: the job is called as APScheduler would
    outbox = process.scheduler.get_job(OUTBOX)
    assert outbox is not None
    outbox.func()  # 10:00 in Paris: today's 06:00 sweep never ran (asleep, database away)
    assert world.ledger.invoice("in_1").status.value == "past_due"
    assert len(smtp.received) == 4
    outbox.func()
    assert len(smtp.received) == 4
