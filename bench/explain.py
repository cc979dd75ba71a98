"""explain of one invoice whose period holds 100k calls, beside its raw floor.

- world: one entity in a non-UTC zone, its rate, C calls over a 31-day period
  recorded through the Ledger in import-sized chunks, each day's usage pushed,
  the invoice issued, then late calls and a retroactive rate correction (so both
  instants, at issue and now, differ); plus I other invoices in the book (the
  number lookup reads the Issued events of all of them).
- explain: `explain(ledger, ref)` wall time (database + Python), p50 and p95 over
  R runs, by Stripe id and by number. Target: p95 < 100 ms at 100k calls.
- floor: reading and decoding the same events (the invoice's, the entity's, the
  rate's and every period day's usage) without explain's logic, as the library
  does and with the garbage collector paused as explain reads them; and the raw
  select of those rows without decoding.

python -m bench.explain [--calls N] [--invoices N] [--runs N] [--backend sqlite|postgres|both]
(`python -m bench explain` runs it with its own defaults.)"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.projections import database, open_ledger
from ledger.app import Ledger
from ledger.entities.domain import BillableEntity
from ledger.explain.application import explain
from ledger.explain.replay import collection_paused
from ledger.invoices.application import InvoiceSnapshot
from ledger.invoices.domain import Invoice, Totals
from ledger.money import Money, line_amount
from ledger.rates.domain import Rate
from ledger.sources import Source
from ledger.usage.application import PreparedCall
from ledger.usage.domain import Usage
from ledger.values import Line, Period

PERIOD = Period(date(2026, 1, 1), date(2026, 2, 1))
ZONE = "Europe/Paris"
RATE = Decimal("0.0125")
ADMIN = Source("admin", "bench", "bench@billtrail.example")
CHUNK = 20_000  # the importer's chunk


def log(message: str) -> None:
    print(message, flush=True)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build(app: Ledger, calls: int, other_invoices: int) -> None:
    app.register_entity("Bench Corp", "company", ADMIN, entity_id="bench", timezone=ZONE)
    app.set_rate("bench", RATE, "eur", PERIOD.start, "contract", ADMIN)
    days = PERIOD.days()
    late = calls // 100
    on_time = calls - late
    rows: list[PreparedCall] = []
    for i in range(on_time):
        day = days[i * len(days) // on_time]
        second = i % 86_400
        started = f"{day - timedelta(days=1)}T23:00:00Z" if second == 0 else (
            f"{day}T{second // 3600 % 22:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"
        )  # fmt: skip
        rows.append((i, f"call-{i:09d}", "bench", started, day.toordinal(), 30 + i % 600))
    for k in range(0, len(rows), CHUNK):
        app.record_prepared_calls(rows[k : k + CHUNK], Source("import_file", f"calls-{k}"))
    pushed = 0
    for day in days:
        usage = app.usage("bench", day)
        n = usage.calls if usage else 0
        pushed += n
        app.report_usage(
            "bench", day, n, f"bench-{day}", datetime.now(UTC), Source("scheduler_run", f"{day}")
        )
    amount = line_amount(pushed, Money(RATE, "eur")).amount
    lines = [Line("il_u", "usage", "Calls", Decimal(pushed), RATE, amount, "price_u", PERIOD)]
    snap = InvoiceSnapshot(
        stripe_id="in_bench",
        entity_id="bench",
        currency="eur",
        period=PERIOD,
        status="open",
        lines=lines,
        totals=Totals(amount, Decimal(0), amount),
        number="BENCH-0001",
        issue_date=PERIOD.end,
        due_date=PERIOD.end + timedelta(days=14),
    )
    app.observe_invoice(snap, Source("stripe_event", "evt_bench"))
    late_rows: list[PreparedCall] = []
    for i in range(on_time, calls):  # late calls: a file imported after the invoice
        day = days[i % len(days)]
        late_rows.append((i, f"call-{i:09d}", "bench", f"{day}T12:00:00Z", day.toordinal(), 60))
    app.record_prepared_calls(late_rows, Source("import_file", "late-calls"))
    app.set_rate("bench", Decimal("0.0100"), "eur", PERIOD.start, "contract typo", ADMIN)
    for n in range(other_invoices):
        entity = f"other-{n % 50:02d}"
        if n < 50:
            app.register_entity(f"Other {n}", "company", ADMIN, entity_id=entity)
        app.observe_invoice(
            InvoiceSnapshot(
                stripe_id=f"in_other_{n}",
                entity_id=entity,
                currency="eur",
                period=PERIOD,
                status="open",
                lines=[Line("il", "fee", "Fee", Decimal(1), Decimal(10), Decimal(10))],
                totals=Totals(Decimal(10), Decimal(0), Decimal(10)),
                number=f"OTHER-{n:06d}",
                issue_date=PERIOD.end,
            ),
            Source("stripe_event", f"evt_other_{n}"),
        )


def aggregate_ids() -> list[Any]:
    return [
        Invoice.create_id("in_bench"),
        BillableEntity.create_id("bench"),
        Rate.create_id("bench"),
        *(Usage.create_id("bench", d) for d in PERIOD.days()),
    ]


def timed(fn: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of each run. Wall is the figure; this process's CPU
    time beside it tells a slow run from a machine busy with other work (it leaves
    out the PostgreSQL server's share)."""
    fn()  # warm: imports, prepared statements, the OS page cache
    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return wall, cpu


