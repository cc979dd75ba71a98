"""The seeded whole-system simulation (issue 10): a small world billed over a few
simulated months through the application commands an operator's commands call,
the Stripe sandbox over HTTP and the web app's real webhook endpoint on loopback,
then the scheduler and the projections runner as real processes. The same world
(entities, calls, who pays how) and the same fault schedule come from the seed.

Two runs of one seed are compared: a fault-free one, and one whose faults the
seed chooses (`Faults`): 429 and 500 bursts, dropped connections and slow answers
on the outbound pushes and the inbound re-reads; dropped, duplicated and
reordered webhooks, and at the end every webhook lost for good (then `sync`); a
crash between Stripe's answer and the ledger write (then the command again);
kill -9 of `billtrail projections run` while the world is built (then again);
two `billtrail scheduler` processes at once, one killed with kill -9 (then
another started), while the SMTP server refuses mail for a while.

Time: the ledger runs on a simulated clock that follows the Stripe test clocks
(March 2026 onwards); the scheduler processes run on the real one, so the past-due
sweep happens once, at the end, for the real today (every due date of the world is
long past: the world's months are fixed, so that a seed replays the same run, and
lie before this code was written), in a time zone chosen so that no daily job's
time falls in the run.
Notices whose retry is due minutes later are delivered by the same jobs in this
process on a clock moved past the backoff and the lease."""

from __future__ import annotations

import csv
import heapq
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import stripe

from adapters.stripe.outbound.clocks import EntityClocks
from adapters.stripe.outbound.corrections import (
    RateRevision,
    correct_wrong_rate,
    credit_duplicate_calls,
    write_off,
)
from adapters.stripe.outbound.customers import push_customers
from adapters.stripe.outbound.outbox import AfterCall, Outbox, StripeUnavailable
from adapters.stripe.outbound.push import push_all
from adapters.stripe.outbound.subscriptions import (
    CHARGE_AUTOMATICALLY,
    BillingTerms,
    subscription_of,
)
from adapters.stripe.outbound.usage import meter_timestamp, push_usage
from adapters.stripe.processing import process_pending
from adapters.stripe.sandbox import RunningSandbox, SandboxControl, start_sandbox
from adapters.stripe.sandbox.testing import FAST_RETRIES
from adapters.stripe.sync import EVENT_TYPES, run_sync
from adapters.stripe.testing import (
    HOW_IT_ARRIVED,
    Crash,
    FastRetries,
    LoopbackServer,
    crash_once,
    drain,
    facts,
    invoice_histories,
    settled,
)
from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.entities.domain import BillableEntity
from ledger.invoices.domain import Invoice, Status
from ledger.notifications.domain import Notification
from ledger.sources import Source, SourceKind
from ledger.usage.importer import EntityInfo, import_calls
from projections.runner import Runner
from projections.testing import dump_tables
from scheduler.messages import message_id
from scheduler.testing import SmtpHandler, SmtpServer, smtp_server
from web import create_app, shutdown

FIRST_DAY = date(2026, 3, 1)
STORY_STARTS = datetime(2026, 2, 20, 9, 0, tzinfo=UTC)
# Local midnight of FIRST_DAY has passed in every zone below (Chicago's at 06:00 UTC).
OPENING = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
ZONES = (
    "UTC",
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "America/Chicago",
    "Asia/Tokyo",
)
PRICES = ("0.0090", "0.0110", "0.0125", "0.0150", "0.0200")
NAMES = ("Acme Clinics", "Bolt Freight", "Cove Housing", "Dune Energy", "Elm Insurance")
ADMIN_EMAIL = "ops@billtrail.test"
ADMIN = Source(SourceKind.ADMIN, "simulation", "ana@billtrail.example")
SEAL_KEY = "simulation-seal-key-0123456789abcdef0123"
SECRET_KEY = "simulation-secret-key-0123456789abcdef"
TRANSFER_DAYS = 14
DEADLINE = 60.0  # seconds any wait on a process or a delivery may take
OUTAGE = "451 4.3.0 mail system unavailable, try again later"


# The world -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    entities: int
    months: int
    calls_per_day: int  # at most twice this many a day, on average this many


CI = Size(entities=3, months=3, calls_per_day=2)
LONGER = Size(entities=5, months=4, calls_per_day=3)


@dataclass(frozen=True)
class EntityPlan:
    entity_id: str
    name: str
    kind: str
    zone: str
    price: Decimal
    pays: str  # "card", "failing card" (every charge declined) or "transfer"

    @property
    def email(self) -> str:
        return f"billing@{self.entity_id}.example"


