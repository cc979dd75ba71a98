"""The admin's filtered invoice list at scale, each figure beside a floor measured
in the same run.

- the book: N invoices over N/500 entities (bench.projections' generator, through
  the Ledger: events, seal), the read models rebuilt, an admin login added.
- one client: p50/p95 of GET /admin/invoices?status=paid&entity=E (another entity
  each time, a full page of 50 rows) through the Flask test client, logged in as
  the admin. Target: p95 <= 6 ms.
- the floor: the same app answering /bench/floor, which renders the same template
  with the same context (the 50 rows as a constant list) the real view rendered
  once, for the same admin, with no database, no user lookup, no validation.
- profile: the SQL statements and Jinja compilations of one warm page (targets:
  a fixed handful, none per row; no compilation), and the functions it spends on.
- 16 connections: gunicorn with 2 workers on loopback, driven by 16 keep-alive
  http.client connections in 2 processes; pages/s of the list and of the floor on
  the same server, and the server's CPU time per page. Twice: sync workers (they
  close each connection) and gthread workers (the README's production command: 8
  threads each, keep-alive). Target: >= 1,000 pages/s.

The machine's load average is printed with the figures: on a shared 2-core box
other work moves them a lot.

    python -m bench portal                          (50,000 invoices; minutes)
    make bench BENCH_ARGS="portal --invoices 1000000"
    python -m bench.portal --invoices 1000000 --keep var/bench-portal --backend both
        (--keep DIR: build the book once and reuse it on later runs: on SQLite in DIR,
        on PostgreSQL in the database bench_portal_kept, left for the next run)
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import json
import multiprocessing
import os
import pstats
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask, g, render_template, template_rendered
from flask.testing import FlaskClient

from bench.projections import PG_URL, SEAL_KEY, database, entity_ids, generate, open_ledger
from bench.webhooks import free_port
from ledger.sources import Source
from projections.runner import Runner

ADMIN_EMAIL = "bench-admin@billtrail.example"
PASSWORD = "bench admin password"
SECRET_KEY = "bench-portal-secret-key-0123456789abcdef"
PG_KEPT = "bench_portal_kept"  # the PostgreSQL database --keep builds once
PER_ENTITY = 500  # invoices per entity: 60% paid, so each filtered page is full
LIST_PATH = "/admin/invoices"
FLOOR_PATH = "/bench/floor"
CONNECTIONS = 16
PROCESSES = 2
# What a list page is made of, timed without the profiler: the view module's names
# for the filters' validation, the read model's query and the rendering.
PARTS = ["load", "invoice_listing", "render_template"]
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def log(message: str) -> None:
    print(message, flush=True)


# The book --------------------------------------------------------------------------


def entities_for(invoices: int) -> int:
    return max(1, invoices // PER_ENTITY)


def build(url: str, var: Path, invoices: int) -> None:
    """N invoices in the ledger and the read models, and the admin who reads them."""
    app = open_ledger(url, var)
    try:
        t0 = time.perf_counter()
        generate(app, invoices, 0, entities_for(invoices))
        app.add_user(ADMIN_EMAIL, "admin", PASSWORD, Source("seed", "bench-admin"))
        log(f"  generated {invoices:,} invoices in {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        Runner(app, page=1000).rebuild()
        log(f"  read models rebuilt in {time.perf_counter() - t0:.0f} s")
    finally:
        app.close()


@contextmanager
def book(backend: str, invoices: int, keep: Path | None) -> Iterator[tuple[str, Path]]:
    """(database URL, var dir) of a book of N invoices: built here, or on SQLite
    with --keep, built once in that directory and reused while N is the same."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        marker = keep / f"built-{backend}.json"
        if backend == "sqlite":
            url = f"sqlite:///{keep / 'bench.db'}"
        else:
            # A database of its own, left in place for the next run (drop it by hand).
            url = PG_URL.rsplit("/", 1)[0] + f"/{PG_KEPT}"
        if not marker.exists() or json.loads(marker.read_text()) != {"invoices": invoices}:
            marker.unlink(missing_ok=True)
            fresh_database(backend, keep)
            build(url, keep, invoices)
            marker.write_text(json.dumps({"invoices": invoices}))
        else:
            log(f"  reusing the book kept in {keep} ({url})")
        yield url, keep
        return
    with tempfile.TemporaryDirectory() as var, database(backend, None) as url:
        build(url, Path(var), invoices)
        yield url, Path(var)


