"""The demo world: a quarter in the life of billtrail, built through the same
application commands, import path and Stripe adapter an operator uses, on a
simulated clock so that recorded times tell a believable story (contracts signed
before the quarter, a rate correction learnt late, calls imported as each billing
period ends).

Stripe is the sandbox (or whatever STRIPE_API_BASE names). Each entity's customer
lives on its own Stripe test clock, which starts at midnight of 1 July in the
entity's time zone, so its subscription's periods run from local midnight (Stripe
counts a month from the anchor's day in UTC: in the Americas the periods are the
calendar months, east of Greenwich they run from the 31st to the 30th). The world
moves through three periods: at each entity's period end its calls file is
imported and its usage pushed, then Stripe finalizes and charges the renewal
invoice. Most pay by card; Harbour and Okapi pay by bank transfer, Okapi leaving
August's invoice unpaid past its due date; Pampas's card always fails and one of
its invoices is written off; Sakura's card fails in August and is replaced;
Brightline's provider sends a batch of August calls a second time under new
ids, which are credited; Harbour's rate is corrected late, voiding and replacing
invoices.
Stripe's webhooks flow back to a receiver that stores them in the ledger's inbox,
and `sync` applies them at each stop."""

from __future__ import annotations

import csv
import heapq
import random
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
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
from adapters.stripe.outbound.outbox import Outbox
from adapters.stripe.outbound.push import push_all
from adapters.stripe.outbound.subscriptions import (
    CHARGE_AUTOMATICALLY,
    BillingTerms,
    subscription_of,
)
from adapters.stripe.outbound.usage import push_usage
from adapters.stripe.processing import process_pending
from adapters.stripe.reconcile import reconcile
from adapters.stripe.sync import run_sync
from adapters.stripe.webhooks import DirectReceiver, handle_webhook
from ledger.app import Ledger
from ledger.entities.domain import BillableEntity, slugify
from ledger.invoices.domain import Invoice, Status
from ledger.sources import Source, SourceKind
from ledger.usage.importer import EntityInfo, ImportReport, import_calls

STORY_STARTS = datetime(2026, 6, 20, 9, 0, tzinfo=UTC)
QUARTER_START = date(2026, 7, 1)
QUARTER_END = date(2026, 10, 1)
PERIODS = 3

# name, kind, time zone, currency, per-call price, calls per day, billing email
ENTITIES = [
    ("Northwind Health", "organization", "America/New_York", "usd", "0.0125", 180),
    ("Lindqvist & Berg", "company", "Europe/Stockholm", "eur", "0.0110", 90),
    ("Harbour Dental Group", "company", "Europe/London", "gbp", "0.0150", 60),
    ("City of Arden", "organization", "America/Chicago", "usd", "0.0090", 250),
    ("Okapi Logistics", "company", "Africa/Nairobi", "usd", "0.0200", 40),
    ("Fjord Telecare", "organization", "Europe/Oslo", "eur", "0.0135", 120),
    ("Maple Street Clinic", "company", "America/Toronto", "usd", "0.0140", 75),
    ("Sakura Support KK", "company", "Asia/Tokyo", "usd", "0.0100", 150),
    ("Quayside Housing Trust", "organization", "Europe/Dublin", "eur", "0.0095", 110),
    ("Pampas Energía", "company", "America/Argentina/Buenos_Aires", "usd", "0.0160", 55),
    ("Kiwi Rural Health", "organization", "Pacific/Auckland", "usd", "0.0120", 35),
    ("Brightline Insurance", "company", "Europe/Berlin", "eur", "0.0105", 200),
]

# How the world's customers pay (their doing in Stripe, not billtrail's).
BY_TRANSFER = {"harbour-dental-group": 30, "okapi-logistics": 14}
FAILING_CARD = slugify("Pampas Energía")
CARD_FAILS_IN_AUGUST = "sakura-support-kk"
LEAVES_AUGUST_UNPAID = "okapi-logistics"
# Brightline's provider sends 12 calls of 12 August again, under new ids.
RESENT = ("brightline-insurance", date(2026, 8, 12), 12)
ADMIN = "ana@billtrail.example"