@dataclass(frozen=True)
class WorldPlan:
    """What the seed makes of the world: the same for both runs."""

    seed: int
    size: Size
    entities: list[EntityPlan]
    # entity -> local day -> rows (call_id, entity_id, started_at, duration_seconds)
    calls: dict[str, dict[date, list[list[str]]]]
    # the periods whose invoices a customer paying by transfer leaves unpaid
    unpaid_periods: frozenset[int]
    # a card payer's provider sent a day's calls twice under new ids (credited later)
    resent_entity: str
    resent_day: date
    resent: tuple[str, ...]

    @classmethod
    def generate(cls, seed: int, size: Size) -> WorldPlan:
        rng = random.Random(f"world/{seed}")
        ways = ["card", "failing card", "transfer"] + ["card"] * (size.entities - 3)
        rng.shuffle(ways)
        entities = []
        for name, pays in zip(rng.sample(NAMES, size.entities), ways, strict=True):
            entity_id = name.lower().replace(" ", "-")
            entities.append(
                EntityPlan(
                    entity_id,
                    name,
                    rng.choice(("company", "organization")),
                    rng.choice(ZONES),
                    Decimal(rng.choice(PRICES)),
                    pays,
                )
            )
        calls: dict[str, dict[date, list[list[str]]]] = {}
        days = size.months * 31 + 7
        for e in entities:
            zone = ZoneInfo(e.zone)
            by_day = calls.setdefault(e.entity_id, {})
            for d in range(days):
                day = FIRST_DAY + timedelta(days=d)
                for n in range(rng.randint(0, 2 * size.calls_per_day)):
                    start = datetime.combine(day, clock_time(8), zone) + timedelta(
                        seconds=rng.randint(0, 10 * 3600)
                    )
                    by_day.setdefault(day, []).append(
                        [
                            f"{e.entity_id}-{day:%Y%m%d}-{n:03d}",
                            e.entity_id,
                            start.isoformat(),
                            str(rng.randint(5, 900)),
                        ]
                    )
        unpaid = frozenset(k for k in range(1, size.months + 1) if rng.random() < 0.4)
        payer = next(e for e in entities if e.pays == "card")
        first_month = range(3, 25)  # well inside the first period, in any zone
        busy = [
            d
            for d, rows in calls[payer.entity_id].items()
            if rows and d.month == FIRST_DAY.month and d.day in first_month
        ]
        resent_day = rng.choice(sorted(busy))
        again = [[f"{r[0]}-r", *r[1:]] for r in calls[payer.entity_id][resent_day]]
        calls[payer.entity_id][resent_day] += again
        resent = tuple(r[0] for r in again)
        return cls(
            seed,
            size,
            entities,
            calls,
            unpaid | {size.months},
            payer.entity_id,
            resent_day,
            resent,
        )

    def entity(self, entity_id: str) -> EntityPlan:
        return next(e for e in self.entities if e.entity_id == entity_id)

    def describe(self) -> str:
        return ", ".join(f"{e.entity_id} ({e.zone}, {e.pays})" for e in self.entities)


# Faults ----------------------------------------------------------------------------------


@dataclass
class Faults:
    """The faults of one seed, drawn in the order the run reaches its steps (the
    steps are the same on every run of the seed, so the schedule is too);
    `injected` is what was done, for the summary and the assertion messages."""

    seed: int
    steps: int  # period ends in the run: where the projections runner may be killed
    rng: random.Random = field(init=False)
    injected: list[str] = field(default_factory=list)
    kill_projections_at: int = field(init=False)
    crash_usage_at: int = field(init=False)
    outage_from_start: bool = field(init=False)
    outage_ends_before_restart: bool = field(init=False)
    kill_scheduler_when: str = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"faults/{self.seed}")
        self.kill_projections_at = self.rng.randrange(self.steps)
        self.crash_usage_at = self.rng.randrange(self.steps)
        self.outage_from_start = self.rng.random() < 0.5
        self.outage_ends_before_restart = self.rng.random() < 0.5
        self.kill_scheduler_when = self.rng.choice(("mid-sweep", "mid-delivery", "after start-up"))

    def note(self, where: str, what: str) -> None:
        self.injected.append(f"{where}: {what}")

    def http(self, control: SandboxControl, where: str, paths: list[str]) -> None:
        """One or two of: a 429 burst, a 500 burst (before or after the work), a
        dropped connection after the work, slow answers; on one of `paths`."""
        for kind in self.rng.sample(("429", "500", "drop", "slow"), self.rng.randint(1, 2)):
            path = self.rng.choice(paths)
            if kind == "429":
                count = self.rng.randint(1, 3)
                control.fail_next(429, count, path=path, should_retry=False)
                self.note(where, f"{count} x 429 on {path}")
            elif kind == "500":
                count = self.rng.randint(1, 4)  # 4: more than the SDK retries
                when = self.rng.choice(("before", "after"))
                control.fail_next(500, count, when=when, path=path)
                self.note(where, f"{count} x 500 ({when} the work) on {path}")
            elif kind == "drop":
                control.drop_connections(1, when="after", path=path)
                self.note(where, f"connection dropped after the work on {path}")
            else:
                ms = self.rng.randint(50, 250)
                count = self.rng.randint(2, 4)
                control.add_latency(ms, count, path=path)
                self.note(where, f"{count} answers {ms} ms slow on {path}")

    def reads(self, control: SandboxControl, where: str) -> None:
        """The inbound re-reads of invoices and credit notes."""
        kind = self.rng.choice(("429", "500", "slow"))
        count = self.rng.randint(1, 2)
        if kind == "429":
            control.fail_next(429, count, method="GET", path="/v1/invoices")
        elif kind == "500":
            control.fail_next(500, count, method="GET", path="/v1/invoices")
        else:
            control.add_latency(self.rng.randint(50, 200), count + 1, method="GET", path="/v1/")
        self.note(where, f"re-reads: {count} x {kind}")

    def webhooks(self, control: SandboxControl, where: str) -> None:
        # Fewer drops than attempts (1 + 3 retries): each webhook arrives at last.
        counts = {
            "drop": self.rng.randint(0, 3),
            "duplicate": self.rng.randint(0, 4),
            "reorder": self.rng.randint(0, 4),
        }
        if not any(counts.values()):
            counts["duplicate"] = 1
        control.webhook_faults(**counts, reorder_hold_ms=150)
        self.note(where, "webhooks " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))

    def crash(self, key_prefixes: list[str], *, surely: bool = False) -> str | None:
        if self.rng.random() < 0.5 and not surely:
            return None
        return self.rng.choice(key_prefixes)