def run_backend(backend: str, calls: int, others: int, runs: int) -> None:
    log(f"\n== explain on {backend}: {calls:,} calls in the period, {others:,} other invoices ==")
    with tempfile.TemporaryDirectory() as var, database(backend, None) as url:
        app = open_ledger(url, Path(var))
        try:
            t0 = time.perf_counter()
            build(app, calls, others)
            log(f"built in {time.perf_counter() - t0:.1f} s")
            x = explain(app, "in_bench")
            log(
                f"explanation: {sum(d.calls for d in x.days):,} calls, "
                f"{sum(d.late_calls for d in x.days):,} late, flags "
                f"{sorted(str(c) for c in x.codes)}"
            )
            ids = aggregate_ids()

            def decoded() -> None:
                for aggregate_id in ids:
                    list(app.events.get(aggregate_id))

            def decoded_paused() -> None:
                with collection_paused():
                    decoded()

            def raw() -> None:
                for aggregate_id in ids:
                    app.recorder.select_events(aggregate_id)

            figures = [
                ("explain by Stripe id", timed(lambda: explain(app, "in_bench"), runs)),
                ("explain by number", timed(lambda: explain(app, "BENCH-0001"), runs)),
                ("floor: read + decode", timed(decoded, runs)),
                ("  same, gc paused", timed(decoded_paused, runs)),
                ("floor: raw select", timed(raw, runs)),
            ]
            log(f"  {'(ms, ' + str(runs) + ' runs)':<24} {'p50':>8} {'p95':>8}   cpu p50  cpu p95")
            for label, (wall, cpu) in figures:
                log(
                    f"  {label:<24} {statistics.median(wall):8.1f} {percentile(wall, 0.95):8.1f}"
                    f"  {statistics.median(cpu):8.1f} {percentile(cpu, 0.95):8.1f}"
                )
            wall, cpu = figures[0][1]
            p95 = percentile(wall, 0.95)
            floor = statistics.median(figures[3][1][0])
            verdict = "ok" if p95 < 100 else "OVER TARGET"
            log(
                f"  explain p95 {p95:.1f} ms (target < 100 ms: {verdict}); "
                f"p50 / floor p50 (gc paused, as explain reads) = "
                f"{statistics.median(wall) / floor:.2f}; load average "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
            )
        finally:
            app.close()


def main(args: argparse.Namespace | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.explain")
    parser.add_argument("--calls", type=int, default=100_000, help="calls in the period")
    parser.add_argument("--invoices", type=int, default=1_000, help="other invoices")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    # From `python -m bench`, whose --calls means calls to import: own defaults here.
    own = parser.parse_args(sys.argv[1:] if args is None else [])
    backends = ["sqlite", "postgres"] if own.backend == "both" else [own.backend]
    for backend in backends:
        run_backend(backend, own.calls, own.invoices, own.runs)


if __name__ == "__main__":
    main()
