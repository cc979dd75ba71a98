"""The demo world: a quarter in the life of billtrail, built through the same
application commands and import path an operator uses, on a simulated clock so
that recorded times tell a believable story (contracts signed before the quarter,
a rate correction learnt late, calls imported at each month's end)."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from ledger.app import Ledger
from ledger.entities.domain import slugify
from ledger.sources import Source, SourceKind
from ledger.usage.importer import EntityInfo, ImportReport, import_calls

QUARTER_START = date(2026, 7, 1)
QUARTER_END = date(2026, 10, 1)

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


class SimulatedClock:
    """A monotonic clock the demo moves forward; the ledger reads it for recorded time."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)  # strictly increasing recorded times
        return self.now

    def set(self, moment: datetime) -> None:
        if moment > self.now:
            self.now = moment


@dataclass
class DemoReport:
    entities: int = 0
    calls_written: int = 0
    duplicates_planted: int = 0
    imports: list[tuple[str, ImportReport]] = field(default_factory=list)
    corrections: list[str] = field(default_factory=list)


def _seed_source(what: str) -> Source:
    return Source(SourceKind.SEED, what, "demo")


def build_world(
    app: Ledger,
    clock: SimulatedClock,
    directory: Path,
    seed: int,
    say: Callable[[str], None] = lambda _: None,
) -> DemoReport:
    rng = random.Random(seed)
    report = DemoReport()
    clock.set(datetime(2026, 6, 20, 9, 0, tzinfo=UTC))
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
            Source(SourceKind.ADMIN, f"contract/{entity.entity_id}", "ana@billtrail.example"),
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
        report.entities += 1
    say(f"registered {report.entities} entities with their contracts")

    months = [date(2026, 7, 1), date(2026, 8, 1), date(2026, 9, 1)]
    resent: list[list[str]] = []
    for month in months:
        next_month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        path = directory / f"calls-{month:%Y-%m}.csv"
        rows = _month_of_calls(rng, month, next_month)
        # A few calls of last month arrive again (a provider's retry) and a few
        # repeat inside the file: both must be rejected and counted.
        planted = resent + [rng.choice(rows) for _ in range(len(rows) // 500)]
        resent = rng.sample(rows, len(rows) // 400)
        _write_csv(path, rows + planted)
        report.calls_written += len(rows)
        report.duplicates_planted += len(planted)
        clock.set(datetime.combine(next_month, datetime.min.time(), UTC) + timedelta(hours=14))
        if month == months[1]:
            _correct_rates(app, clock, report)
        result = _import(app, path)
        report.imports.append((path.name, result))
        say(f"imported {path.name}: {result.summary()}")
    # An operator imports September's file twice: the second time records nothing.
    again = directory / f"calls-{months[-1]:%Y-%m}.csv"
    result = _import(app, again)
    report.imports.append((again.name + " (again)", result))
    say(f"imported {again.name} again: {result.summary()}")
    return report


def _correct_rates(app: Ledger, clock: SimulatedClock, report: DemoReport) -> None:
    # Learnt on 5 September, effective from 1 August: a retroactive correction.
    clock.set(datetime(2026, 9, 5, 10, 30, tzinfo=UTC))
    app.set_rate(
        "harbour-dental-group",
        Decimal("0.0130"),
        "gbp",
        date(2026, 8, 1),
        "volume discount agreed in July, amendment signed late",
        Source(SourceKind.ADMIN, "amendment/harbour-2026-08", "ana@billtrail.example"),
    )
    report.corrections.append("harbour-dental-group: 0.0150 -> 0.0130 GBP from 2026-08-01")
    # And a plain price rise announced ahead of time.
    app.set_rate(
        "city-of-arden",
        Decimal("0.0095"),
        "usd",
        date(2026, 10, 1),
        "annual indexation",
        Source(SourceKind.ADMIN, "indexation/arden-2026", "ana@billtrail.example"),
    )
    report.corrections.append("city-of-arden: 0.0090 -> 0.0095 USD from 2026-10-01")


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


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["call_id", "entity_id", "started_at", "duration_seconds"])
        writer.writerows(rows)


def _import(app: Ledger, path: Path) -> ImportReport:
    known = {e.entity_id: EntityInfo(e.timezone, e.archived) for e in app.entities()}
    return import_calls(app, path, known, app.clock(), actor="demo")
