"""Stripe webhooks acknowledged through HTTP, beside their floors in the same run.

- floor: what acknowledging costs at the very least: verify the signature with
  the SDK and insert the raw payload and its SHA-256 into a plain SQLite table
  (WAL, the library's default durability), one transaction per event, one
  thread, no HTTP.
- HTTP floor: the same server and load answering 200 without verifying or
  storing anything: what the HTTP stack alone costs on this machine.
- billtrail: the app from `web.create_app` served by gunicorn (2 workers, gthread;
  or werkzeug's threaded server with --server werkzeug) on loopback, driven by
  concurrent clients in another process (asyncio, raw sockets, a new connection
  per delivery unless --keep-alive), 10% of the deliveries redeliveries of events
  already sent; meanwhile the inbox worker, in this process (a worker process
  beside the web ones), re-reads the invoices from a sandbox at Stripe's
  test-mode rate and settles the events. Target: >= 1,000 acknowledged/s with
  p99 <= 25 ms on SQLite.

The machine's load average is printed with the figures: on a shared 2-core box
other work moves them a lot.

    python -m bench webhooks
    python -m bench.webhooks --deliveries 20000 --concurrency 8 [--keep-alive]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from hashlib import sha256
from pathlib import Path
from typing import Any

DELIVERIES = 10_000
CONCURRENCY = 8
WARMUP = 500
REDELIVERED = 0.10
SECRET = "whsec_bench_secret"
SEAL_KEY = "bench-webhooks-seal-key-0123456789abcdef"
INVOICES = 40


# The deliveries ---------------------------------------------------------------------


def make_deliveries(
    invoices: list[dict[str, Any]], n: int, seed: int = 1
) -> list[tuple[str, bytes]]:
    """(event id, body) in sending order, 10% of them repeats of earlier ones."""
    rng = random.Random(seed)
    kinds = ["invoice.updated", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded"]
    sent: list[tuple[str, bytes]] = []
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        if sent and rng.random() < REDELIVERED:
            out.append(rng.choice(sent))
            continue
        if i % 20 == 19:
            obj: dict[str, Any] = {"id": f"cus_bench{i}", "object": "customer", "email": None}
            kind = "customer.updated"
        else:
            obj, kind = rng.choice(invoices), rng.choice(kinds)
        event = {
            "id": f"evt_bench{i:07d}",
            "object": "event",
            "account": None,
            "api_version": "2026-10-28.endive",
            "context": None,
            "created": 1_767_225_600 + i,
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
        delivery = (str(event["id"]), json.dumps(event, indent=2).encode())
        sent.append(delivery)
        out.append(delivery)
    return out


def signature(body: bytes, timestamp: int) -> str:
    import stripe

    return str(stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET, timestamp))


# The floor --------------------------------------------------------------------------


def floor(deliveries: list[tuple[str, bytes]], db: Path) -> float:
    """Acknowledgements per second with nothing but verify and a raw insert."""
    import stripe

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE inbox (id TEXT PRIMARY KEY, payload TEXT, sha256 TEXT)")
    now = int(time.time())
    signed = [(i, body, signature(body, now)) for i, body in deliveries]
    t0 = time.perf_counter()
    for event_id, body, header in signed:
        text = body.decode()
        stripe.WebhookSignature.verify_header(text, header, SECRET, tolerance=300)
        conn.execute("BEGIN")
        conn.execute(
            "INSERT OR IGNORE INTO inbox VALUES (?, ?, ?)",
            (event_id, text, sha256(body).hexdigest()),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return len(signed) / elapsed


# The load generator (its own process: its own interpreter lock) ---------------------


def _request(port: int, body: bytes, header: str, keep_alive: bool) -> bytes:
    head = (
        f"POST /stripe/webhook HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
        f"Stripe-Signature: {header}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one response; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return int(head[9:12])


async def _drive(
    port: int, requests: list[bytes], concurrency: int, keep_alive: bool
) -> tuple[float, list[float], dict[int, int]]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(requests)

    async def client() -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for raw in queue:
            t0 = time.perf_counter()
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = connection
            writer.write(raw)
            await writer.drain()
            status = await _answer(reader)
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            if not keep_alive:
                writer.close()
                await writer.wait_closed()
                connection = None
        if connection is not None:
            connection[1].close()
            await connection[1].wait_closed()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies, statuses


def load(
    port: int,
    deliveries: list[tuple[str, bytes]],
    concurrency: int,
    warmup: int,
    keep_alive: bool,
    out: Any,
) -> None:
    now = int(time.time())
    requests = [_request(port, body, signature(body, now), keep_alive) for _, body in deliveries]
    asyncio.run(_drive(port, requests[:warmup], concurrency, keep_alive))
    elapsed, latencies, statuses = asyncio.run(
        _drive(port, requests[warmup:], concurrency, keep_alive)
    )
    out.send({"elapsed": elapsed, "latencies": latencies, "statuses": statuses})
    out.close()


# The run ----------------------------------------------------------------------------


def sandbox_invoices(client: Any, ledger: Any, n: int) -> list[dict[str, Any]]:
    """Real invoices for the worker to re-read, as Stripe renders them."""
    from adapters.stripe.testing import BillingWorld

    world = BillingWorld.create(client, ledger)
    ids = []
    for i in range(n // 4):
        who = world.customer(f"entity-{i:02d}")
        world.subscribe(who)
        for j in range(3):
            ids.append(world.manual_invoice(who, [(f"Item {j}", 1_000 + j)]).id)
    ids += [i.id for i in client.v1.invoices.list({"limit": 100}).data if i.id not in ids]
    found = []
    for invoice_id in ids[:n]:
        raw = client.v1.invoices.retrieve(invoice_id).last_response
        found.append(dict(raw.data))
    return found


def served_app() -> Any:
    """The app a gunicorn worker serves (`bench.webhooks:served_app()`), built in
    the worker after the fork: its store's writer thread must be its own. Webhooks
    are only acknowledged here; the bench's own process processes them behind."""
    from billtrail import bootstrap
    from billtrail.settings import Settings
    from web import create_app

    if os.environ.get("BENCH_HTTP_ONLY"):
        return http_only_app()
    settings = Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": os.environ["BENCH_DATABASE_URL"],
            "BILLTRAIL_SEAL_KEY": SEAL_KEY,
            "BILLTRAIL_VAR_DIR": os.environ["BENCH_VAR_DIR"],
            "STRIPE_WEBHOOK_SECRET": SECRET,
        }
    )
    return create_app(bootstrap.ledger(settings), None, settings, start_worker=False)


