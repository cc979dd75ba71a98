"""A hypothesis state machine over the ledger, its Stripe inbound adapter and its read
models, on both backends: entities are registered, rates set and revised, call files
imported (with duplicates, conflicts and the same file again), Stripe moves invoices
through its states (created, revised, finalized, payment failed, paid, voided,
uncollectible) and its webhooks arrive in any order, some twice, some never, through
the real endpoint function (`handle_webhook`) and the real processing pass
(`process_pending`, reading invoices from this model's Stripe), and `sync`'s listing
repairs what was lost; the clock moves, the past-due sweep runs, the projections catch
up (all, or some). Two ledger processes share the database, each with its own cache,
and either may run any command. In any order of all that, after every step:

- the ledger holds what the model says (calls and duplicates per entity and local day,
  rates, each invoice's status, totals, number and due date);
- every aggregate replayed from the stored log equals the live one (no state that
  exists only in the application's cache);
- the read models, once caught up, say what the ledger says (and, at the end, what a
  rebuild from the log says);
- a redelivered webhook and a re-imported file record nothing;
- the seal verifies, against the checkpoint of the step before.
"""

from __future__ import annotations

import itertools
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import psycopg
import pytest
from eventsourcing.application import project_aggregate
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from adapters.stripe.processing import observe, process_pending, read_and_observe, settle
from adapters.stripe.testing import event_body, sign
from adapters.stripe.webhooks import DirectReceiver, handle_webhook
from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.entities.domain import BillableEntity
from ledger.errors import EntityExists
from ledger.invoices.application import InvoiceSnapshot
from ledger.invoices.domain import Invoice, Totals
from ledger.rates.domain import Rate
from ledger.seal import Link
from ledger.sources import Source, SourceKind
from ledger.stripe_inbox.domain import Disposition
from ledger.usage.domain import Usage
from ledger.usage.importer import EntityInfo, import_calls
from ledger.values import Period
from projections.entities import get_entity
from projections.invoices import find_invoice
from projections.rates import rate_of
from projections.runner import Runner
from projections.testing import dump_tables
from projections.usage import usage_for_period
from scheduler.sweep import run_past_due_sweep

SEAL_KEY = "state-machine-seal-key-0123456789abcdef"
WEBHOOK_SECRET = "whsec_state_machine_tests"
ADMIN = Source("admin", "state-machine", actor="ops@billtrail.example")
START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
# Calls start in the ten days before START: never in the future of the clock.
CALLS_FROM = START - timedelta(days=10)

ENTITY_IDS = ["acme", "beta", "gamma"]
ZONES = ["UTC", "Europe/Paris", "America/Chicago", "Pacific/Auckland"]
PRICES = [Decimal("0.0100"), Decimal("0.0125"), Decimal("0.0200")]
RATE_DAYS = [date(2025, 12, 1), date(2025, 12, 25), date(2026, 1, 1), date(2026, 2, 1)]
CALL_IDS = [f"call-{n}" for n in range(12)]
# What Stripe may do to an invoice in each status (its event's type names the move).
MOVES = {
    "draft": ["invoice.updated", "invoice.finalized"],
    "open": [
        "invoice.payment_failed",
        "invoice.paid",
        "invoice.voided",
        "invoice.marked_uncollectible",
    ],
    "uncollectible": ["invoice.paid", "invoice.voided"],
}

PROCESS = st.sampled_from([0, 1])

# Bounds on what only grows, so the steps go to moving invoices through their states.
MAX_RATE_VERSIONS = 5
MAX_FILES = 4
MAX_INVOICES = 6

# Per backend: examples and steps, so one run stays well under 90 s on a shared box.
EXAMPLES = {"sqlite": 40, "postgres": 15}
STEPS = {"sqlite": 60, "postgres": 50}