# The pages ---------------------------------------------------------------------------


def queries(invoices: int, n: int = 200, seed: int = 5) -> list[str]:
    """Query strings of the filtered list: paid invoices of one entity each."""
    rng = random.Random(seed)
    ids = entity_ids(entities_for(invoices))
    return ["?" + urlencode({"status": "paid", "entity": rng.choice(ids)}) for _ in range(n)]


def settings_env(url: str, var: Path) -> dict[str, str]:
    # One session key for every worker: a session made by one is read by the other.
    return {
        "BILLTRAIL_DATABASE_URL": url,
        "BILLTRAIL_SEAL_KEY": SEAL_KEY,
        "BILLTRAIL_VAR_DIR": str(var),
        "BILLTRAIL_SECRET_KEY": SECRET_KEY,
    }


def log_in(client: FlaskClient) -> FlaskClient:
    form = client.get("/login").get_data(as_text=True)
    token = _CSRF.search(form)
    assert token, "no CSRF token on /login"
    data = {"email": ADMIN_EMAIL, "password": PASSWORD, "csrf_token": token.group(1)}
    answer = client.post("/login", data=data)
    if answer.status_code != 302:
        raise RuntimeError(f"the bench admin could not log in: {answer.status_code}")
    return client


def capture(web: Flask, path: str) -> dict[str, Any]:
    """The template and the context the real view renders for `path` (minus what
    Flask's context processors add on every render), and the page it made."""
    client = log_in(web.test_client())
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(sender: Flask, template: Any, context: dict[str, Any], **_: Any) -> None:
        seen.append((str(template.name), dict(context)))

    with template_rendered.connected_to(record, web):
        answer = client.get(path)
    if answer.status_code != 200 or not seen:
        raise RuntimeError(f"{path} answered {answer.status_code}")
    name, context = seen[-1]
    with web.test_request_context():
        injected: dict[str, Any] = {}
        web.update_template_context(injected)
    own = {k: v for k, v in context.items() if k not in injected}
    return {"template": name, "context": own, "html": answer.get_data(as_text=True)}


def with_floor(web: Flask, query: str) -> Flask:
    """`web` with the floor page at FLOOR_PATH: what the list page costs without its
    work (the login check, the filters' validation, the queries): the same template
    rendered with the same context, the 50 rows a constant list."""
    from web.auth import Principal

    page: dict[str, Any] = {}
    admin = Principal(ADMIN_EMAIL, "admin", None)

    @web.get(FLOOR_PATH)
    def floor() -> str:
        # The admin as Flask-Login keeps it for the request, without loading it.
        g._login_user = admin
        return render_template(page["template"], **page["context"])

    page.update(capture(web, LIST_PATH + query))
    return web


def served_app() -> Flask:
    """What a gunicorn worker serves (`bench.portal:served_app()`): the portal from
    the production factory (settings from the environment), the floor beside it."""
    from billtrail import bootstrap

    return with_floor(bootstrap.web_app(), os.environ["BENCH_FLOOR_QUERY"])


# One client --------------------------------------------------------------------------


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1] if len(samples) >= 100 else max(samples)


def timed(client: FlaskClient, paths: list[str], runs: int) -> list[float]:
    samples = []
    for n in range(runs):
        t0 = time.perf_counter()
        answer = client.get(paths[n % len(paths)])
        samples.append((time.perf_counter() - t0) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"{paths[n % len(paths)]} answered {answer.status_code}")
    return samples


def _calls(stats: pstats.Stats, match: Any) -> int:
    entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    return sum(int(v[1]) for k, v in entries.items() if match(*k))


def _sql(file: str, _: int, name: str) -> bool:
    return ("sqlite3" in name and "execute" in name) or ("psycopg" in file and name == "execute")


