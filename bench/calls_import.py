"""Calls import and seal verification, each against its raw floor in the same run.

- import: `import_calls` (validate pass + record pass, call index, seal) vs a raw
  SQLite insert of the same CSV rows into a table with a UNIQUE call-id index,
  parsed with the csv module, in one transaction. Target ratio >= 0.35.
- memory: the import's peak RSS at N/5 and at N calls (flat memory: about equal).
- verify: `Ledger.verify_seal` over the imported log vs computing the same HMAC
  chain over the same bytes already in memory. Target ratio >= 0.5."""

from __future__ import annotations

import argparse
import csv
import hmac
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from pathlib import Path

ENTITIES = 12
KEY = b"b" * 64


def write_calls(path: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    start = datetime(2026, 7, 1, tzinfo=UTC)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["call_id", "entity_id", "started_at", "duration_seconds"])
        for i in range(n):
            at = start + timedelta(seconds=i * 90 * 86400 // n)
            w.writerow(
                [
                    f"call-{i:08d}",
                    f"entity-{rng.randrange(ENTITIES):02d}",
                    at.isoformat(),
                    rng.randint(5, 900),
                ]
            )


def raw_insert(path: Path, db: Path) -> float:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE calls (call_id TEXT NOT NULL UNIQUE, entity_id TEXT, "
        "started_at TEXT, duration_seconds INTEGER)"
    )
    t0 = time.perf_counter()
    with path.open(newline="") as f, conn:
        reader = csv.reader(f)
        next(reader)
        conn.executemany("INSERT INTO calls VALUES (?, ?, ?, ?)", reader)
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def child(path: Path, db: Path) -> None:
    """Runs in its own process so its peak RSS is its own."""
    from billtrail import bootstrap
    from billtrail.settings import Settings
    from ledger.sources import Source, SourceKind
    from ledger.usage.importer import EntityInfo, import_calls

    settings = Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": f"sqlite:///{db}",
            "BILLTRAIL_SEAL_KEY": KEY.decode(),
            "BILLTRAIL_VAR_DIR": str(db.parent),
        }
    )
    app = bootstrap.ledger(settings)
    src = Source(SourceKind.CLI, "bench", "bench")
    for i in range(ENTITIES):
        app.register_entity(f"Entity {i:02d}", "company", src, entity_id=f"entity-{i:02d}")
    known = {e.entity_id: EntityInfo(e.timezone, e.archived) for e in app.entities()}
    t0 = time.perf_counter()
    report = import_calls(app, path, known, datetime.now(UTC))
    elapsed = time.perf_counter() - t0
    # Peak memory of the import itself, before the verify floor loads the log.
    import_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t1 = time.perf_counter()
    result = app.verify_seal()
    verify_elapsed = time.perf_counter() - t1
    # The floor for verify: the same chain over the same bytes, already in memory.
    events = list(app.ledger_recorder.sealed_events())
    from ledger.seal import GENESIS, link_message

    t2 = time.perf_counter()
    prev = GENESIS
    for seq, event in enumerate(events, start=1):
        prev = hmac.digest(KEY, link_message(prev, seq, event), sha256)
    raw_hmac = time.perf_counter() - t2
    app.close()
    print(
        json.dumps(
            {
                "recorded": report.recorded,
                "seconds": elapsed,
                "maxrss_mb": import_rss,
                "verified": result.checked,
                "verify_ok": result.ok,
                "verify_seconds": verify_elapsed,
                "raw_hmac_seconds": raw_hmac,
                "bytes": sum(len(e.state) for e in events),
            }
        )
    )


def run_child(path: Path, db: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.calls_import", "--child", str(path), str(db)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(args: argparse.Namespace) -> None:
    n = args.calls
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        small, big = d / "small.csv", d / "big.csv"
        write_calls(small, n // 5)
        write_calls(big, n)
        raw = raw_insert(big, d / "raw.db")
        first = run_child(small, d / "small.db")
        res = run_child(big, d / "big.db")
    raw_rate = n / raw
    rate = res["recorded"] / res["seconds"]
    print(f"calls import, {n:,} calls (SQLite, one pass after validation)")
    print(f"  raw insert (csv + UNIQUE index): {raw_rate:>10,.0f} calls/s")
    print(f"  billtrail calls import:          {rate:>10,.0f} calls/s")
    print(f"  ratio: {rate / raw_rate:.2f}  (target >= 0.35)")
    print(
        f"  peak RSS: {first['maxrss_mb']:.0f} MB at {n // 5:,} calls, "
        f"{res['maxrss_mb']:.0f} MB at {n:,} calls"
    )
    v_rate = res["verified"] / res["verify_seconds"]
    raw_v = res["verified"] / res["raw_hmac_seconds"]
    print(
        f"seal verify, {res['verified']:,} events, {res['bytes'] / 1e6:.0f} MB "
        f"({'intact' if res['verify_ok'] else 'BROKEN'})"
    )
    print(f"  raw HMAC chain over the same bytes: {raw_v:>10,.0f} events/s")
    print(f"  billtrail verify:                   {v_rate:>10,.0f} events/s")
    print(f"  ratio: {v_rate / raw_v:.2f}  (target >= 0.5)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]))