class Clock:
    """Moves only when the machine moves it."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


# The model's Stripe -------------------------------------------------------------------


@dataclass
class StripeInvoice:
    stripe_id: str
    entity_id: str
    total: Decimal
    status: str = "draft"
    number: str | None = None
    issue_date: date | None = None
    due_date: date | None = None
    attempt_count: int = 0
    paid_at: datetime | None = None
    voided_at: datetime | None = None
    uncollectible_at: datetime | None = None

    def snapshot(self) -> InvoiceSnapshot:
        tax = (self.total / 5).quantize(Decimal("0.01"))
        return InvoiceSnapshot(
            stripe_id=self.stripe_id,
            entity_id=self.entity_id,
            currency="usd",
            period=Period(date(2025, 12, 1), date(2026, 1, 1)),
            status=self.status,
            lines=[],
            totals=Totals(self.total - tax, tax, self.total),
            number=self.number,
            issue_date=self.issue_date,
            due_date=self.due_date,
            attempt_count=self.attempt_count,
            last_failure="card_declined" if self.attempt_count else "",
            amount_paid=self.total if self.status == "paid" else Decimal(0),
            paid_at=self.paid_at,
            voided_at=self.voided_at,
            marked_uncollectible_at=self.uncollectible_at,
        )


@dataclass(frozen=True)
class Webhook:
    event_id: str
    body: bytes
    invoice_id: str


class ModelStripeReader:
    """What `process_pending` reads an invoice with: the model's Stripe, as it is now."""

    def __init__(self, invoices: dict[str, StripeInvoice]) -> None:
        self.invoices = invoices
        self.reads: Counter[str] = Counter()

    def read(self, invoice_id: str) -> InvoiceSnapshot:
        self.reads[invoice_id] += 1
        return self.invoices[invoice_id].snapshot()


class OvertakenReader(ModelStripeReader):
    """Reads as the model's Stripe is now; after its first read of `victim`, before
    the caller records it, runs `meanwhile` (Stripe moves it, another reader records)."""

    def __init__(
        self, invoices: dict[str, StripeInvoice], victim: str, meanwhile: Callable[[], None]
    ) -> None:
        super().__init__(invoices)
        self.victim = victim
        self.meanwhile: Callable[[], None] | None = meanwhile

    def read(self, invoice_id: str) -> InvoiceSnapshot:
        snapshot = super().read(invoice_id)
        if invoice_id == self.victim and self.meanwhile is not None:
            run, self.meanwhile = self.meanwhile, None
            run()
        return snapshot


# What the ledger should hold ----------------------------------------------------------


@dataclass
class ExpectedInvoice:
    """The ledger's view: the Stripe state last observed, plus past due."""

    observed: StripeInvoice
    past_due: bool = False

    @property
    def status(self) -> str:
        if self.observed.status == "open" and self.past_due:
            return "past_due"
        return self.observed.status


@dataclass
class CallLine:
    call_id: str
    entity_id: str
    started_at: datetime
    duration: int

    @property
    def data(self) -> tuple[str, datetime, int]:
        return (self.entity_id, self.started_at, self.duration)


@dataclass
class Model:
    entities: dict[str, str] = field(default_factory=dict)  # id -> time zone
    rates: dict[str, list[tuple[Decimal, date]]] = field(default_factory=dict)
    calls: dict[str, tuple[str, datetime, int]] = field(default_factory=dict)
    counted: Counter[tuple[str, date]] = field(default_factory=Counter)
    duplicates: Counter[tuple[str, date]] = field(default_factory=Counter)
    invoices: dict[str, ExpectedInvoice] = field(default_factory=dict)

    def local_day(self, line: CallLine) -> date:
        return line.started_at.astimezone(ZoneInfo(self.entities[line.entity_id])).date()

    def rate_on(self, entity_id: str, day: date) -> Decimal | None:
        best: tuple[Decimal, date] | None = None
        for price, start in self.rates.get(entity_id, []):
            if start <= day and (best is None or start >= best[1]):
                best = (price, start)
        return None if best is None else best[0]