def http_only_app() -> Any:
    """The HTTP floor: the same route on Flask, answering 200 without verifying or
    storing anything."""
    from flask import Flask, jsonify, request

    app = Flask(__name__)

    @app.post("/stripe/webhook")
    def webhook() -> Any:
        request.get_data()
        return jsonify(received="evt"), 200

    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def gunicorn(
    database_url: str, var_dir: Path, workers: int, http_only: bool = False
) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "BENCH_DATABASE_URL": database_url, "BENCH_VAR_DIR": str(var_dir)}
    if http_only:
        env["BENCH_HTTP_ONLY"] = "1"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--worker-class",
            "gthread",
            "--threads",
            "8",
            "--bind",
            f"127.0.0.1:{port}",
            "--keep-alive",
            "30",
            "--graceful-timeout",
            "5",
            "--no-control-socket",
            "--log-level",
            "warning",
            "bench.webhooks:served_app()",
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def werkzeug(app: Any, http_only: bool = False) -> Iterator[int]:
    if http_only:
        app = http_only_app()
    from adapters.stripe.testing import LoopbackServer

    with LoopbackServer(app) as server:
        yield int(server.url.rsplit(":", 1)[1])


def drive(
    port: int, deliveries: list[tuple[str, bytes]], concurrency: int, keep_alive: bool
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(
        target=load, args=(port, deliveries, concurrency, WARMUP, keep_alive, sending)
    )
    child.start()
    result: dict[str, Any] = receiving.recv()
    child.join()
    return result


def run(
    deliveries_n: int,
    concurrency: int,
    server: str,
    workers: int,
    keep_alive: bool,
    processing: bool = True,
) -> dict[str, Any]:
    from adapters.stripe.client import close_client, limiter_for, make_client
    from adapters.stripe.processing import InboxWorker
    from adapters.stripe.sandbox import start_sandbox
    from billtrail import bootstrap
    from billtrail.settings import Settings
    from web import create_app, shutdown

    with tempfile.TemporaryDirectory() as tmp, start_sandbox(seed="bench") as sandbox:
        d = Path(tmp)
        url = f"sqlite:///{d / 'billtrail.db'}"
        settings = Settings.from_env(
            {
                "BILLTRAIL_DATABASE_URL": url,
                "BILLTRAIL_SEAL_KEY": SEAL_KEY,
                "BILLTRAIL_VAR_DIR": str(d),
                "STRIPE_WEBHOOK_SECRET": SECRET,
                "STRIPE_API_BASE": sandbox.url,
            }
        )
        ledger = bootstrap.ledger(settings)
        client = make_client(sandbox.api_key, sandbox.url)
        invoices = sandbox_invoices(client, ledger, INVOICES)
        deliveries = make_deliveries(invoices, WARMUP + deliveries_n)
        raw_rate = floor(deliveries[WARMUP:], d / "floor.db")
        # The HTTP floor: the same server and load, without verifying or storing.
        plain_app = None if server == "gunicorn" else http_only_app()
        plain = werkzeug(plain_app) if plain_app else gunicorn(url, d, workers, http_only=True)
        with plain as port:
            http_floor = drive(port, deliveries, concurrency, keep_alive)
        # Processing behind, in this process (a worker process next to the web ones).
        worker = InboxWorker(ledger, client, limiter=limiter_for(sandbox.api_key), poll=0.5)
        if processing:
            worker.start()
        app = create_app(ledger, None, settings, start_worker=False)
        try:
            serving = werkzeug(app) if server == "werkzeug" else gunicorn(url, d, workers)
            with serving as port:
                result = drive(port, deliveries, concurrency, keep_alive)
        finally:
            worker.stop()
            shutdown(app)
            close_client(client)
            head = ledger.recorder.max_notification_id()
            stored = sum(1 for _ in ledger.events_of_topics(["billtrail:StripeEvent.Received"]))
            ledger.close()
    lat = sorted(result["latencies"])
    plain_lat = sorted(http_floor["latencies"])
    return {
        "http_floor_per_s": len(plain_lat) / http_floor["elapsed"],
        "http_floor_p50_ms": statistics.median(plain_lat) * 1000,
        "http_floor_p99_ms": plain_lat[int(len(plain_lat) * 0.99) - 1] * 1000,
        "deliveries": len(lat),
        "distinct_events": len({i for i, _ in deliveries}),
        "ack_per_s": len(lat) / result["elapsed"],
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000,
        "max_ms": lat[-1] * 1000,
        "statuses": result["statuses"],
        "floor_per_s": raw_rate,
        "stored": stored,
        "processed_behind": worker.report.processed + worker.report.ignored,
        "invoices_read_behind": worker.report.invoices_read,
        "log_head": head,
        "load": os.getloadavg()[0],
    }


def main(args: argparse.Namespace) -> None:
    n = getattr(args, "deliveries", DELIVERIES)
    concurrency = getattr(args, "concurrency", CONCURRENCY)
    server = getattr(args, "server", "gunicorn")
    workers = getattr(args, "workers", 2)
    keep_alive = getattr(args, "keep_alive", False)
    processing = not getattr(args, "no_processing", False)
    r = run(n, concurrency, server, workers, keep_alive, processing)
    ratio = r["ack_per_s"] / r["floor_per_s"]
    serving = f"gunicorn, {workers} workers" if server == "gunicorn" else "werkzeug, threaded"
    connections = "keep-alive connections" if keep_alive else "a new connection per delivery"
    print(
        f"Stripe webhooks, {r['deliveries']:,} deliveries through HTTP ({REDELIVERED:.0%} "
        f"redeliveries), {concurrency} concurrent clients, {connections}, {serving}, SQLite"
    )
    print(f"  floor (SDK verify + raw SQLite insert, no HTTP):  {r['floor_per_s']:>8,.0f} /s")
    print(
        f"  HTTP floor (same server, 200 without verify/store): {r['http_floor_per_s']:>6,.0f} /s"
        f"  p50 {r['http_floor_p50_ms']:.1f} ms, p99 {r['http_floor_p99_ms']:.1f} ms"
    )
    print(
        f"  billtrail acknowledged through HTTP:              {r['ack_per_s']:>8,.0f} /s"
        f"  p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms"
    )
    print(
        f"  ratio to the floor: {ratio:.2f}; to the HTTP floor: "
        f"{r['ack_per_s'] / r['http_floor_per_s']:.2f}  (target >= 1,000/s with p99 <= 25 ms)"
    )
    print(
        f"  answers {r['statuses']}; {r['stored']:,} distinct events stored; behind them "
        f"{r['invoices_read_behind']:,} invoice re-reads settled {r['processed_behind']:,} "
        f"events; load average {r['load']:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks")
    parser.add_argument("--deliveries", type=int, default=DELIVERIES)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--server", choices=["gunicorn", "werkzeug"], default="gunicorn")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--keep-alive", action="store_true", help="reuse connections")
    parser.add_argument(
        "--no-processing", action="store_true", help="acknowledge only, process nothing behind"
    )
    main(parser.parse_args())
