"""A small billing world built through the ledger's own commands, the way the
adapter and the importer build it: an entity, its contracted rate, calls recorded
per local day, usage pushed to Stripe per day, and invoices observed from Stripe
with the lines Stripe would compute (the meter's quantity x the price's
unit_amount_decimal rounded half up; exclusive tax per line). Tests plant one
discrepancy at a time on top of it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ledger.app import Ledger
from ledger.invoices.application import CreditNoteSnapshot, InvoiceSnapshot
from ledger.invoices.domain import Totals
from ledger.money import Money, line_amount
from ledger.sources import Source
from ledger.usage.application import CallRow
from ledger.values import Line, Period

D = Decimal
ADMIN = Source("admin", "admin-1", actor="alice@example.com")
ZONE = "America/New_York"  # local days differ from UTC days: calls sort by the entity's
PERIOD = Period(date(2026, 1, 1), date(2026, 1, 11))
RATE = D("0.0125")
FEE = D("20.00")
TAX = D("0.20")


@dataclass
class World:
    ledger: Ledger
    clock: Any
    entity_id: str = "acme"
    currency: str = "usd"
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _events: Any = field(default_factory=lambda: itertools.count(1))

    def stripe_event(self) -> Source:
        return Source("stripe_event", f"evt_{next(self._events)}")

    def calls(self, day: date, n: int) -> list[str]:
        """Record `n` new calls handled on local `day` (spread over its hours)."""
        zone = ZoneInfo(ZONE)
        ids = [f"call-{next(self._ids):07d}" for _ in range(n)]
        rows = [
            CallRow(
                i,
                call_id,
                self.entity_id,
                datetime.combine(day, time(i % 24, i % 60), zone),
                30 + i % 300,
            )
            for i, call_id in enumerate(ids)
        ]
        self.ledger.record_calls(rows, Source("import_file", f"calls-{ids[0]}"))
        return ids

    def calls_every_day(self, period: Period = PERIOD, base: int = 10) -> None:
        for i, day in enumerate(period.days()):
            self.calls(day, base + i)

    def push(self, day: date, quantity: int | None = None, identifier: str | None = None) -> bool:
        """Report the day's usage to Stripe: what is recorded and not yet pushed."""
        usage = self.ledger.usage(self.entity_id, day)
        recorded = usage.calls if usage else 0
        pushed = usage.reported_quantity if usage else 0
        n = recorded - pushed if quantity is None else quantity
        if n == 0 and quantity is None:
            return False
        count = len(usage.reports) if usage else 0
        identifier = identifier or f"{self.entity_id}-{day}-{count + 1}"
        return self.ledger.report_usage(
            self.entity_id,
            day,
            n,
            identifier,
            self.clock.now,
            Source("scheduler_run", f"usage-push/{identifier}"),
        )

    def push_all(self, period: Period = PERIOD) -> None:
        for day in period.days():
            self.push(day)

    def stripe_lines(
        self,
        period: Period = PERIOD,
        *,
        unit_price: Decimal | None = None,
        amount: Decimal | None = None,
        fee: Decimal | None = FEE,
    ) -> list[Line]:
        """The lines Stripe would bill: the meter's quantity (everything pushed for
        the period's days) at the rate version's price, a monthly fee, exclusive tax."""
        quantity = sum(
            (
                u.reported_quantity
                for d in period.days()
                if (u := self.ledger.usage(self.entity_id, d))
            ),
            0,
        )
        price = unit_price
        if price is None:
            version = self.ledger.rate_on(self.entity_id, period.start)
            assert version is not None
            price = version.unit_price
        usage_amount = (
            line_amount(quantity, Money(price, self.currency)).amount if amount is None else amount
        )
        lines = [
            Line(
                "il_usage",
                "usage",
                "Calls",
                D(quantity),
                price,
                usage_amount,
                "price_calls",
                period,
            )
        ]
        if fee is not None:
            lines.append(Line("il_fee", "fee", "Platform fee", D(1), fee, fee, "price_fee"))
        return with_tax(lines, self.currency)

    def issue(
        self,
        stripe_id: str = "in_1",
        number: str = "ACME-0001",
        lines: Sequence[Line] | None = None,
        period: Period = PERIOD,
        status: str = "open",
        **changes: Any,
    ) -> InvoiceSnapshot:
        lines = list(self.stripe_lines(period) if lines is None else lines)
        snap = InvoiceSnapshot(
            stripe_id=stripe_id,
            entity_id=self.entity_id,
            currency=self.currency,
            period=period,
            status=status,
            lines=lines,
            totals=totals_of(lines),
            number=number,
            issue_date=period.end,
            due_date=period.end + timedelta(days=14),
            **changes,
        )
        self.ledger.observe_invoice(snap, self.stripe_event())
        return snap

    def observe(self, snap: InvoiceSnapshot, **changes: Any) -> InvoiceSnapshot:
        snap = replace(snap, **changes)
        self.ledger.observe_invoice(snap, self.stripe_event())
        return snap

    def credit(self, snap: InvoiceSnapshot, amount: Decimal, reason: str) -> InvoiceSnapshot:
        n = len(snap.credit_notes) + 1
        note = CreditNoteSnapshot(f"cn_{n}", f"ACME-0001-CN-{n:02d}", amount, reason, "memo")
        return self.observe(snap, credit_notes=[*snap.credit_notes, note])


def with_tax(lines: list[Line], currency: str) -> list[Line]:
    tax = sum((line_amount(1, Money(x.amount * TAX, currency)).amount for x in lines), D(0))
    return [*lines, Line("tax:txr_1", "tax", "VAT 20%", D(1), None, tax)]


def totals_of(lines: Sequence[Line]) -> Totals:
    subtotal = sum((x.amount for x in lines if x.kind != "tax"), D(0))
    tax = sum((x.amount for x in lines if x.kind == "tax"), D(0))
    return Totals(subtotal, tax, subtotal + tax)


def build(ledger: Ledger, clock: Any) -> World:
    """An entity with a contracted rate and a monthly fee, recorded before the period."""
    clock.set(datetime(2025, 12, 20, 9, 0, tzinfo=ZoneInfo("UTC")))
    ledger.register_entity("Acme Corp", "company", ADMIN, entity_id="acme", timezone=ZONE)
    ledger.link_stripe_customer("acme", "cus_acme", ADMIN)
    ledger.set_rate("acme", RATE, "usd", PERIOD.start, "signed contract", ADMIN)
    ledger.add_fixed_fee("acme", "platform", "addon", "Platform fee", FEE, PERIOD.start, ADMIN)
    return World(ledger, clock)


@pytest.fixture
def world(ledger: Ledger, clock: Any) -> World:
    return build(ledger, clock)


@pytest.fixture
def billed(world: World) -> World:
    """The clean world: every day's calls recorded and pushed, then the invoice
    issued by Stripe with exactly those calls at the contracted rate."""
    for day in PERIOD.days():
        world.clock.set(datetime.combine(day + timedelta(days=1), time(6), ZoneInfo("UTC")))
        world.calls(day, 10 + day.day)
        world.push(day)
    world.clock.set(datetime.combine(PERIOD.end, time(12), ZoneInfo("UTC")))
    world.issue()
    world.clock.advance(hours=1)
    return world