# The machine ---------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    backend: ClassVar[str] = "sqlite"
    pg_base: ClassVar[str | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory(prefix="billtrail-machine-")
        self.schema: str | None = None
        if self.backend == "sqlite":
            url = f"sqlite:///{Path(self.tmp.name) / 'billtrail.db'}"
        else:
            assert self.pg_base is not None
            self.schema = f"m_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(self.pg_base, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{self.schema}"')
            url = f"{self.pg_base}?schema={self.schema}"
        self.clock = Clock()
        config = Settings.from_env(
            {
                "BILLTRAIL_DATABASE_URL": url,
                "BILLTRAIL_SEAL_KEY": SEAL_KEY,
                "BILLTRAIL_VAR_DIR": str(Path(self.tmp.name) / "var"),
            }
        )
        # Two processes on one database (the web process's inbox worker, the scheduler,
        # an operator's command), each with its own cache of aggregates; the
        # invariants read through the first.
        self.processes = [bootstrap.ledger(config, clock=self.clock) for _ in range(2)]
        self.ledger: Ledger = self.processes[0]
        self.runner = Runner(self.ledger)
        self.model = Model()
        self.stripe: dict[str, StripeInvoice] = {}
        self.reader = ModelStripeReader(self.stripe)
        self.undelivered: list[Webhook] = []
        self.delivered: list[Webhook] = []
        self.unprocessed: set[str] = set()  # invoices with a stored, unprocessed event
        self.files: list[Path] = []
        self.checkpoint: Link | None = None
        self.ids = itertools.count(1)
        self.receivers = [DirectReceiver(p) for p in self.processes]

    def teardown(self) -> None:
        try:
            # The read models fed step by step equal a rebuild from the whole log.
            self.runner.catch_up()
            fed = dump_tables(self.runner)
            self.runner.rebuild()
            assert dump_tables(self.runner) == fed
        finally:
            for process in self.processes:
                process.close()
            if self.schema is not None:
                assert self.pg_base is not None
                with psycopg.connect(self.pg_base, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
            self.tmp.cleanup()

    def head(self) -> int:
        return self.ledger.recorder.max_notification_id() or 0

    # Entities and rates ---------------------------------------------------------------

    @initialize(zone=st.sampled_from(ZONES))
    def first_entity(self, zone: str) -> None:
        self.register_entity("acme", zone)

    @rule(entity_id=st.sampled_from(ENTITY_IDS), zone=st.sampled_from(ZONES))
    def register_entity(self, entity_id: str, zone: str) -> None:
        if entity_id in self.model.entities:
            before = self.head()
            with pytest.raises(EntityExists):
                self.ledger.register_entity(
                    entity_id.title(), "company", ADMIN, entity_id=entity_id, timezone=zone
                )
            assert self.head() == before
            return
        self.ledger.register_entity(
            entity_id.title(), "company", ADMIN, entity_id=entity_id, timezone=zone
        )
        self.model.entities[entity_id] = zone

    @precondition(lambda self: sum(map(len, self.model.rates.values())) < MAX_RATE_VERSIONS)
    @rule(
        data=st.data(),
        price=st.sampled_from(PRICES),
        effective_from=st.sampled_from(RATE_DAYS),
        by=PROCESS,
    )
    def set_rate(self, data: st.DataObject, price: Decimal, effective_from: date, by: int) -> None:
        entity_id = data.draw(st.sampled_from(sorted(self.model.entities)), label="entity")
        versions = self.model.rates.setdefault(entity_id, [])
        unchanged = any(start == effective_from for _, start in versions) and (
            self.model.rate_on(entity_id, effective_from) == price
        )
        changed = self.processes[by].set_rate(
            entity_id, price, "usd", effective_from, "contract", ADMIN
        )
        assert changed == (not unchanged)
        if changed:
            versions.append((price, effective_from))

    # Calls ------------------------------------------------------------------------------

    @precondition(lambda self: len(self.files) < MAX_FILES)
    @rule(data=st.data(), size=st.integers(min_value=1, max_value=8), by=PROCESS)
    def import_calls_file(self, data: st.DataObject, size: int, by: int) -> None:
        entities = sorted(self.model.entities)
        lines: list[CallLine] = []
        for _ in range(size):
            known = sorted(self.model.calls) + [ln.call_id for ln in lines]
            kind = data.draw(st.sampled_from(["new", "again", "conflict"]), label="kind")
            if kind != "new" and known:
                call_id = data.draw(st.sampled_from(known), label="known call")
                entity_id, started, duration = (
                    next((ln.data for ln in lines if ln.call_id == call_id), None)
                    or self.model.calls[call_id]
                )
                if kind == "conflict":
                    duration += 1
                lines.append(CallLine(call_id, entity_id, started, duration))
                continue
            lines.append(
                CallLine(
                    data.draw(st.sampled_from(CALL_IDS), label="call id"),
                    data.draw(st.sampled_from(entities), label="entity"),
                    CALLS_FROM
                    + timedelta(minutes=data.draw(st.integers(0, 10 * 24 * 60 - 1), label="at")),
                    data.draw(st.integers(0, 600), label="duration"),
                )
            )
        path = Path(self.tmp.name) / f"calls-{next(self.ids)}.csv"
        path.write_text(
            "call_id,entity_id,started_at,duration_seconds\n"
            + "".join(
                f"{ln.call_id},{ln.entity_id},{ln.started_at.isoformat()},{ln.duration}\n"
                for ln in lines
            )
        )
        expected = Counter[str]()
        for ln in lines:
            previous = self.model.calls.get(ln.call_id)
            key = (ln.entity_id, self.model.local_day(ln))
            if previous is None:
                self.model.calls[ln.call_id] = ln.data
                self.model.counted[key] += 1
                expected["recorded"] += 1
            elif previous == ln.data:
                self.model.duplicates[key] += 1
                expected["duplicates"] += 1
            else:
                expected["conflicts"] += 1
        report = self.import_file(path, by)
        assert report.invalid_count == 0, report.invalid
        assert (report.recorded, report.duplicates, len(report.conflicts)) == (
            expected["recorded"],
            expected["duplicates"],
            expected["conflicts"],
        )
        self.files.append(path)

    @precondition(lambda self: self.files)
    @rule(data=st.data(), by=PROCESS)
    def import_the_same_file_again(self, data: st.DataObject, by: int) -> None:
        path = data.draw(st.sampled_from(self.files), label="file")
        before = self.head()
        report = self.import_file(path, by)
        assert report.recorded == 0
        assert self.head() == before  # not even its duplicates are counted again

    def import_file(self, path: Path, by: int) -> Any:
        process = self.processes[by]
        known = {e.entity_id: EntityInfo(e.timezone, e.archived) for e in process.entities()}
        return import_calls(process, path, known, self.clock(), actor="machine")

    # Stripe moves an invoice; its webhook waits to be delivered -------------------------

    def stripe_event(self, invoice: StripeInvoice, event_type: str) -> None:
        event_id = f"evt_{next(self.ids):06d}"
        created = int(self.clock().timestamp())
        obj = {"id": invoice.stripe_id, "object": "invoice", "status": invoice.status}
        body = event_body(event_id, event_type, obj, created, indent=None)
        self.undelivered.append(Webhook(event_id, body, invoice.stripe_id))

    def invoices_in(self, *statuses: str) -> list[str]:
        return sorted(i for i, inv in self.stripe.items() if inv.status in statuses)

    @precondition(lambda self: len(self.stripe) < MAX_INVOICES)
    @rule(data=st.data(), cents=st.integers(min_value=100, max_value=100_000))
    def stripe_creates_a_draft(self, data: st.DataObject, cents: int) -> None:
        entity_id = data.draw(st.sampled_from(sorted(self.model.entities)), label="entity")
        invoice = StripeInvoice(f"in_{next(self.ids):06d}", entity_id, Decimal(cents) / 100)
        self.stripe[invoice.stripe_id] = invoice
        self.stripe_event(invoice, "invoice.created")

    @precondition(lambda self: self.invoices_in(*MOVES))
    @rule(data=st.data(), moves=st.integers(min_value=1, max_value=3))
    def stripe_moves_an_invoice(self, data: st.DataObject, moves: int) -> None:
        """A burst of changes Stripe's state machine allows from the invoice's status
        (finalized then paid, a failed payment then another...), one event each."""
        invoice = self.stripe[data.draw(st.sampled_from(self.invoices_in(*MOVES)))]
        self.move(data, invoice, moves)

    def move(self, data: st.DataObject, invoice: StripeInvoice, moves: int) -> None:
        for _ in range(moves):
            if invoice.status not in MOVES:
                return
            move = data.draw(st.sampled_from(MOVES[invoice.status]), label="move")
            now = self.clock()
            if move == "invoice.updated":
                invoice.total = Decimal(data.draw(st.integers(100, 100_000), label="cents")) / 100
            elif move == "invoice.finalized":
                invoice.status, invoice.number = "open", f"INV-{invoice.stripe_id[3:]}"
                invoice.issue_date = now.date()
                invoice.due_date = now.date() + timedelta(
                    days=data.draw(st.sampled_from([0, 1, 7, 30]), label="days to pay")
                )
            elif move == "invoice.payment_failed":
                invoice.attempt_count += 1
            elif move == "invoice.paid":
                invoice.status, invoice.paid_at = "paid", now
            elif move == "invoice.voided":
                invoice.status, invoice.voided_at = "void", now
            else:
                invoice.status, invoice.uncollectible_at = "uncollectible", now
            self.stripe_event(invoice, move)

    # Webhooks arrive in any order, some twice; processing runs now and then ------------

    def post(self, webhook: Webhook, by: int) -> dict[str, Any]:
        now = self.clock().timestamp()
        response = handle_webhook(
            webhook.body,
            sign(webhook.body, WEBHOOK_SECRET, timestamp=int(now)),
            secrets=[WEBHOOK_SECRET],
            receive=self.receivers[by],
            now=lambda: now,
        )
        assert response.status == 200, response.body
        return response.body

    @precondition(lambda self: self.undelivered)
    @rule(data=st.data())
    def webhooks_arrive(self, data: st.DataObject) -> None:
        """Some of the waiting webhooks, in any order (Stripe does not keep order)."""
        arriving = data.draw(
            st.lists(st.sampled_from(range(len(self.undelivered))), min_size=1, unique=True),
            label="arriving, in order",
        )
        for webhook in [self.undelivered[i] for i in arriving]:
            by = data.draw(PROCESS, label="received by")
            assert self.post(webhook, by) == {"received": webhook.event_id}
            self.delivered.append(webhook)
            self.unprocessed.add(webhook.invoice_id)
        self.undelivered = [w for i, w in enumerate(self.undelivered) if i not in arriving]
        # The inbox worker is woken by each stored webhook: often it runs right away.
        if data.draw(st.booleans(), label="processed at once"):
            self.processing_runs(data.draw(PROCESS, label="processed by"))

    @precondition(lambda self: self.delivered)
    @rule(data=st.data(), by=PROCESS)
    def a_webhook_arrives_again(self, data: st.DataObject, by: int) -> None:
        webhook = data.draw(st.sampled_from(self.delivered), label="redelivered")
        before = self.head()
        assert self.post(webhook, by) == {"received": webhook.event_id, "duplicate": True}
        assert self.head() == before

    @precondition(lambda self: self.unprocessed)
    @rule(by=PROCESS)
    def processing_runs(self, by: int) -> None:
        self.reader.reads.clear()
        process = self.processes[by]
        report = process_pending(process, None, reader=self.reader)  # type: ignore[arg-type]
        # Each invoice with waiting events is read once, however many are waiting.
        assert dict(self.reader.reads) == dict.fromkeys(self.unprocessed, 1)
        assert (report.failed, report.deferred) == (0, 0)
        for invoice_id in self.unprocessed:
            seen = replace(self.stripe[invoice_id])
            expected = self.model.invoices.get(invoice_id)
            if expected is None:
                self.model.invoices[invoice_id] = ExpectedInvoice(seen)
            else:
                expected.observed = seen
        self.unprocessed.clear()
        assert self.ledger.pending_stripe_events() == []

    def deliver_all_of(self, invoice_id: str, by: int) -> None:
        for webhook in [w for w in self.undelivered if w.invoice_id == invoice_id]:
            self.post(webhook, by)
            self.delivered.append(webhook)
            self.undelivered.remove(webhook)
        self.unprocessed.add(invoice_id)

    @precondition(lambda self: self.invoices_in(*MOVES))
    @rule(data=st.data(), by=PROCESS)
    def a_worker_is_overtaken(self, data: st.DataObject, by: int) -> None:
        """Two readers of one invoice interleave: `by`'s worker reads it, Stripe moves
        it and the other process's worker reads and records the move, and only then
        does the first record what it read: its older read must not win."""
        victim = data.draw(st.sampled_from(self.invoices_in(*MOVES)), label="overtaken on")
        if victim not in self.unprocessed:  # a move of it reaches `by`'s worker first
            self.move(data, self.stripe[victim], 1)
            self.deliver_all_of(victim, by)
        other = 1 - by

        def meanwhile() -> None:
            self.move(data, self.stripe[victim], data.draw(st.integers(1, 2), label="moves"))
            self.deliver_all_of(victim, other)
            process_pending(self.processes[other], None, reader=self.reader)  # type: ignore[arg-type]

        reader = OvertakenReader(self.stripe, victim, meanwhile)
        report = process_pending(self.processes[by], None, reader=reader)  # type: ignore[arg-type]
        assert (report.failed, report.deferred) == (0, 0)
        for invoice_id in self.unprocessed:
            seen = replace(self.stripe[invoice_id])
            expected = self.model.invoices.get(invoice_id)
            if expected is None:
                self.model.invoices[invoice_id] = ExpectedInvoice(seen)
            else:
                expected.observed = seen
        self.unprocessed.clear()
        assert self.ledger.pending_stripe_events() == []

    @precondition(lambda self: self.undelivered)
    @rule(data=st.data())
    def a_webhook_is_lost(self, data: st.DataObject) -> None:
        """Stripe gives up on a delivery: only a later event or `sync` brings it in."""
        self.undelivered.pop(data.draw(st.integers(0, len(self.undelivered) - 1)))

    @precondition(lambda self: self.stripe)
    @rule(by=PROCESS)
    def sync_lists_every_invoice(self, by: int) -> None:
        """`billtrail sync`'s listing: every invoice in Stripe observed as it is now,
        under the run's source, settling the events that wait for it (the same
        `observe` and `settle` as adapters.stripe.sync)."""
        process = self.processes[by]
        source = Source(SourceKind.SYNC_RUN, f"sync-{next(self.ids)}")
        waiting: dict[str, list[Any]] = {}
        for pending in process.pending_stripe_events(include_failed=True):
            waiting.setdefault(pending.invoice_id, []).append(pending)
        for invoice_id, invoice in sorted(self.stripe.items()):
            if invoice.status == "draft":  # as sync: a listed draft is read again
                found = read_and_observe(process, self.reader, invoice_id, source)
                assert found is not None
                outcome = found
            else:
                outcome = observe(process, invoice.snapshot(), source)
            assert outcome[0] is Disposition.PROCESSED, outcome
            if invoice_id in waiting:
                settle(process, waiting.pop(invoice_id), invoice_id, outcome, source)
            seen = replace(invoice)
            expected = self.model.invoices.get(invoice_id)
            if expected is None:
                self.model.invoices[invoice_id] = ExpectedInvoice(seen)
            else:
                expected.observed = seen
        assert waiting == {}
        self.unprocessed.clear()
        assert self.ledger.pending_stripe_events() == []

    # Time, the sweep, the read models -----------------------------------------------------

    @rule(hours=st.sampled_from([1, 24, 24 * 7, 24 * 20]), sweep=st.booleans())
    def time_passes(self, hours: int, sweep: bool) -> None:
        self.clock.now += timedelta(hours=hours)
        # The scheduler sweeps each new day (the rule below also runs it at any time).
        if sweep and self.model.invoices:
            self.the_past_due_sweep_runs(1)

    @precondition(lambda self: self.model.invoices)
    @rule(by=PROCESS)
    def the_past_due_sweep_runs(self, by: int) -> None:
        today = self.clock().date()
        outcome = run_past_due_sweep(self.processes[by], self.runner, today, ())
        expected = sorted(
            i
            for i, inv in self.model.invoices.items()
            if inv.status == "open"
            and inv.observed.due_date is not None
            and inv.observed.due_date < today
        )
        assert sorted(outcome.marked) == expected
        for invoice_id in expected:
            self.model.invoices[invoice_id].past_due = True

    @rule(names=st.sampled_from([None, ["invoices", "invoice_history"], ["usage", "rates"]]))
    def the_read_models_catch_up(self, names: list[str] | None) -> None:
        """All of them, or some (the others stay behind until a later catch-up)."""
        self.runner.catch_up(names)

    def read_models_behind(self) -> bool:
        head = self.head()
        return any(p < head for p in self.runner.positions().values())

    # Invariants --------------------------------------------------------------------------

    def aggregate_ids(self) -> list[Any]:
        ids = [BillableEntity.create_id(e) for e in self.model.entities]
        ids += [Rate.create_id(e) for e in self.model.rates if self.model.rates[e]]
        ids += [Usage.create_id(e, d) for e, d in self.model.counted | self.model.duplicates]
        ids += [Invoice.create_id(i) for i in self.model.invoices]
        return ids

    @invariant()
    def the_ledger_its_replay_and_the_model_agree(self) -> None:
        live: dict[Any, Any] = {}
        for aggregate_id in self.aggregate_ids():
            # Live: through the process's cache, fast-forwarded as commands load them;
            # replayed: from every stored event, nothing cached.
            live[aggregate_id] = self.ledger.repository.get(aggregate_id)
            replayed = project_aggregate(None, self.ledger.events.get(aggregate_id))
            assert vars(replayed) == vars(live[aggregate_id]), aggregate_id
        for entity_id, zone in self.model.entities.items():
            assert live[BillableEntity.create_id(entity_id)].timezone == zone
        for entity_id, versions in self.model.rates.items():
            if not versions:
                continue
            rate = live[Rate.create_id(entity_id)]
            assert [(v.unit_price, v.effective_from) for v in rate.versions] == versions
            for day in RATE_DAYS:
                found = rate.version_on(day)
                price = self.model.rate_on(entity_id, day)
                assert (found.unit_price if found else None) == price, (entity_id, day)
        for key in self.model.counted | self.model.duplicates:
            usage = live[Usage.create_id(*key)]
            assert (usage.calls, usage.duplicates) == (
                self.model.counted[key],
                self.model.duplicates[key],
            ), key
        recorded = {e.stripe_id for e in self.ledger.events_of_topics([Invoice.Drafted.TOPIC])}
        assert recorded == set(self.model.invoices)
        for invoice_id, expected in self.model.invoices.items():
            invoice = live[Invoice.create_id(invoice_id)]
            seen = expected.observed
            assert invoice.status.value == expected.status, invoice_id
            assert invoice.total == seen.total
            assert (invoice.number, invoice.due_date) == (seen.number, seen.due_date)
            if seen.status == "paid":
                assert invoice.amount_paid == seen.total

    @invariant()
    def caught_up_read_models_say_what_the_ledger_says(self) -> None:
        if self.read_models_behind():
            return
        store = self.runner.store
        for entity_id, zone in self.model.entities.items():
            row = get_entity(store, entity_id)
            assert row is not None
            assert row.timezone == zone
        for entity_id, versions in self.model.rates.items():
            rate = rate_of(store, entity_id)
            if not versions:
                assert rate is None
                continue
            assert rate is not None
            assert [(v.unit_price, v.effective_from) for v in rate.versions] == versions
        days: dict[str, list[date]] = {}
        for entity_id, day in self.model.counted | self.model.duplicates:
            days.setdefault(entity_id, []).append(day)
        for entity_id in self.model.entities:
            total = usage_for_period(store, entity_id, date(2025, 12, 1), date(2026, 1, 2))
            assert {(d.day, d.calls, d.duplicates) for d in total.days} == {
                (
                    day,
                    self.model.counted[(entity_id, day)],
                    self.model.duplicates[(entity_id, day)],
                )
                for day in days.get(entity_id, [])
            }
        for invoice_id, expected in self.model.invoices.items():
            listed = find_invoice(store, invoice_id)
            assert listed is not None, invoice_id
            invoice = self.ledger.invoice(invoice_id)
            assert (listed.status, listed.total, listed.number, listed.due_date) == (
                invoice.status.value,
                invoice.total,
                invoice.number,
                invoice.due_date,
            )
            assert listed.status == expected.status

    @invariant()
    def the_seal_verifies(self) -> None:
        result = self.ledger.verify_seal(self.checkpoint)
        assert result.ok, str(result.finding)
        # (On PostgreSQL a refused write leaves a gap in the positions, not an event.)
        assert (result.head.notification_id if result.head else 0) == self.head()
        self.checkpoint = result.head


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_commands_and_webhooks_in_any_order_keep_ledger_model_replay_and_read_models_equal(
    backend: str, request: pytest.FixtureRequest
) -> None:
    base = request.getfixturevalue("pg_database") if backend == "postgres" else None
    machine = type(
        f"LedgerMachine_{backend}", (LedgerMachine,), {"backend": backend, "pg_base": base}
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES[backend],
            stateful_step_count=STEPS[backend],
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            # No explain phase: it traces every line of a run, which on a run this
            # size takes longer than the shrinking it explains.
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        ),
    )