def _compile(file: str, _: int, name: str) -> bool:
    return file.endswith("jinja2/environment.py") and name == "compile"


def profile(client: FlaskClient, paths: list[str], pages: int = 20) -> None:
    """SQL statements and template compilations per warm page, and where it goes."""
    profiler = cProfile.Profile()
    profiler.enable()
    timed(client, paths, pages)
    profiler.disable()
    stats = pstats.Stats(profiler)
    sql, compiled = _calls(stats, _sql) / pages, _calls(stats, _compile) / pages
    flag = "" if sql <= 10 and compiled == 0 else "  <- over (a query per row? compiling?)"
    log(f"  per page: {sql:.1f} SQL statements, {compiled:.1f} template compilations{flag}")
    entries: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    callers: Counter[str] = Counter()
    for key, value in entries.items():
        if _sql(*key):
            for (file, line, name), counts in value[4].items():
                callers[f"{name} {Path(file).parent.name}/{Path(file).name}:{line}"] += counts[0]
    for caller, n in callers.most_common():
        log(f"    {n / pages:4.1f} statements from {caller}")
    log("  where a page's time goes (own time, top 10):")
    top = sorted(entries.items(), key=lambda kv: -float(kv[1][2]))[:10]
    for (file, line, name), (_, calls, own, _cum, _) in top:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else ""
        log(f"    {own / pages * 1000:6.3f} ms {calls / pages:7.1f}x  {name} {where}")