# The summary ------------------------------------------------------------------------------


@dataclass
class SeedRecord:
    """One run's line in the summary `make simulate` and `make test` print."""

    name: str
    seed: int
    backend: str
    world: str = ""
    replay: str = ""
    faults: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    passed: bool = False


# What an operator's command stops on and asks to be run again (the CLI's answer to
# the outbox's StripeUnavailable and to a Stripe error on a read after the writes).
UNAVAILABLE = (StripeUnavailable, stripe.APIError, stripe.APIConnectionError, stripe.RateLimitError)


# Processes -------------------------------------------------------------------------------


class Process:
    """A `billtrail` command as its own process, its stderr kept in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        with log.open("ab") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "billtrail", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def said(self, text: str) -> bool:
        return text in self.log.read_text(errors="replace")

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=DEADLINE)

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=DEADLINE)

    def alive(self) -> bool:
        return self.popen.poll() is None


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float = DEADLINE, poll: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def noon_zone(now: datetime) -> str:
    """A fixed-offset zone where it is about noon: the daily jobs (usage push 01:00,
    reconcile 02:30, sweep 06:00) cannot fall in a run of a few minutes."""
    offset = 12 - now.hour
    return "Etc/GMT" + ("" if offset == 0 else f"{-offset:+d}")


# One run ---------------------------------------------------------------------------------


class SimClock:
    """The ledger's clock: set by the simulation, never moving by itself (so two
    runs record the same times whatever they retried)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = max(self.now, moment)


@dataclass
class Outcome:
    """What the invariants are checked on."""

    facts: dict[str, list[tuple[str, dict[str, Any]]]]
    histories: dict[str, list[tuple[str, dict[str, Any]]]]
    stripe_invoices: dict[str, list[tuple[Any, ...]]]
    ledger_invoices: dict[str, list[tuple[Any, ...]]]
    meter_events: dict[tuple[str, int], list[Decimal]]
    pushed_calls: dict[tuple[str, int], int]
    notices: dict[str, tuple[str, str, str, str]]  # message id -> invoice, recipient, status
    interrupted: set[str]
    received: Counter[str]
    past_due: set[str]
    read_models_equal_rebuild: bool | None
    verify: tuple[int, str]
    sync_events_stored: int
    webhooks_lost: int
    webhooks_duplicated: int
    replayed_requests: int
    delivery_failures: int
    sweeps: dict[date, tuple[int, int]]  # day -> invoices marked, notices queued
    seconds: float


# Not compared between the runs: how each delivery attempt went (the faulty run has
# more of them, leases and retry times are the real clock's). Compared instead: each
# notice queued once, sent once, received once.
DELIVERY = (
    "billtrail:Notification.DeliveryAttempted",
    "billtrail:Notification.DeliveryFailed",
    "billtrail:Notification.Sent",
    # Each run of a day's sweep records its share; compared: the day's sums.
    "billtrail:PastDueSweeps",
)


