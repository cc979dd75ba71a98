"""Projections at scale, on SQLite and PostgreSQL, each figure beside its raw floor.

- generate: a ledger with N invoices (drafted, issued, then paid / past due / void /
  uncollectible / left open, like a real book) over E entities, and C calls in
  days of usage; written through the Ledger (events, seal) in batches.
- rebuild: `Runner.rebuild` of the invoices projection and of the calls projection,
  in events/s, vs the floor: reading the same log pages, json-decoding the states
  and inserting the same final rows into the same tables (same indexes, same FTS)
  without the projection code (no domain events, no fold, no tracking). Target:
  rate >= 0.5 x floor.
- list: p95 of the invoice-list query's database time (execute + fetch) for each
  filter combination, text search, keyset page 2 and as-of, with each plan; a
  full scan of proj_invoices is flagged. Targets: filtered p95 <= 1 ms (SQLite),
  <= 2 ms (PostgreSQL); search p95 <= 10 ms.

python -m bench.projections [--invoices N] [--calls N] [--backend sqlite|postgres|both]
                            [--full]   (1M invoices and 10M calls; not for `make test`)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.entities.domain import BillableEntity
from ledger.invoices.domain import Invoice, Totals
from ledger.rates.domain import Rate
from ledger.sources import Source
from ledger.usage.domain import Call, Usage
from ledger.values import Line, Period
from projections.base import SQLITE, Store, Tx, to_units
from projections.calls import CALLS, CallsProjection
from projections.invoice_history import InvoiceHistoryProjection
from projections.invoices import (
    INVOICES,
    InvoiceQuery,
    InvoicesProjection,
    _list_sql,
    list_invoices,
)
from projections.runner import Runner

SEAL_KEY = "bench-seal-key-0123456789abcdef0123456789"
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
SRC = Source("seed", "bench")
WORDS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell", "Cyberdyne"]
KINDS = ["Dental", "Clinic", "Legal", "Logistics", "Studio", "Labs", "Foods", "Energy"]


def log(message: str) -> None:
    print(message, flush=True)


# Generating ------------------------------------------------------------------------


def entity_ids(n: int) -> list[str]:
    return [f"ent-{i:05d}" for i in range(n)]


def generate(app: Ledger, invoices: int, calls: int, entities: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    ids = entity_ids(entities)
    at = T0
    ents = [
        BillableEntity.register(
            e,
            f"{rng.choice(WORDS)} {rng.choice(KINDS)} {i}",
            "company",
            "UTC",
            [],
            SRC,
            at,
        )
        for i, e in enumerate(ids)
    ]
    rates = [Rate.contract(e, "usd", Decimal("0.012"), date(2025, 1, 1), "c", SRC, at) for e in ids]
    for i in range(0, entities, 500):
        app.save(*ents[i : i + 500], *rates[i : i + 500])
    batch: list[Invoice] = []
    for n in range(invoices):
        entity = ids[n % entities]
        cents = rng.randint(100, 5_000_000)
        amount = Decimal(cents).scaleb(-2)
        totals = Totals(amount, Decimal(0), amount)
        lines = [Line("il_1", "usage", "Calls", Decimal(cents), Decimal("0.01"), amount)]
        issue = date(2020, 1, 1) + timedelta(days=n * 2190 // invoices)
        inv = Invoice.draft(
            f"in_{n:08d}",
            entity,
            "usd",
            Period(issue - timedelta(days=30), issue),
            lines,
            totals,
            SRC,
            at,
        )
        inv.issue(f"INV-{n:08d}", issue, issue + timedelta(days=14), lines, totals, SRC, at)
        fate = rng.random()
        later = datetime.combine(
            issue + timedelta(days=rng.randint(1, 30)), datetime.min.time(), UTC
        )
        if fate < 0.6:
            inv.pay(amount, later, None, None, SRC, at)
        elif fate < 0.7:
            inv.mark_past_due(issue + timedelta(days=15), SRC, at)
        elif fate < 0.75:
            inv.void(later, "void", SRC, at)
        elif fate < 0.8:
            inv.mark_uncollectible(later, "gone", SRC, at)
        batch.append(inv)
        if len(batch) == 1000:
            app.save(*batch)
            batch = []
    if batch:
        app.save(*batch)
    # Calls: days of usage of up to 1000 calls each, spread over the entities.
    per_day = 1000
    days = max(1, calls // per_day)
    usages: list[Usage] = []
    made = 0
    for d in range(days):
        entity = ids[d % entities]
        day = date(2025, 1, 1) + timedelta(days=d // entities)
        usage = Usage.begin(entity, day, SRC, at)
        count = min(per_day, calls - made)
        base = datetime.combine(day, datetime.min.time(), UTC)
        usage.record_calls(
            [
                Call(
                    f"call-{made + k:09d}",
                    (base + timedelta(seconds=k * 80)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    rng.randint(5, 900),
                )
                for k in range(count)
            ],
            [],
            SRC,
            at,
        )
        made += count
        usages.append(usage)
        if len(usages) == 50:
            app.save(*usages)
            usages = []
    if usages:
        app.save(*usages)


# Databases -------------------------------------------------------------------------


@contextmanager
def database(backend: str, keep: Path | None) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(dir=keep) as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def open_ledger(url: str, var: Path) -> Ledger:
    settings = Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": url,
            "BILLTRAIL_SEAL_KEY": SEAL_KEY,
            "BILLTRAIL_VAR_DIR": str(var),
        }
    )
    return bootstrap.ledger(settings)


# The floor ---------------------------------------------------------------------------


def _hex(originator_id: UUID | str) -> str:
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id


def _d(value: Any) -> Any:
    """The plain value of a transcoded JSON value (the floor's whole 'decoding')."""
    if isinstance(value, dict) and "_type_" in value:
        return value["_data_"]
    return value


def floor_invoices(app: Ledger, store: Store, page: int) -> tuple[int, float]:
    """Read the log, decode JSON, fold the same final rows with the least code, and
    insert them into the same tables. Returns (events read, seconds)."""
    projection = InvoicesProjection()
    with store.transaction() as tx:
        for s in projection.drop_statements(tx.backend, tx.prefix):
            tx.raw(s)
        for s in projection.table_statements(tx.backend, tx.prefix):
            tx.raw(tx.sql(s))
    t0 = time.perf_counter()
    topics = list(projection.topics)
    names: dict[str, str] = {}
    rows: dict[str, list[Any]] = {}
    position = 0
    events = 0
    statuses = {
        "billtrail:Invoice.Paid": "paid",
        "billtrail:Invoice.BecamePastDue": "past_due",
        "billtrail:Invoice.Voided": "void",
        "billtrail:Invoice.MarkedUncollectible": "uncollectible",
    }
    sqlite = store.backend == SQLITE

    def day(text: str) -> Any:
        return text if sqlite else date.fromisoformat(text)

    while True:
        notes = app.recorder.select_notifications(
            start=position, limit=page, topics=topics, inclusive_of_start=False
        )
        if not notes:
            break
        done: list[list[Any]] = []
        for note in notes:
            state = json.loads(note.state)
            key = _hex(note.originator_id)
            topic = note.topic
            events += 1
            if topic == "billtrail:BillableEntity.Registered":
                names[state["entity_id"]] = state["name"]
            elif topic == "billtrail:Invoice.Drafted":
                total = _d(state["total"])
                period = _d(state["period"])
                rows[key] = [
                    note.id, key, state["stripe_id"], None, state["entity_id"],
                    names.get(state["entity_id"], ""), state["currency"],
                    day(_d(period["start"])), day(_d(period["end"])), None,
                    day(_d(state["timestamp"])[:10]), None, _d(state["subtotal"]),
                    _d(state["tax"]), total, to_units(Decimal(total)), "draft", "0", None, 0,
                    "{}", "0", None, None, _d(state["timestamp"]), note.id,
                ]  # fmt: skip
            elif topic == "billtrail:Invoice.Issued":
                row = rows[key]
                row[3], row[9], row[10] = state["number"], day(_d(state["issue_date"])), None
                row[10] = row[9]
                row[11] = day(_d(state["due_date"]))
                row[16] = "open"
            elif topic in statuses:
                rows[key][16] = statuses[topic]
        # An invoice's events are adjacent in this log: only the page's last invoice
        # can have more events in the next page; every other row is final.
        last = _hex(notes[-1].originator_id)
        done = [rows.pop(k) for k in list(rows) if k != last]
        with store.transaction() as tx:
            tx.copy_rows("proj_invoices", INVOICES.col_names, done)
        position = notes[-1].id
    build_indexes(store, projection)
    return events, time.perf_counter() - t0


def build_indexes(store: Store, projection: Any) -> None:
    """The same one-pass index build as the runner's bulk load."""
    with store.transaction() as tx:
        for s in projection.index_statements(tx.backend, tx.prefix):
            tx.raw(tx.sql(s))


def floor_calls(app: Ledger, store: Store, page: int) -> tuple[int, float]:
    projection = CallsProjection()
    with store.transaction() as tx:
        for s in projection.drop_statements(tx.backend, tx.prefix):
            tx.raw(s)
        for s in projection.table_statements(tx.backend, tx.prefix):
            tx.raw(tx.sql(s))
    t0 = time.perf_counter()
    days: dict[Any, tuple[str, str]] = {}
    position = 0
    events = 0
    sqlite = store.backend == SQLITE
    while True:
        notes = app.recorder.select_notifications(
            start=position, limit=page, topics=list(projection.topics), inclusive_of_start=False
        )
        if not notes:
            break
        rows: list[tuple[Any, ...]] = []
        for note in notes:
            events += 1
            state = json.loads(note.state)
            if note.topic == "billtrail:Usage.Begun":
                days[note.originator_id] = (state["entity_id"], _d(state["day"]))
                continue
            entity_id, d = days[note.originator_id]
            dv: Any = d if sqlite else date.fromisoformat(d)
            for call_id, started, seconds in state["calls"]:
                ts: Any = (
                    started[:-1] + ".000000Z"
                    if sqlite
                    else datetime.fromisoformat(started.replace("Z", "+00:00"))
                )
                rows.append((entity_id, dv, ts, call_id, seconds, "seed:bench", note.id))
        with store.transaction() as tx:
            tx.copy_rows("proj_calls", CALLS.col_names, rows)
        position = notes[-1].id
    build_indexes(store, projection)
    return events, time.perf_counter() - t0


def rebuild_rate(runner: Runner, name: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    runner.rebuild([name])
    seconds = time.perf_counter() - t0
    head = runner.app.recorder.max_notification_id() or 0
    events = runner.count_events(runner.select([name])[0].topics, 0, head)
    return events, seconds


# Queries ---------------------------------------------------------------------------


def query_cases(entities: int, rng: random.Random) -> list[tuple[str, Callable[[], InvoiceQuery]]]:
    ids = entity_ids(entities)
    statuses = ["open", "paid", "past_due", "void", "uncollectible"]

    def d() -> date:
        return date(2020, 1, 1) + timedelta(days=rng.randrange(2000))

    def window() -> tuple[date, date]:
        a = d()
        return a, a + timedelta(days=rng.choice([7, 30, 90]))

    def total() -> tuple[Decimal, Decimal]:
        a = Decimal(rng.randrange(1, 40000))
        return a, a + Decimal(rng.choice([10, 100, 1000]))

    def q(**kw: Any) -> InvoiceQuery:
        return InvoiceQuery(**kw)

    def pick_entity() -> dict[str, Any]:
        return {"entity_id": rng.choice(ids)}

    def pick_status() -> dict[str, Any]:
        return {"status": rng.choice(statuses)}

    def dates() -> dict[str, Any]:
        start, end = window()
        return {"issued_from": start, "issued_to": end}

    def totals() -> dict[str, Any]:
        low, high = total()
        return {"total_min": low, "total_max": high}

    def combine(*parts: Callable[[], dict[str, Any]], **fixed: Any) -> Callable[[], InvoiceQuery]:
        return lambda: q(**{k: v for part in parts for k, v in part().items()}, **fixed)

    def search(make: Callable[[], str], **fixed: Any) -> Callable[[], InvoiceQuery]:
        return lambda: q(search=make(), **fixed)

    return [
        ("no filter", combine()),
        ("entity", combine(pick_entity)),
        ("status", combine(pick_status)),
        ("status rare", combine(status="uncollectible")),
        ("issue date range", combine(dates)),
        ("total range", combine(totals)),
        ("entity+status", combine(pick_entity, pick_status)),
        ("entity+dates", combine(pick_entity, dates)),
        ("status+dates", combine(pick_status, dates)),
        ("status+total", combine(pick_status, totals)),
        ("entity+total", combine(pick_entity, totals)),
        ("dates+total", combine(dates, totals)),
        ("entity+status+dates", combine(pick_entity, pick_status, dates)),
        ("all four", combine(pick_entity, pick_status, dates, totals)),
        ("sort by total", combine(sort="total")),
        ("status, sort by total", combine(pick_status, sort="total")),
        ("search number", search(lambda: f"INV-{rng.randrange(10**6):06d}"[:10])),
        ("search entity name", search(lambda: f"{rng.choice(WORDS)} {rng.choice(KINDS)}")),
        ("search + status", search(lambda: rng.choice(KINDS), status="past_due")),
        ("as of a date", lambda: q(as_of=d())),
    ]


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) >= 20 else max(samples)


def time_query(store: Store, query: InvoiceQuery, after: str | None = None) -> float:
    """Database time of one page: the plan probe (SQLite) and the query."""
    with store.reading() as tx:
        t0 = time.perf_counter()
        sql, params, _, _ = _list_sql(tx, query, 50, after)
        tx.execute(sql, params)
        return time.perf_counter() - t0


def plan(tx: Tx, query: InvoiceQuery, after: str | None) -> list[str]:
    sql, params, _, _ = _list_sql(tx, query, 50, after)
    if tx.backend == SQLITE:
        return [str(r[3]) for r in tx.execute("EXPLAIN QUERY PLAN " + sql, params)]
    return [str(r[0]) for r in tx.execute("EXPLAIN " + sql, params)]


def full_scan(lines: list[str], backend: str) -> bool:
    if backend == SQLITE:
        return any(
            (line.startswith("SCAN i") and "USING" not in line) or line == "SCAN proj_invoices"
            for line in lines
        )
    return any("Seq Scan on proj_invoices" in line for line in lines)


def bench_queries(store: Store, entities: int, runs: int, show_plans: bool) -> None:
    rng = random.Random(3)
    target = 1.0 if store.backend == SQLITE else 2.0
    log(f"  {'query':<24} {'p50 ms':>8} {'p95 ms':>8} {'page2 p95':>10}  plan")
    for label, make in query_cases(entities, rng):
        samples, page2 = [], []
        for _ in range(runs):
            query = make()
            samples.append(time_query(store, query) * 1000)
        for _ in range(max(5, runs // 5)):
            query = make()
            first = list_invoices(store, query, limit=50)
            if first.next_cursor:
                page2.append(time_query(store, query, first.next_cursor) * 1000)
        with store.reading() as tx:
            lines = plan(tx, make(), None)
        goal = 10.0 if label.startswith("search") else target
        flag = "FULL SCAN" if full_scan(lines, store.backend) else ""
        ok = "ok" if p95(samples) <= goal and not flag else f"over {goal} ms"
        p2 = f"{p95(page2):10.3f}" if page2 else f"{'-':>10}"
        log(
            f"  {label:<24} {statistics.median(samples):8.3f} {p95(samples):8.3f} {p2}  {ok} {flag}"
        )
        if show_plans:
            for line in lines:
                log(f"      {line}")


# Main ------------------------------------------------------------------------------


def run_backend(
    backend: str, invoices: int, calls: int, entities: int, runs: int, plans: bool
) -> None:
    log(f"\n== {backend}: {invoices:,} invoices, {calls:,} calls, {entities:,} entities ==")
    with tempfile.TemporaryDirectory() as var, database(backend, None) as url:
        app = open_ledger(url, Path(var))
        try:
            t0 = time.perf_counter()
            generate(app, invoices, calls, entities)
            head = app.recorder.max_notification_id() or 0
            log(f"generated {head:,} events in {time.perf_counter() - t0:.1f} s")
            runner = Runner(
                app,
                [InvoicesProjection(), InvoiceHistoryProjection(), CallsProjection()],
                page=1000,
            )
            store = runner.store
            floors = [("invoices", floor_invoices), ("calls", floor_calls)]
            for name, floor in floors if calls else floors[:1]:
                n, floor_s = floor(app, store, 1000)
                events, seconds = rebuild_rate(runner, name)
                unit = "call" if name == "calls" else "event"
                if name == "calls":
                    events = n = calls  # rows: a CallsRecorded event carries up to 1000
                rate, floor_rate = events / seconds, n / floor_s
                log(
                    f"rebuild {name:<9} {events:>10,} {unit}s {seconds:7.1f} s "
                    f"{rate:>9,.0f} {unit}/s | floor {floor_s:6.1f} s {floor_rate:>9,.0f} {unit}/s"
                    f" | ratio {rate / floor_rate:.2f} (target >= 0.5)"
                )
            events, seconds = rebuild_rate(runner, "invoice_history")
            log(
                f"rebuild history   {events:>10,} events {seconds:7.1f} s "
                f"{events / seconds:>9,.0f} event/s"
            )
            log(f"list query database time at {invoices:,} invoices (50 per page), target p95 "
                f"{'1' if backend == 'sqlite' else '2'} ms filtered, 10 ms search:")  # fmt: skip
            bench_queries(store, entities, runs, plans)
        finally:
            app.close()


def main(args: argparse.Namespace | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.projections")
    parser.add_argument("--invoices", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=500_000)
    parser.add_argument("--entities", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=200, help="samples per query")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--full", action="store_true", help="1M invoices and 10M calls")
    parser.add_argument("--plans", action="store_true", help="print every plan")
    own = parser.parse_args(sys.argv[1:] if args is None else [])
    if args is not None:
        for key in ("invoices", "full", "backend", "plans"):
            if hasattr(args, key):
                setattr(own, key, getattr(args, key))
    if own.full:
        own.invoices, own.calls = 1_000_000, 10_000_000
    backends = ["sqlite", "postgres"] if own.backend == "both" else [own.backend]
    for backend in backends:
        run_backend(backend, own.invoices, own.calls, own.entities, own.runs, own.plans)


if __name__ == "__main__":
    main()