class SimulatedClock:
    """A monotonic clock the demo moves forward; the ledger reads it for recorded
    time (from the demo and from the webhook receiver's thread)."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += timedelta(milliseconds=1)  # strictly increasing recorded times
            return self.now

    def set(self, moment: datetime) -> None:
        with self._lock:
            if moment > self.now:
                self.now = moment


@dataclass
class DemoReport:
    entities: int = 0
    calls_written: int = 0
    duplicates_planted: int = 0
    imports: list[tuple[str, ImportReport]] = field(default_factory=list)
    corrections: list[str] = field(default_factory=list)
    meter_events: int = 0
    webhooks: int = 0
    findings: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


def _seed_source(what: str) -> Source:
    return Source(SourceKind.SEED, what, "demo")


def _admin_source(what: str) -> Source:
    return Source(SourceKind.ADMIN, what, ADMIN)


# The ledger's world ---------------------------------------------------------------------


def register_world(app: Ledger, clock: SimulatedClock, say: Callable[[str], None]) -> int:
    clock.set(STORY_STARTS)
    for name, kind, tz, currency, price, _ in ENTITIES:
        entity = app.register_entity(
            name,
            kind,
            _seed_source(f"register/{name}"),
            timezone=tz,
            emails=[f"billing@{name.split()[0].lower().strip('&')}.example"],
        )
        app.set_rate(
            entity.entity_id,
            Decimal(price),
            currency,
            QUARTER_START,
            "contract signed",
            _admin_source(f"contract/{entity.entity_id}"),
        )
        if kind == "organization":
            app.add_fixed_fee(
                entity.entity_id,
                "platform",
                "monthly_minimum",
                "Platform fee",
                Decimal("49.00"),
                QUARTER_START,
                _seed_source(f"fee/{entity.entity_id}"),
            )
    say(f"registered {len(ENTITIES)} entities with their contracts")
    return len(ENTITIES)


def _month_of_calls(rng: random.Random, month: date, next_month: date) -> list[list[str]]:
    rows: list[list[str]] = []
    day = month
    while day < next_month:
        for name, _, tz, _, _, per_day in ENTITIES:
            entity_id = slugify(name)
            zone = ZoneInfo(tz)
            weekend = day.weekday() >= 5
            count = int(per_day * rng.uniform(0.6, 1.4) * (0.35 if weekend else 1))
            for n in range(count):
                start = datetime.combine(day, datetime.min.time(), zone) + timedelta(
                    seconds=rng.randint(7 * 3600, 20 * 3600)
                )
                rows.append(
                    [
                        f"{entity_id}-{day:%Y%m%d}-{n:04d}",
                        entity_id,
                        start.isoformat(),
                        str(int(rng.expovariate(1 / 180)) + 5),
                    ]
                )
        day += timedelta(days=1)
    return rows


def quarter_of_calls(rng: random.Random) -> dict[str, dict[date, list[list[str]]]]:
    """Every call of the quarter, by entity and local day."""
    calls: dict[str, dict[date, list[list[str]]]] = {}
    month = QUARTER_START
    while month < QUARTER_END:
        next_month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        for row in _month_of_calls(rng, month, next_month):
            day = date.fromisoformat(row[0].rsplit("-", 2)[1])
            calls.setdefault(row[1], {}).setdefault(day, []).append(row)
        month = next_month
    return calls


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["call_id", "entity_id", "started_at", "duration_seconds"])
        writer.writerows(rows)


def _import(app: Ledger, path: Path) -> ImportReport:
    known = {e.entity_id: EntityInfo(e.timezone, e.archived) for e in app.entities()}
    return import_calls(app, path, known, app.clock(), actor="demo")


def _sum(reports: list[ImportReport]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for report in reports:
        total.update(report.summary())
    return {k: total[k] for k in ("recorded", "duplicates", "conflicts", "invalid")}


# Webhooks flowing back ------------------------------------------------------------------


class WebhookReceiver:
    """Stripe's webhook deliveries, verified and stored in the ledger's inbox by
    the inbound half (`handle_webhook`), on a loopback port in a thread."""

    def __init__(self, ledger: Ledger) -> None:
        self.secrets: list[str] = []
        self.received = 0
        receive = DirectReceiver(ledger)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = handle_webhook(
                    body,
                    self.headers.get("Stripe-Signature"),
                    secrets=receiver.secrets,
                    receive=receive,
                )
                receiver.received += answer.status == 200
                self.send_response(answer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stripe/webhook"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# The Stripe side of the world -----------------------------------------------------------


@dataclass(order=True)
class _Step:
    at: datetime
    order: int
    action: Callable[[datetime], None] = field(compare=False)


class StripeWorld:
    """The quarter in Stripe: billtrail's pushes and corrections through the
    outbound adapter, and what the world's customers do (add cards, pay)."""

    def __init__(
        self,
        app: Ledger,
        clock: SimulatedClock,
        client: stripe.StripeClient,
        directory: Path,
        rng: random.Random,
        report: DemoReport,
        say: Callable[[str], None],
        key_prefix: str,
    ) -> None:
        self.app = app
        self.clock = clock
        self.client = client
        self.directory = directory
        self.rng = rng
        self.report = report
        self.say = say
        self.key_prefix = key_prefix
        self.calls = quarter_of_calls(rng)
        self.zones = {slugify(e[0]): ZoneInfo(e[2]) for e in ENTITIES}
        self.clocks: EntityClocks | None = None
        self.steps: list[_Step] = []
        self.period: dict[str, int] = {}
        self.period_start: dict[str, datetime] = {}
        self.previous_rows: dict[str, list[list[str]]] = {}
        self.resent_ids: list[str] = []
        self.batch: dict[int, list[ImportReport]] = {}
        self.last_files: dict[str, Path] = {}

    # helpers

    def outbox(self, what: str, kind: str = SourceKind.SEED) -> Outbox:
        source = Source(kind, what, "demo" if kind == SourceKind.SEED else ADMIN)
        return Outbox(self.app, self.client, source, key_prefix=self.key_prefix)

    def at(self, moment: datetime, entity_ids: list[str] | None = None) -> None:
        """The ledger's clock and the entities' Stripe clocks at `moment`."""
        self.clock.set(moment)
        assert self.clocks is not None
        self.clocks.advance(moment, entity_ids)

    def world_key(self, what: str) -> stripe.RequestOptions:
        # The world's own requests (paying, adding cards) carry keys too.
        return {"idempotency_key": f"{self.key_prefix}world/{what}"}

    def schedule(self, moment: datetime, action: Callable[[datetime], None]) -> None:
        heapq.heappush(self.steps, _Step(moment, len(self.steps), action))

    def sync(self) -> None:
        run_sync(self.app, self.client)

    def invoices_of(self, entity_id: str) -> list[Invoice]:
        return [i for i in self.app.invoices() if i.entity_id == entity_id]

    def usage_invoice(self, entity_id: str, day: date) -> Invoice:
        """The entity's invoice (not void) that bills the usage of `day`."""
        for invoice in self.invoices_of(entity_id):
            if invoice.status is Status.VOID:
                continue
            for line in invoice.lines:
                if line.kind == "usage" and day in (line.period or invoice.period):
                    return invoice
        raise LookupError(f"no invoice of {entity_id} bills {day}")

    # the setup

    def setup(self) -> None:
        # 1 July has begun everywhere (Auckland's since 12:00 UTC on 30 June).
        self.clock.set(datetime(2026, 7, 1, 11, 0, tzinfo=UTC))
        self.clocks = EntityClocks.create(
            self.client, self.zones, QUARTER_START, key_prefix=self.key_prefix
        )
        outbox = self.outbox("stripe-push/2026-07-01")
        push_customers(outbox, test_clocks=self.clocks.clocks)
        for entity in self.app.entities():
            self._card(
                entity,
                "pm_card_chargeCustomerFail"
                if entity.entity_id == FAILING_CARD
                else "pm_card_visa",
                "first",
            )
        pushed = push_all(outbox, terms=_terms)
        s = pushed.summary()
        self.say(
            f"Stripe: {len(pushed.customers.created) + pushed.customers.already} customers on "
            f"their own test clocks, {s['prices']} prices, {s['subscriptions']} subscriptions "
            "from local midnight of 1 July"
        )
        for entity in self.app.entities():
            self.period[entity.entity_id] = 1
            self.period_start[entity.entity_id] = datetime.combine(
                QUARTER_START, time(0), self.zones[entity.entity_id]
            )
            self.schedule(self._period_end(entity.entity_id), self._period_ends(entity.entity_id))
        self.schedule(datetime(2026, 8, 11, 12, 0, tzinfo=UTC), self._transfers)
        self.schedule(datetime(2026, 8, 20, 12, 0, tzinfo=UTC), self._sakura_card_fails)
        self.schedule(datetime(2026, 9, 5, 10, 30, tzinfo=UTC), self._rate_corrections)
        self.schedule(datetime(2026, 9, 10, 12, 0, tzinfo=UTC), self._credit_resent_calls)
        self.schedule(datetime(2026, 9, 11, 12, 0, tzinfo=UTC), self._transfers)
        self.schedule(datetime(2026, 9, 11, 12, 30, tzinfo=UTC), self._sakura_new_card)
        self.schedule(datetime(2026, 9, 11, 13, 0, tzinfo=UTC), self._write_off)

    def _card(self, entity: BillableEntity, token: str, what: str) -> str:
        customer = entity.stripe_customer_id
        assert customer is not None
        pm = self.client.v1.payment_methods.attach(
            token, {"customer": customer}, self.world_key(f"card/{entity.entity_id}/{what}")
        )
        self.client.v1.customers.update(
            customer,
            {"invoice_settings": {"default_payment_method": pm.id}},
            self.world_key(f"default-card/{entity.entity_id}/{what}"),
        )
        return pm.id

    def _period_end(self, entity_id: str) -> datetime:
        subscription_id = subscription_of(self.outbox("read"), entity_id)
        assert subscription_id is not None
        subscription = self.client.v1.subscriptions.retrieve(subscription_id)
        return datetime.fromtimestamp(subscription.items.data[0].current_period_end, UTC)

    def run(self) -> None:
        while self.steps:
            step = heapq.heappop(self.steps)
            step.action(step.at)

    # a period ends for one entity

    def _period_ends(self, entity_id: str) -> Callable[[datetime], None]:
        def act(end: datetime) -> None:
            k = self.period[entity_id]
            zone = self.zones[entity_id]
            first = self.period_start[entity_id].astimezone(zone).date()
            last = end.astimezone(zone).date()
            # The provider's file of the period arrives just after it ends.
            self.clock.set(end + timedelta(minutes=20))
            path = self._calls_file(entity_id, k, first, last)
            self.batch.setdefault(k, []).append(_import(self.app, path))
            # billtrail pushes the period's usage before Stripe finalizes (an hour after).
            self.at(end + timedelta(minutes=30), [entity_id])
            pushed = push_usage(self.outbox(f"usage-push/{entity_id}/{k}"), entity_ids=[entity_id])
            self.report.meter_events += len(pushed.pushed)
            # Stripe finalizes the renewal invoice and collects it; the webhooks
            # that came back meanwhile are applied.
            self.at(end + timedelta(hours=2), [entity_id])
            process_pending(self.app, self.client)
            self.period_start[entity_id] = end
            if k < PERIODS:
                self.period[entity_id] = k + 1
                self.schedule(self._period_end(entity_id), self._period_ends(entity_id))

        return act

    def _calls_file(self, entity_id: str, k: int, first: date, last: date) -> Path:
        by_day = self.calls.get(entity_id, {})
        rows = [r for day in sorted(by_day) if first <= day < last for r in by_day[day]]
        # A few calls of the last period arrive again (a provider's retry) and a few
        # repeat inside the file: both are rejected and counted.
        planted = self.previous_rows.get(entity_id, []) + [
            self.rng.choice(rows) for _ in range(len(rows) // 500)
        ]
        self.previous_rows[entity_id] = self.rng.sample(rows, len(rows) // 400)
        resent: list[list[str]] = []
        if entity_id == RESENT[0] and first <= RESENT[1] < last:
            # The provider sends a batch again under new ids: the ledger cannot tell.
            resent = [[f"{r[0]}-r", *r[1:]] for r in by_day[RESENT[1]][: RESENT[2]]]
            self.resent_ids = [r[0] for r in resent]
        path = self.directory / f"calls-{entity_id}-{first:%Y-%m-%d}.csv"
        _write_csv(path, rows + resent + planted)
        self.last_files[entity_id] = path
        self.report.calls_written += len(rows) + len(resent)
        self.report.duplicates_planted += len(planted)
        return path

    # the world's customers

    def _transfers(self, moment: datetime) -> None:
        """Customers paying by bank transfer settle their open invoices, except
        Okapi, which leaves August's unpaid."""
        self.clock.set(moment)
        self.sync()
        for entity_id in BY_TRANSFER:
            self.at(moment, [entity_id])
            for invoice in self.invoices_of(entity_id):
                if invoice.status is not Status.OPEN or invoice.replaced_by:
                    continue
                if entity_id == LEAVES_AUGUST_UNPAID and moment.month == 9:
                    continue
                self.client.v1.invoices.pay(
                    invoice.stripe_id,
                    {"paid_out_of_band": True},
                    self.world_key(f"transfer/{invoice.stripe_id}"),
                )

    def _sakura_card_fails(self, moment: datetime) -> None:
        self.at(moment, [CARD_FAILS_IN_AUGUST])
        self._card(self.app.entity(CARD_FAILS_IN_AUGUST), "pm_card_chargeCustomerFail", "expired")

    def _sakura_new_card(self, moment: datetime) -> None:
        """Sakura puts a new card on file and pays what failed."""
        self.at(moment, [CARD_FAILS_IN_AUGUST])
        self.sync()
        card = self._card(self.app.entity(CARD_FAILS_IN_AUGUST), "pm_card_visa", "new")
        for invoice in self.invoices_of(CARD_FAILS_IN_AUGUST):
            if invoice.status is Status.OPEN:
                self.client.v1.invoices.pay(
                    invoice.stripe_id,
                    {"payment_method": card},
                    self.world_key(f"retry/{invoice.stripe_id}"),
                )

    # billtrail's admins

    def _rate_corrections(self, moment: datetime) -> None:
        # Learnt on 5 September, effective from 1 August: a retroactive correction.
        # The invoice that billed August at the old rate is voided and replaced.
        entity_id = "harbour-dental-group"
        self.at(moment, [entity_id])
        self.sync()
        wrong = self.usage_invoice(entity_id, date(2026, 8, 1))
        result = correct_wrong_rate(
            self.outbox("corrections"),
            wrong.stripe_id,
            reason="volume discount agreed in July, amendment signed late",
            actor=ADMIN,
            revision=RateRevision(Decimal("0.0130"), date(2026, 8, 1)),
        )
        self.report.corrections.append(
            f"harbour-dental-group: 0.0150 -> 0.0130 GBP from 2026-08-01; invoice "
            f"{wrong.number} voided, replaced by {result.results['replacement']}"
        )
        # The new price is pushed; the subscription keeps billing the old one (see
        # reconcile below).
        push_all(self.outbox("stripe-push/2026-09-05"), terms=_terms)
        # And a plain price rise announced ahead of time.
        self.app.set_rate(
            "city-of-arden",
            Decimal("0.0095"),
            "usd",
            date(2026, 10, 1),
            "annual indexation",
            _admin_source("indexation/arden-2026"),
        )
        self.report.corrections.append("city-of-arden: 0.0090 -> 0.0095 USD from 2026-10-01")

    def _credit_resent_calls(self, moment: datetime) -> None:
        entity_id = RESENT[0]
        self.at(moment, [entity_id])
        self.sync()
        invoice = self.usage_invoice(entity_id, RESENT[1])
        result = credit_duplicate_calls(
            self.outbox("corrections"),
            invoice.stripe_id,
            self.resent_ids,
            reason="the provider sent a batch of 12 August a second time, under new ids",
            actor=ADMIN,
        )
        self.report.corrections.append(
            f"{entity_id}: {len(self.resent_ids)} calls counted twice credited on "
            f"{invoice.number} ({result.results['credit_note']})"
        )

    def _write_off(self, moment: datetime) -> None:
        self.at(moment, [FAILING_CARD])
        self.sync()
        failed = [i for i in self.invoices_of(FAILING_CARD) if i.status is Status.OPEN]
        first = min(failed, key=lambda i: i.issue_date or QUARTER_END)
        write_off(
            self.outbox("corrections"),
            first.stripe_id,
            reason="four payment attempts failed; the customer does not answer",
            actor=ADMIN,
        )
        self.report.corrections.append(f"{FAILING_CARD}: invoice {first.number} written off")

    # after the quarter

    def close_quarter(self) -> None:
        moment = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
        self.at(moment)
        self.sync()
        found = reconcile(
            self.app, Source(SourceKind.SCHEDULER_RUN, "reconcile/2026-10-01"), client=self.client
        )
        for finding in found.findings:
            self.report.findings.append(
                f"{finding.number} {finding.entity_id} {finding.kind}: {finding.detail}"
            )
            if finding.kind == "amount_differs":
                # The subscription billed September at the old price: the same correction.
                result = correct_wrong_rate(
                    self.outbox("corrections"),
                    finding.invoice,
                    reason="the amendment of 1 August applies to September too",
                    actor=ADMIN,
                )
                self.report.corrections.append(
                    f"{finding.entity_id}: invoice {finding.number} voided, replaced by "
                    f"{result.results['replacement']} (found by reconcile)"
                )
        again = reconcile(
            self.app, Source(SourceKind.SCHEDULER_RUN, "reconcile/2026-10-01b"), client=self.client
        )
        self.report.findings.append(f"after corrections: {len(again.findings)} findings")
        # The daily monitor: open invoices past their due date become past due.
        self.clock.set(datetime(2026, 10, 2, 9, 0, tzinfo=UTC))
        candidates = [i.stripe_id for i in self.app.invoices() if i.status is Status.OPEN]
        self.app.sweep_past_due(
            date(2026, 10, 2), Source(SourceKind.SCHEDULER_RUN, "past-due/2026-10-02"), candidates
        )


def _terms(entity: BillableEntity) -> BillingTerms:
    days = BY_TRANSFER.get(entity.entity_id)
    return BillingTerms("send_invoice", days) if days else CHARGE_AUTOMATICALLY


@contextmanager
def webhooks_to(
    app_factory: Callable[[], Ledger], client: stripe.StripeClient, key_prefix: str
) -> Iterator[WebhookReceiver]:
    """A receiver for Stripe's webhooks, registered as an endpoint for the events
    billtrail follows, removed at the end."""
    ledger = app_factory()
    receiver = WebhookReceiver(ledger)
    endpoint = client.v1.webhook_endpoints.create(
        {
            "url": receiver.url,
            # The invoice and credit note events billtrail follows (sync's list).
            "enabled_events": [
                "invoice.created",
                "invoice.deleted",
                "invoice.finalized",
                "invoice.marked_uncollectible",
                "invoice.paid",
                "invoice.payment_failed",
                "invoice.updated",
                "invoice.voided",
                "credit_note.created",
                "credit_note.updated",
                "credit_note.voided",
            ],
        },
        {"idempotency_key": f"{key_prefix}world/webhook-endpoint"},
    )
    assert endpoint.secret is not None
    receiver.secrets.append(endpoint.secret)
    try:
        yield receiver
    finally:
        client.v1.webhook_endpoints.delete(endpoint.id)
        receiver.close()
        ledger.close()


def build_world(
    app: Ledger,
    clock: SimulatedClock,
    directory: Path,
    seed: int,
    client: stripe.StripeClient,
    say: Callable[[str], None] = lambda _: None,
    *,
    ledger_factory: Callable[[], Ledger] | None = None,
    key_prefix: str = "",
) -> DemoReport:
    rng = random.Random(seed)
    report = DemoReport()
    report.entities = register_world(app, clock, say)
    world = StripeWorld(app, clock, client, directory, rng, report, say, key_prefix)
    world.setup()
    receiver_ledger = ledger_factory or (lambda: app)
    with webhooks_to(receiver_ledger, client, key_prefix) as receiver:
        world.run()
        for k, results in sorted(world.batch.items()):
            report.imports.extend((f"period {k}", r) for r in results)
            say(f"imported the {len(results)} calls files of billing period {k}: {_sum(results)}")
        world.close_quarter()
        report.webhooks = receiver.received
    # An operator imports the last period's files twice: the second time records nothing.
    again = [_import(app, path) for path in world.last_files.values()]
    say(f"imported the last period's {len(again)} calls files again: {_sum(again)}")
    world.sync()
    report.statuses = dict(Counter(i.status.value for i in app.invoices()))
    return report


# The portal's logins -----------------------------------------------------------------

# The customer shown in the portal: Okapi has an invoice past due, so "Your Billing"
# has something to say.
CUSTOMER_ENTITY = LEAVES_AUGUST_UNPAID


@dataclass(frozen=True)
class DemoLogin:
    email: str
    role: str
    password: str
    entity_id: str | None = None


def add_logins(app: Ledger) -> list[DemoLogin]:
    """An admin and a customer of CUSTOMER_ENTITY, each with a password made for this
    run and printed by the demo: a fixed one would work on every demo database ever
    built, including one left serving on a shared machine."""
    customer = app.entity(CUSTOMER_ENTITY)
    logins = [
        DemoLogin(ADMIN, "admin", secrets.token_urlsafe(12)),
        DemoLogin(customer.emails[0], "customer", secrets.token_urlsafe(12), CUSTOMER_ENTITY),
    ]
    for login in logins:
        app.add_user(
            login.email,
            login.role,
            login.password,
            _seed_source(f"users/{login.email}"),
            entity_id=login.entity_id,
        )
    return logins
