"""The scheduler process: APScheduler jobs defined in code.

| job | when (BILLTRAIL_TIMEZONE) | does |
|---|---|---|
| past-due-sweep | daily at BILLTRAIL_SWEEP_AT (06:00) | the ledger's past-due sweep of the day |
| outbox | every minute | a sweep still owed (see below), then the notices due |
| usage-push | daily at 01:00 | the Stripe usage push (when wired) |
| reconcile | daily at 02:30 | the Stripe reconcile (when wired) |

Each job is elected (scheduler.election) and then makes one call; what it does
twice, or in two processes at once, it does once. On start the scheduler sweeps a
day whose sweep it missed while it was down (the ledger records each swept day),
then delivers what is due; the outbox job checks the same every minute, so a sweep
missed while running (asleep past the sweep time, the database away) is not lost
either. APScheduler keeps its jobs in memory: what was missed is known from the
ledger, never from the scheduler's own state."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from ledger.app import Ledger
from ledger.notifications.application import SweepOutcome
from ledger.sources import Source, SourceKind
from projections.runner import Runner
from scheduler.election import elected
from scheduler.outbox import Deliverer, DeliveryReport
from scheduler.sweep import missed_sweep_day, run_past_due_sweep

log = logging.getLogger(__name__)

Job = Callable[[], object]

SWEEP, OUTBOX, USAGE_PUSH, RECONCILE = "past-due-sweep", "outbox", "usage-push", "reconcile"


@dataclass(frozen=True)
class Schedule:
    timezone: ZoneInfo
    sweep_at: time = time(6, 0)
    usage_push_at: time = time(1, 0)
    reconcile_at: time = time(2, 30)
    outbox_every: timedelta = timedelta(minutes=1)


def delivery_source() -> Source:
    """Which deliverer recorded an attempt: host, process and start of the pass."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return Source(SourceKind.SCHEDULER_RUN, f"outbox/{socket.gethostname()}/{os.getpid()}/{stamp}")


class Jobs:
    """The jobs as plain methods (tests and `billtrail sweep` call them directly).
    Each returns what it did, or None when another process is running it."""

    def __init__(
        self,
        ledger: Ledger,
        projections: Runner,
        deliverer: Deliverer,
        schedule: Schedule,
        admins: tuple[str, ...] = (),
        *,
        usage_push: Job | None = None,
        reconcile: Job | None = None,
    ) -> None:
        self.ledger = ledger
        self.projections = projections
        self.deliverer = deliverer
        self.schedule = schedule
        self.admins = admins
        self.usage_push = usage_push
        self.reconcile = reconcile

    def now_local(self) -> datetime:
        return self.ledger.clock().astimezone(self.schedule.timezone)

    def past_due_sweep(self, today: date | None = None, *, wait: float = 0) -> SweepOutcome | None:
        day = today or self.now_local().date()
        with elected(self.ledger, SWEEP, wait=wait) as mine:
            if not mine:
                log.info("past-due sweep %s: another process is running it", day)
                return None
            outcome = run_past_due_sweep(self.ledger, self.projections, day, self.admins)
        log.info(
            "past-due sweep %s: %d invoice(s) moved to past due, %d notice(s) queued",
            day,
            len(outcome.marked),
            len(outcome.queued),
        )
        return outcome

    def sweep_if_owed(self) -> SweepOutcome | None:
        """The sweep of the latest scheduled day, unless the ledger has it already
        (one read). Run on start, at the sweep time and before every outbox pass, so
        a sweep missed while the process was down, asleep past the sweep time, or
        failing (the database away at 06:00) runs as soon as it can."""
        day = missed_sweep_day(
            self.ledger.last_past_due_sweep(), self.now_local(), self.schedule.sweep_at
        )
        if day is None:
            return None
        return self.past_due_sweep(day)

    def deliver_outbox(self, *, wait: float = 0) -> DeliveryReport | None:
        with elected(self.ledger, OUTBOX, wait=wait) as mine:
            if not mine:
                return None
            report = self.deliverer.deliver_due(delivery_source())
        if report.sent or report.failed or report.gave_up:
            log.info("outbox: %s", report)
        return report

    def push_usage(self) -> object:
        return self._wired(USAGE_PUSH, self.usage_push)

    def reconcile_stripe(self) -> object:
        return self._wired(RECONCILE, self.reconcile)

    def _wired(self, name: str, job: Job | None) -> object:
        if job is None:
            log.warning("%s: not wired in this build; skipped", name)
            return None
        with elected(self.ledger, name) as mine:
            if not mine:
                return None
            try:
                result = job()
            except Exception as exc:
                # One line for the operator (Stripe down, the meter never pushed, ...);
                # tomorrow's run picks up what this one did not do.
                log.warning("%s failed: %s: %s", name, type(exc).__name__, exc)
                return None
        log.info("%s: %s", name, result)
        return result

    def start_up(self) -> None:
        """What is owed: a sweep missed, then whatever is due for delivery. On start,
        and every minute."""
        self.sweep_if_owed()
        self.deliver_outbox()


class SchedulerProcess:
    """The jobs on APScheduler's clock, in a background thread. `start()` first runs
    what is owed (`Jobs.start_up`), then schedules; `shutdown()` waits for a running
    job to finish."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        s = jobs.schedule
        self.scheduler = BackgroundScheduler(
            timezone=s.timezone,
            # A run missed by a stopped or busy scheduler is not replayed by
            # APScheduler: the catch-up on start looks at the ledger instead.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
        )
        self._daily(self._sweep_then_deliver, s.sweep_at, SWEEP)
        self.scheduler.add_job(
            jobs.start_up,
            IntervalTrigger(seconds=s.outbox_every.total_seconds(), timezone=s.timezone),
            id=OUTBOX,
            name=OUTBOX,
        )
        if jobs.usage_push is not None:
            self._daily(jobs.push_usage, s.usage_push_at, USAGE_PUSH)
        if jobs.reconcile is not None:
            self._daily(jobs.reconcile_stripe, s.reconcile_at, RECONCILE)

    def _daily(self, job: Job, at: time, name: str) -> None:
        zone = self.jobs.schedule.timezone
        trigger = CronTrigger(hour=at.hour, minute=at.minute, second=at.second, timezone=zone)
        self.scheduler.add_job(job, trigger, id=name, name=name)

    def _sweep_then_deliver(self) -> None:
        outcome = self.jobs.sweep_if_owed()
        if outcome is not None and outcome.queued:
            # The notices just queued go out now rather than at the next minute.
            now = datetime.now(self.jobs.schedule.timezone)
            self.scheduler.modify_job(OUTBOX, next_run_time=now)

    def job_ids(self) -> list[str]:
        return sorted(job.id for job in self.scheduler.get_jobs())

    def start(self) -> None:
        self.jobs.start_up()
        self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
