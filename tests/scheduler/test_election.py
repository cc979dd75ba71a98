"""Electing one runner per job: on PostgreSQL an advisory lock held for the job's
run; on SQLite everyone may run (the ledger's idempotency makes it safe)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from scheduler.election import elected, lock_key
from scheduler.runner import Jobs

MakeJobs = Callable[..., Jobs]


def test_while_one_process_runs_a_job_another_skips_it_on_postgres_only(
    make_jobs: MakeJobs,
) -> None:
    a, b = make_jobs().ledger, make_jobs().ledger
    postgres = a.backend == "postgres"
    with elected(a, "past-due-sweep") as first:
        assert first is True
        with elected(b, "past-due-sweep") as second:
            assert second is not postgres
        with elected(b, "outbox") as other_job:
            assert other_job is True
    with elected(b, "past-due-sweep") as after:
        assert after is True


def test_a_manual_run_waits_for_the_running_one(
    make_jobs: MakeJobs, database_url: str, wait_until: Callable[..., None]
) -> None:
    a, b = make_jobs().ledger, make_jobs().ledger
    postgres = a.backend == "postgres"
    release = threading.Event()
    holding = threading.Event()
    order: list[str] = []

    def scheduled() -> None:
        with elected(a, "past-due-sweep"):
            holding.set()
            release.wait(10)
            order.append("scheduled done")

    def release_once_the_manual_run_waits() -> None:
        if postgres:
            key = lock_key(a.ledger_recorder.datastore.schema, "past-due-sweep")  # type: ignore[attr-defined]
            wait_until(lambda: _waiting_for(database_url, key), what="the manual run to wait")
        release.set()

    thread = threading.Thread(target=scheduled)
    thread.start()
    holding.wait(10)
    releaser = threading.Thread(target=release_once_the_manual_run_waits)
    releaser.start()
    with elected(b, "past-due-sweep", wait=10) as mine:
        order.append("manual")
        assert mine is True
    releaser.join()
    thread.join()
    if postgres:
        assert order == ["scheduled done", "manual"]


def _waiting_for(database_url: str, key: int) -> bool:
    """Whether a session waits for the advisory lock `key` (a bigint key shows in
    pg_locks as its high and low 32 bits)."""
    import psycopg

    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    with psycopg.connect(database_url.split("?")[0], autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
            (unsigned >> 32, unsigned & 0xFFFF_FFFF),
        ).fetchone()
    return bool(row and row[0])


def test_a_manual_run_that_waits_too_long_gives_up(make_jobs: MakeJobs) -> None:
    a, b = make_jobs().ledger, make_jobs().ledger
    with elected(a, "outbox"), elected(b, "outbox", wait=0.2) as mine:
        assert mine is (a.backend != "postgres")