def parts(web: Flask, client: FlaskClient, paths: list[str], runs: int = 200) -> None:
    """Mean wall time per page of each part of the view (wrapped in timers in this
    process), of loading the user, and of the rest (Flask, the login check, the
    test client), beside the floor's whole page."""
    from web.admin import invoices as view

    spent: dict[str, float] = {}

    def timer(name: str, fn: Any) -> Any:
        def timed_part(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

        return timed_part

    manager: Any = web.login_manager  # type: ignore[attr-defined]
    saved = {name: getattr(view, name) for name in PARTS if hasattr(view, name)}
    saved_loader = manager._user_callback
    for name, fn in saved.items():
        setattr(view, name, timer(name, fn))
    manager._user_callback = timer("load_user", saved_loader)
    try:
        t0 = time.perf_counter()
        timed(client, [LIST_PATH + q for q in paths], runs)
        total = time.perf_counter() - t0
    finally:
        for name, fn in saved.items():
            setattr(view, name, fn)
        manager._user_callback = saved_loader
    t0 = time.perf_counter()
    timed(client, [FLOOR_PATH + q for q in paths], runs)
    floor = time.perf_counter() - t0
    shown = ", ".join(f"{name} {spent[name] / runs * 1000:.2f}" for name in spent)
    rest = (total - sum(spent.values())) / runs * 1000
    log(
        f"  a list page's parts (mean ms): {shown}, the rest {rest:.2f}; whole page "
        f"{total / runs * 1000:.2f}, the floor's {floor / runs * 1000:.2f}"
    )


def one_client(url: str, var: Path, paths: list[str], runs: int) -> dict[str, Any]:
    from billtrail import bootstrap
    from billtrail.settings import Settings

    web = with_floor(bootstrap.web_app(Settings.from_env(settings_env(url, var))), paths[0])
    web.testing = True
    try:
        client = log_in(web.test_client())
        pages = [LIST_PATH + q for q in paths]
        floors = [FLOOR_PATH + q for q in paths]
        timed(client, pages, 50)  # warm: caches, the template, the database's pages
        timed(client, floors, 50)
        listed, floor = timed(client, pages, runs), timed(client, floors, runs)
        log(
            f"one client, Flask test client, {runs} pages of the filtered list "
            "(status + entity, 50 rows):"
        )
        log(
            f"  list  p50 {statistics.median(listed):6.2f} ms  p95 {percentile(listed, 95):6.2f} ms"
            f"  | floor p50 {statistics.median(floor):6.2f} ms  p95 {percentile(floor, 95):6.2f} ms"
            f"  | p95 ratio {percentile(listed, 95) / percentile(floor, 95):.1f}  "
            "(target list p95 <= 6 ms)"
        )
        log(f"  list page: {len(client.get(pages[0]).get_data()):,} bytes")
        parts(web, client, paths)
        profile(client, pages)
        return {"p50": statistics.median(listed), "p95": percentile(listed, 95)}
    finally:
        bootstrap.close_web_app(web)


# 16 connections ------------------------------------------------------------------------


@contextmanager
def gunicorn(
    env: dict[str, str], workers: int, worker_class: str, threads: int = 8
) -> Iterator[tuple[int, int]]:
    """The README's production command on loopback (`-w 2`, its gthread workers or
    sync ones), serving bench.portal:served_app() (the production factory plus the
    floor)."""
    port = free_port()
    per_worker = ["--threads", str(threads)] if worker_class == "gthread" else []
    server = subprocess.Popen(
        [
            *[sys.executable, "-m", "gunicorn", "-w", str(workers), "-k", worker_class],
            *per_worker,
            *["-b", f"127.0.0.1:{port}", "--log-level", "warning", "--no-control-socket"],
            "bench.portal:served_app()",
        ],
        env={**os.environ, **env},
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("GET", "/login")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.1)
        yield port, server.pid
    finally:
        server.terminate()
        server.wait(timeout=30)


def http_log_in(port: int) -> str:
    """The admin's session cookie, from the login form over HTTP."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/login")
    answer = conn.getresponse()
    form = answer.read().decode()
    cookie = _cookie(answer)
    token = _CSRF.search(form)
    assert token, "no CSRF token on /login"
    body = urlencode({"email": ADMIN_EMAIL, "password": PASSWORD, "csrf_token": token.group(1)})
    headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    conn.request("POST", "/login", body, headers)
    answer = conn.getresponse()
    answer.read()
    if answer.status != 302:
        raise RuntimeError(f"the bench admin could not log in over HTTP: {answer.status}")
    return _cookie(answer)


def _cookie(answer: http.client.HTTPResponse) -> str:
    for header in answer.headers.get_all("Set-Cookie") or []:
        if header.startswith("billtrail_session="):
            return header.split(";", 1)[0]
    raise RuntimeError("no session cookie")


def _connection(
    port: int, paths: list[str], cookie: str, window: tuple[float, float], out: list[Any]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    n = random.randrange(len(paths))
    while True:
        t0 = time.time()
        if t0 >= window[1]:
            break
        conn.request("GET", paths[n % len(paths)], headers={"Cookie": cookie})
        answer = conn.getresponse()
        answer.read()
        t1 = time.time()
        n += 1
        if window[0] <= t0 and t1 < window[1]:
            statuses[answer.status] += 1
            latencies.append(t1 - t0)
        if answer.will_close:
            conn.close()  # the next request opens a new one (sync workers close each)
    conn.close()
    out.append((statuses, latencies))


def _load_process(
    port: int, paths: list[str], cookie: str, threads: int, pipe: Any
) -> None:  # pragma: no cover - runs in a child process
    pipe.send("ready")
    window = pipe.recv()
    out: list[Any] = []
    running = [
        threading.Thread(target=_connection, args=(port, paths, cookie, window, out))
        for _ in range(threads)
    ]
    for t in running:
        t.start()
    for t in running:
        t.join()
    pipe.send(out)


def server_cpu(master: int) -> float:
    """CPU seconds used so far by gunicorn's master and its workers (from /proc)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == master or int(stat[1]) == master:
            total += int(stat[11]) + int(stat[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def drive(port: int, paths: list[str], cookie: str, seconds: float, server: int) -> dict[str, Any]:
    """CONNECTIONS keep-alive connections in PROCESSES processes for `seconds` (after
    a 2 s warm-up): pages/s counting 200s, latencies, the load average, and the
    server's CPU time per page, which other work on the machine does not move much
    (pages/s does: the workers wait for a core)."""
    context = multiprocessing.get_context("spawn")
    children = []
    for _ in range(PROCESSES):
        mine, theirs = context.Pipe()
        child = context.Process(
            target=_load_process,
            args=(port, paths, cookie, CONNECTIONS // PROCESSES, theirs),
        )
        child.start()
        children.append((child, mine))
    for _, pipe in children:
        pipe.recv()
    start = time.time() + 2.0
    for _, pipe in children:
        pipe.send((start, start + seconds))
    time.sleep(max(0.0, start - time.time()))
    cpu = server_cpu(server)
    time.sleep(max(0.0, start + seconds - time.time()))
    cpu = server_cpu(server) - cpu
    results = [r for _, pipe in children for r in pipe.recv()]
    for child, _ in children:
        child.join()
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    for got, lat in results:
        statuses.update(got)
        latencies.extend(lat)
    latencies.sort()
    return {
        "per_s": statuses[200] / seconds,
        "statuses": dict(statuses),
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "load": os.getloadavg()[0],
        "cpu_ms": cpu * 1000 / max(1, statuses[200]),
    }


def concurrent(
    url: str,
    var: Path,
    paths: list[str],
    seconds: float,
    workers: int,
    worker_class: str,
    threads: int,
) -> dict[str, Any]:
    env = {**settings_env(url, var), "BENCH_FLOOR_QUERY": paths[0]}
    with gunicorn(env, workers, worker_class, threads) as (port, pid):
        cookie = http_log_in(port)
        before = os.getloadavg()[0]
        listed = drive(port, [LIST_PATH + q for q in paths], cookie, seconds, pid)
        floor = drive(port, [FLOOR_PATH + q for q in paths], cookie, seconds, pid)
    log(
        f"{CONNECTIONS} keep-alive connections ({PROCESSES} processes), gunicorn -w {workers} "
        f"-k {worker_class}{f' --threads {threads}' if worker_class == 'gthread' else ''}, "
        f"{seconds:.0f} s each:"
    )
    for label, r in (("list ", listed), ("floor", floor)):
        log(
            f"  {label} {r['per_s']:7,.0f} pages/s  p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms"
            f"  answers {r['statuses']}  load average {r['load']:.1f}"
        )
        log(
            f"        server CPU {r['cpu_ms']:5.2f} ms/page: {workers * 1000 / r['cpu_ms']:,.0f} "
            f"pages/s if the {workers} workers had a core each to themselves"
        )
    log(
        f"  ratio list/floor {listed['per_s'] / floor['per_s']:.2f} in pages/s, "
        f"{floor['cpu_ms'] / listed['cpu_ms']:.2f} in CPU per page  (target list >= 1,000 "
        f"pages/s); load average before {before:.1f}"
    )
    return {"list": listed, "floor": floor}


def fresh_database(backend: str, keep: Path) -> None:
    for stale in keep.glob("bench.db*"):
        stale.unlink()
    if backend == "postgres":
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{PG_KEPT}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{PG_KEPT}"')


def main(args: argparse.Namespace | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.portal")
    parser.add_argument("--invoices", type=int, default=50_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--keep", type=Path, default=None, help="build the book once, keep it")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--runs", type=int, default=500, help="pages timed for one client")
    parser.add_argument("--seconds", type=float, default=10, help="each load run")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-class", choices=["sync", "gthread", "both"], default="both")
    parser.add_argument("--threads", type=int, default=8, help="per gthread worker")
    parser.add_argument("--one-client", action="store_true", help="skip the 16 connections")
    own = parser.parse_args(sys.argv[1:] if args is None else [])
    if args is not None and hasattr(args, "invoices"):
        own.invoices = args.invoices
    backends = ["sqlite", "postgres"] if own.backend == "both" else [own.backend]
    for backend in backends:
        log(f"\n== portal, {backend}: {own.invoices:,} invoices ==")
        with book(backend, own.invoices, own.keep) as (url, var):
            if own.build_only:
                continue
            paths = queries(own.invoices)
            one_client(url, var, paths, own.runs)
            if own.one_client:
                continue
            both = ["sync", "gthread"] if own.worker_class == "both" else [own.worker_class]
            for worker_class in both:
                concurrent(url, var, paths, own.seconds, own.workers, worker_class, own.threads)


if __name__ == "__main__":
    main()