class Simulation:
    def __init__(
        self,
        plan: WorldPlan,
        database_url: str,
        directory: Path,
        faults: Faults | None,
        stack: ExitStack,
    ) -> None:
        self.plan = plan
        self.faults = faults
        self.directory = directory
        self.stack = stack
        self.started = time.monotonic()
        directory.mkdir(parents=True, exist_ok=True)
        self.sandbox: RunningSandbox = stack.enter_context(
            start_sandbox(seed=f"billtrail-sim-{plan.seed}", webhook_retry_delays=FAST_RETRIES)
        )
        http = FastRetries(timeout=30)
        stack.callback(http.close)
        self.client = stripe.StripeClient(
            self.sandbox.api_key,
            base_addresses={"api": self.sandbox.url},
            max_network_retries=3,
            http_client=http,
        )
        endpoint = self.client.v1.webhook_endpoints.create(
            {"url": "http://127.0.0.1:9/not-yet", "enabled_events": cast(Any, EVENT_TYPES)}
        )
        self.smtp: SmtpServer = stack.enter_context(smtp_server(SmtpHandler()))
        self.env = {
            "BILLTRAIL_DATABASE_URL": database_url,
            "BILLTRAIL_SEAL_KEY": SEAL_KEY,
            "BILLTRAIL_SECRET_KEY": SECRET_KEY,
            "BILLTRAIL_VAR_DIR": str(directory / "var"),
            "BILLTRAIL_ADMIN_EMAILS": ADMIN_EMAIL,
            "BILLTRAIL_SMTP_URL": self.smtp.url,
            "BILLTRAIL_TIMEZONE": noon_zone(datetime.now(UTC)),
            "STRIPE_API_KEY": self.sandbox.api_key,
            "STRIPE_API_BASE": self.sandbox.url,
            "STRIPE_WEBHOOK_SECRET": str(endpoint.secret),
        }
        self.settings = Settings.from_env(self.env)
        self.clock = SimClock(STORY_STARTS)
        self.ledger = bootstrap.ledger(self.settings, clock=self.clock)
        stack.callback(self.ledger.close)
        self.processes: list[Process] = []
        stack.callback(self._kill_leftovers)
        app = create_app(self.ledger, self.client, self.settings, start_worker=False)
        stack.callback(shutdown, app)
        server = stack.enter_context(LoopbackServer(app))
        self.client.v1.webhook_endpoints.update(endpoint.id, {"url": server.webhook_url})
        self.clocks: EntityClocks | None = None
        self.slept: list[float] = []
        self.runs = 0
        self.step = 0
        self.sync_events_stored = 0
        self.projections: Process | None = None
        self.projections_down: str | None = None  # where the runner was killed

    # helpers ---------------------------------------------------------------------

    @property
    def control(self) -> SandboxControl:
        return self.sandbox.control

    def process(self, *args: str) -> Process:
        env = {**os.environ, **self.env}
        p = Process(list(args), env, self.directory / f"{args[0]}-{len(self.processes)}.log")
        self.processes.append(p)
        return p

    def _kill_leftovers(self) -> None:
        for p in self.processes:
            if p.alive():
                p.kill9()

    def outbox(self, after_call: AfterCall | None) -> Outbox:
        self.runs += 1
        source = Source(SourceKind.CLI, f"simulation/{self.runs}", "ops")
        return Outbox(
            self.ledger, self.client, source, after_call=after_call, sleep=self.slept.append
        )

    def outbound(
        self,
        where: str,
        action: Callable[[AfterCall | None], object],
        crash_keys: list[str],
        paths: list[str],
        *,
        surely_crash: bool = False,
    ) -> None:
        """An operator's command against Stripe. In the faulty run: HTTP faults armed
        on `paths`, maybe a crash right after Stripe answered a request whose key
        starts with one of `crash_keys`, then the command again (and again while
        Stripe stays unavailable), as an operator would."""
        f = self.faults
        if f is not None:
            f.http(self.control, where, paths)
            key = f.crash(crash_keys, surely=surely_crash)
            if key is not None:
                hook, crashed = crash_once(key)
                try:
                    action(hook)
                except Crash:
                    f.note(where, f"crashed after Stripe answered {crashed[0]}; run again")
                except UNAVAILABLE as exc:
                    f.note(where, f"stopped: {type(exc).__name__}; run again")
        for _ in range(5):
            try:
                action(None)
                break
            except UNAVAILABLE as exc:
                # The command's answer: "Stripe answered ...; run it again".
                if f is None:
                    raise
                f.note(where, f"stopped: {type(exc).__name__}; run again")
        else:
            raise AssertionError(f"{where}: Stripe unavailable five times in a row")
        self.control.clear_faults()

    def settle_and_apply(self, where: str) -> None:
        """Wait until the sandbox delivered (or gave up) every webhook, then process
        the inbox, as the worker would at a quiet moment (faulty: with the re-reads
        failing or slow)."""
        settled(self.sandbox, DEADLINE)
        if self.faults is not None:
            self.faults.reads(self.control, where)
        drain(self.ledger, self.client)
        self.control.clear_faults()

    def at(self, moment: datetime, entity_ids: list[str] | None = None) -> None:
        self.clock.set(moment)
        assert self.clocks is not None
        self.clocks.advance(moment, entity_ids)

    def world_key(self, what: str) -> stripe.RequestOptions:
        return {"idempotency_key": f"world/{what}"}

    # the world ---------------------------------------------------------------------

    def build(self) -> None:
        self.clock.set(STORY_STARTS)
        for e in self.plan.entities:
            self.ledger.register_entity(
                e.name, e.kind, ADMIN, entity_id=e.entity_id, timezone=e.zone, emails=[e.email]
            )
            self.ledger.set_rate(e.entity_id, e.price, "usd", FIRST_DAY, "contract", ADMIN)
            if e.kind == "organization":
                self.ledger.add_fixed_fee(
                    e.entity_id,
                    "platform",
                    "monthly_minimum",
                    "Platform fee",
                    Decimal("49.00"),
                    FIRST_DAY,
                    ADMIN,
                )
        if self.faults is not None:
            self.projections = self.process("projections", "run", "--interval", "0.05")
        self.clock.set(OPENING)
        zones = {e.entity_id: ZoneInfo(e.zone) for e in self.plan.entities}
        self.clocks = EntityClocks.create(self.client, zones, FIRST_DAY)
        clocks = self.clocks.clocks
        self.outbound(
            "stripe push (customers)",
            lambda hook: push_customers(self.outbox(hook), test_clocks=clocks),
            ["billtrail/customer/"],
            ["/v1/customers"],
        )
        for entity in self.ledger.entities():
            self.card(entity)
        self.outbound(
            "stripe push",
            lambda hook: push_all(self.outbox(hook), terms=self.terms, test_clocks=clocks),
            ["billtrail/price/", "billtrail/subscription/", "billtrail/meter/"],
            ["/v1/prices", "/v1/subscriptions", "/v1/billing/meters", "/v1/products"],
        )
        self.settle_and_apply("first invoices")
        steps: list[tuple[datetime, int, str, int, datetime]] = []
        for e in self.plan.entities:
            steps.append((self.period_end(e.entity_id), len(steps), e.entity_id, 1, OPENING))
        heapq.heapify(steps)
        while steps:
            end, _, entity_id, k, start = heapq.heappop(steps)
            self.period_ends(entity_id, k, start, end)
            if k < self.plan.size.months:
                nxt = self.period_end(entity_id)
                heapq.heappush(steps, (nxt, 1000 * k + len(steps), entity_id, k + 1, end))
        self.close_books()

    def terms(self, entity: BillableEntity) -> BillingTerms:
        if self.plan.entity(entity.entity_id).pays == "transfer":
            return BillingTerms("send_invoice", TRANSFER_DAYS)
        return CHARGE_AUTOMATICALLY

    def card(self, entity: BillableEntity, token: str = "pm_card_visa") -> None:
        """The customer's card on file (the customer's doing in Stripe)."""
        customer = entity.stripe_customer_id
        assert customer is not None
        what = f"{entity.entity_id}/{token}"
        pm = self.client.v1.payment_methods.attach(
            token, {"customer": customer}, self.world_key(f"card/{what}")
        )
        self.client.v1.customers.update(
            customer,
            {"invoice_settings": {"default_payment_method": pm.id}},
            self.world_key(f"default-card/{what}"),
        )

    def period_end(self, entity_id: str) -> datetime:
        subscription_id = subscription_of(self.outbox(None), entity_id)
        assert subscription_id is not None
        subscription = self.client.v1.subscriptions.retrieve(subscription_id)
        return datetime.fromtimestamp(subscription.items.data[0].current_period_end, UTC)

    def period_ends(self, entity_id: str, k: int, start: datetime, end: datetime) -> None:
        """The provider's calls file arrives and is imported, usage is pushed before
        Stripe finalizes the renewal (an hour after the period end), Stripe charges
        it, the webhooks come back; a customer paying by transfer pays what it owes."""
        where = f"{entity_id} period {k}"
        zone = ZoneInfo(self.plan.entity(entity_id).zone)
        first, last = start.astimezone(zone).date(), end.astimezone(zone).date()
        self.clock.set(end + timedelta(minutes=20))
        if k == 1 and self.plan.entity(entity_id).pays == "failing card":
            # The card on file starts failing: every renewal is declined, then dunned.
            self.card(self.ledger.entity(entity_id), "pm_card_chargeCustomerFail")
        by_day = self.plan.calls[entity_id]
        rows = [r for day in sorted(by_day) if first <= day < last for r in by_day[day]]
        path = self.directory / f"calls-{entity_id}-{k}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["call_id", "entity_id", "started_at", "duration_seconds"])
            writer.writerows(rows)
        self.import_calls(path)
        if k > 1:  # the operator imports last period's file again: it records nothing
            self.import_calls(self.directory / f"calls-{entity_id}-{k - 1}.csv")
        self.restart_projections()
        if self.faults is not None and self.step == self.faults.kill_projections_at:
            self.kill_projections(where)
        self.at(end + timedelta(minutes=30), [entity_id])
        self.outbound(
            f"{where}: usage push",
            lambda hook: push_usage(self.outbox(hook), entity_ids=[entity_id]),
            [f"billtrail/usage/{entity_id}/"],
            ["/v1/billing/meter_events"],
            surely_crash=self.faults is not None and self.step == self.faults.crash_usage_at,
        )
        if self.faults is not None:
            self.faults.webhooks(self.control, where)
        self.at(end + timedelta(hours=2), [entity_id])
        self.settle_and_apply(where)
        self.corrections(entity_id, k, first)
        if self.plan.entity(entity_id).pays == "transfer":
            self.pay_by_transfer(entity_id, k)
        self.step += 1

    def corrections(self, entity_id: str, k: int, first: date) -> None:
        """An admin's corrections, each through the outbound adapter: the transfer
        payer's first usage invoice billed at a rate corrected late (voided and
        replaced), the card payer's calls sent twice credited, the failing card's
        oldest open invoice written off after its dunning."""
        pays = self.plan.entity(entity_id).pays
        where = f"{entity_id} period {k}"
        actor = "ana@billtrail.example"
        keys = ["billtrail/correction/"]
        paths = ["/v1/invoices", "/v1/invoiceitems", "/v1/credit_notes"]
        if pays == "transfer" and k == 2:
            wrong = self.usage_invoice(entity_id, first - timedelta(days=1))
            lower = self.plan.entity(entity_id).price - Decimal("0.0010")
            revision = RateRevision(lower, FIRST_DAY)
            self.outbound(
                f"{where}: wrong-rate correction",
                lambda hook: correct_wrong_rate(
                    self.outbox(hook),
                    wrong.stripe_id,
                    reason="discount signed late",
                    actor=actor,
                    revision=revision,
                ),
                keys,
                paths,
            )
        elif entity_id == self.plan.resent_entity and k == 2:
            invoice = self.usage_invoice(entity_id, self.plan.resent_day)
            self.outbound(
                f"{where}: credit for calls sent twice",
                lambda hook: credit_duplicate_calls(
                    self.outbox(hook),
                    invoice.stripe_id,
                    self.plan.resent,
                    reason="the provider sent a day twice",
                    actor=actor,
                ),
                keys,
                paths,
            )
        elif pays == "failing card" and k == self.plan.size.months:
            unpaid = [i for i in self.ledger.invoices() if i.entity_id == entity_id]
            oldest = min(
                (i for i in unpaid if i.status is Status.OPEN),
                key=lambda i: i.issue_date or FIRST_DAY,
            )
            self.outbound(
                f"{where}: write-off",
                lambda hook: write_off(
                    self.outbox(hook), oldest.stripe_id, reason="never paid", actor=actor
                ),
                keys,
                paths,
            )
        else:
            return
        self.settle_and_apply(f"{where}: after the correction")

    def usage_invoice(self, entity_id: str, day: date) -> Invoice:
        """The entity's invoice (not void) that bills the usage of `day`."""
        for invoice in self.ledger.invoices():
            if invoice.entity_id != entity_id or invoice.status is Status.VOID:
                continue
            for line in invoice.lines:
                if line.kind == "usage" and day in (line.period or invoice.period):
                    return invoice
        raise LookupError(f"no invoice of {entity_id} bills {day}")

    def import_calls(self, path: Path) -> None:
        known = {e.entity_id: EntityInfo(e.timezone, e.archived) for e in self.ledger.entities()}
        import_calls(self.ledger, path, known, self.clock(), actor="simulation")

    def pay_by_transfer(self, entity_id: str, k: int) -> None:
        """Settle the open invoices of earlier periods (those of `unpaid_periods`
        stay open: they become past due at the end)."""
        newest = max(
            (i for i in self.ledger.invoices() if i.entity_id == entity_id),
            key=lambda i: i.issue_date or FIRST_DAY,
        )
        paid = False
        for invoice in self.ledger.invoices():
            if invoice.entity_id != entity_id or invoice.status is not Status.OPEN:
                continue
            if invoice.stripe_id == newest.stripe_id or k - 1 in self.plan.unpaid_periods:
                continue
            self.client.v1.invoices.pay(
                invoice.stripe_id,
                {"paid_out_of_band": True},
                self.world_key(f"transfer/{invoice.stripe_id}"),
            )
            paid = True
        if paid:
            self.settle_and_apply(f"{entity_id} pays by transfer")

    def close_books(self) -> None:
        """A week on (the failing card's dunning runs out) with, in the faulty run,
        every webhook lost for good; then `sync` repairs what was lost."""
        assert self.clocks is not None
        if self.faults is not None:
            self.control.webhook_faults(drop=10_000)
            self.faults.note("closing week", "every webhook lost for good; sync")
        for e in self.plan.entities:
            self.at(self.clocks.now(e.entity_id) + timedelta(days=8), [e.entity_id])
        settled(self.sandbox, DEADLINE)
        self.control.clear_faults()
        if self.faults is None:
            process_pending(self.ledger, self.client)
        report = run_sync(self.ledger, self.client)
        self.sync_events_stored = report.events_stored

    # processes ---------------------------------------------------------------------

    def kill_projections(self, where: str) -> None:
        """kill -9 of the runner while it follows the log; it stays down for the rest
        of the step (the log grows), then a runner taking two events per transaction
        is killed again half way through catching up, and a third one follows on."""
        assert self.faults is not None
        assert self.projections is not None
        self.projections.kill9()
        self.faults.note(where, "kill -9 of `billtrail projections run` while following")
        self.projections = None
        self.projections_down = where

    def restart_projections(self) -> None:
        where = self.projections_down
        if self.faults is None or where is None:
            return
        self.projections_down = None
        reader = Runner(self.ledger)
        before = min(reader.positions().values())
        head = self.ledger.recorder.max_notification_id() or 0
        slow = self.process("projections", "run", "--interval", "0.05", "--page", "2")
        wait_for(
            lambda: not slow.alive() or min(reader.positions().values()) > before,
            "the runner to resume",
            poll=0.001,
        )
        slow.kill9()
        at = min(reader.positions().values())
        self.faults.note(
            where,
            f"kill -9 of `billtrail projections run` catching up (at {at} of {before}..{head})",
        )
        self.projections = self.process("projections", "run", "--interval", "0.05")

    def finish_projections(self) -> bool | None:
        """Wait until the runner process has caught up with the log, stop it, then
        compare its read models with a rebuild from the log into fresh tables."""
        self.restart_projections()
        if self.projections is None:
            return None
        runner = Runner(self.ledger)
        head = self.ledger.recorder.max_notification_id() or 0
        wait_for(lambda: min(runner.positions().values()) >= head, "the projections to catch up")
        assert self.projections.stop() == 0, self.projections.log.read_text()
        followed = dump_tables(runner)
        runner.rebuild()
        return dump_tables(runner) == followed

    def notices_due(self) -> None:
        """The past-due sweep and its notices. Fault-free: the scheduler's jobs once,
        in process. Faulty: two `billtrail scheduler` processes, the SMTP
        server refusing mail for a while, the first process killed with kill -9, a
        new one started; what is left to retry is delivered by the same jobs on a
        clock moved past the backoff and the lease (minutes of real time)."""
        f = self.faults
        if f is None:
            jobs = bootstrap.scheduler_jobs(self.settings)
            try:
                jobs.start_up()
            finally:
                jobs.ledger.close()
            return
        where = "scheduler"
        if f.outage_from_start:
            self.smtp.refuse = OUTAGE
            f.note(where, "SMTP server refusing mail (451) from the start")
        first = [self.process("scheduler") for _ in range(2)]
        f.note(where, "two `billtrail scheduler` processes at once")
        marked = ["billtrail:Invoice.BecamePastDue"]
        attempted = ["billtrail:Notification.DeliveryAttempted"]
        if f.kill_scheduler_when == "mid-sweep":
            wait_for(lambda: self._count(marked) > 0, "an invoice past due", poll=0.001)
        elif f.kill_scheduler_when == "mid-delivery" and not f.outage_from_start:
            # Right after the SMTP server accepted a message: likely before the
            # scheduler recorded it as sent (then it goes again, same Message-ID).
            wait_for(lambda: len(self.smtp.received) > 0, "a message accepted", poll=0.0005)
        elif f.kill_scheduler_when == "mid-delivery":
            wait_for(lambda: self._count(attempted) > 0, "a delivery attempt", poll=0.001)
        else:
            wait_for(lambda: first[0].said("running"), "the scheduler to run")
        first[0].kill9()
        f.note(
            where,
            f"kill -9 of a `billtrail scheduler` ({f.kill_scheduler_when}: "
            f"{self._count(marked)} invoices past due, day recorded: "
            f"{self.ledger.last_past_due_sweep() is not None}, "
            f"{self._count(attempted)} delivery attempts)",
        )
        if not f.outage_from_start:
            self.smtp.refuse = OUTAGE
            f.note(where, "SMTP server refusing mail (451) after the kill")
        wait_for(lambda: first[1].said("running"), "the other scheduler to run")
        assert first[1].stop() == 0, first[1].log.read_text()
        # After a kill mid-sweep the notices may not have been tried yet (on
        # PostgreSQL the other scheduler leaves the sweep's notices to the next
        # minute): the outage then lasts through the restart, which meets it.
        if f.outage_ends_before_restart and f.kill_scheduler_when != "mid-sweep":
            self.smtp.refuse = None
            f.note(where, "SMTP server back before the restart")
        again = self.process("scheduler")
        wait_for(lambda: again.said("running"), "the restarted scheduler")
        assert again.stop() == 0, again.log.read_text()
        f.note(where, "`billtrail scheduler` started again, then stopped")
        if self.smtp.refuse:
            self.smtp.refuse = None
            f.note(where, "SMTP server back after the restart")
        later = FastForward(datetime.now(UTC))
        jobs = bootstrap.scheduler_jobs(self.settings, clock=later)
        try:
            for _ in range(12):
                if not self.ledger.notification_outbox().pending():
                    break
                later.now += timedelta(minutes=11)  # past a backoff and a lease
                jobs.deliver_outbox()
        finally:
            jobs.ledger.close()
        twice = sum(1 for n in Counter(self.smtp.handler.message_ids()).values() if n > 1)
        if twice:
            f.note(where, f"{twice} message(s) sent again after an interrupted attempt")

    def _sweeps(self) -> dict[date, tuple[int, int]]:
        days: dict[date, tuple[int, int]] = {}
        for e in self.ledger.events_of_topics(["billtrail:PastDueSweeps.Completed"]):
            marked, queued = days.get(e.day, (0, 0))
            days[e.day] = (marked + e.marked, queued + e.queued)
        return days

    def _count(self, topics: list[str]) -> int:
        return sum(1 for _ in self.ledger.events_of_topics(topics))

    def verify(self) -> tuple[int, str]:
        """`billtrail verify` as its own process: exit code, stdout and stderr."""
        done = subprocess.run(
            [sys.executable, "-m", "billtrail", "verify"],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    # the outcome --------------------------------------------------------------------

    def outcome(self) -> Outcome:
        self.notices_due()
        read_models = self.finish_projections()
        customers = {e.stripe_customer_id: e.entity_id for e in self.ledger.entities()}
        stripe_invoices: dict[str, list[tuple[Any, ...]]] = {}
        for customer, entity_id in customers.items():
            found = self.client.v1.invoices.list({"customer": str(customer), "limit": 100})
            stripe_invoices[entity_id] = sorted(
                (i.id, i.status, i.total, i.amount_paid, i.attempt_count) for i in found.data
            )
        ledger_invoices: dict[str, list[tuple[Any, ...]]] = {}
        past_due: set[str] = set()
        for invoice in self.ledger.invoices():
            status = invoice.status
            if status is Status.PAST_DUE:
                past_due.add(invoice.stripe_id)
                status = Status.OPEN  # Stripe knows no past due: billtrail's own state
            ledger_invoices.setdefault(invoice.entity_id, []).append(
                (invoice.stripe_id, status.value, invoice.total)
            )
        meter: dict[tuple[str, int], list[Decimal]] = {}
        for event in self.sandbox.sandbox.store.all("billing.meter_event"):
            if not event["_cancelled"]:
                key = (customers[event["_customer"]], int(event["timestamp"]))
                meter.setdefault(key, []).append(Decimal(event["_value"]))
        pushed: dict[tuple[str, int], int] = {}
        for entity_id, by_day in self.plan.calls.items():
            zone = ZoneInfo(self.plan.entity(entity_id).zone)
            for day, rows in by_day.items():
                if self.ledger.usage(entity_id, day) is not None:
                    pushed[(entity_id, meter_timestamp(day, zone))] = len(rows)
        notices: dict[str, tuple[str, str, str, str]] = {}
        interrupted: set[str] = set()
        for invoice in self.ledger.invoices():
            for note in self.ledger.notifications_of_invoice(invoice.stripe_id):
                notices[message_id(note)] = (
                    invoice.stripe_id,
                    note.channel,
                    note.recipient,
                    note.status.value,
                )
                if self._was_interrupted(note):
                    interrupted.add(message_id(note))
        deliveries = self.control.deliveries()
        return Outcome(
            facts=facts(self.ledger, skip=HOW_IT_ARRIVED + DELIVERY),
            histories=invoice_histories(self.ledger),
            stripe_invoices=stripe_invoices,
            ledger_invoices={k: sorted(v) for k, v in ledger_invoices.items()},
            meter_events=meter,
            pushed_calls=pushed,
            notices=notices,
            interrupted=interrupted,
            received=Counter(self.smtp.handler.message_ids()),
            past_due=past_due,
            read_models_equal_rebuild=read_models,
            verify=self.verify(),
            sync_events_stored=self.sync_events_stored,
            webhooks_lost=sum(1 for d in deliveries if d["status"] == "failed"),
            webhooks_duplicated=sum(1 for d in deliveries for a in d["attempts"] if a["duplicate"]),
            replayed_requests=sum(1 for r in self.control.requests() if r["replayed"]),
            delivery_failures=self._count(["billtrail:Notification.DeliveryFailed"]),
            sweeps=self._sweeps(),
            seconds=time.monotonic() - self.started,
        )

    def _was_interrupted(self, note: Notification) -> bool:
        return any(getattr(e, "interrupted", False) for e in self.ledger.history(note.id))


class FastForward:
    """The clock of the jobs that deliver the retries: the real time moved on."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return max(self.now, datetime.now(UTC))


def run_world(
    plan: WorldPlan, database_url: str, directory: Path, faults: Faults | None
) -> Outcome:
    with ExitStack() as stack:
        simulation = Simulation(plan, database_url, directory, faults, stack)
        simulation.build()
        return simulation.outcome()
