"""One runner per job at a time. On PostgreSQL a transaction-level advisory lock,
held in an open transaction for the job's whole run, elects the runner: another
process asking for the same job's lock meanwhile is told no and skips the run (the
scheduler's jobs) or waits for it (a command run by hand). The lock ends with the
transaction, so a process that dies releases it at once.

On SQLite there is no such lock; nothing is needed either: every job's effect is
idempotent in the ledger (an invoice becomes past due once, with its notices; a
delivery attempt is claimed once), so two runners at once do the work once and the
second finds nothing left to do."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from eventsourcing.postgres import PostgresDatastore
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Literal

from ledger.app import Ledger


def lock_key(schema: str, job: str) -> int:
    """A signed 64-bit advisory lock key per schema and job: several billtrail
    databases (schemas) can share one PostgreSQL server."""
    digest = hashlib.sha256(f"billtrail-scheduler/{schema}/{job}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def elected(ledger: Ledger, job: str, *, wait: float = 0.0) -> Iterator[bool]:
    """True inside the block when this process may run `job` now. `wait`: seconds
    to wait for another runner to finish (0: do not wait)."""
    datastore = ledger.ledger_recorder.datastore  # type: ignore[attr-defined]
    if not isinstance(datastore, PostgresDatastore):
        yield True
        return
    key = lock_key(datastore.schema, job)
    with (
        datastore.get_connection() as conn,
        conn.transaction(),
        conn.cursor(row_factory=tuple_row) as cur,
    ):
        # The job works through other connections while this transaction only holds
        # the lock: it must not be ended as idle, however long the job takes.
        cur.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        if wait > 0:
            cur.execute(SQL("SET LOCAL lock_timeout = {}").format(Literal(int(wait * 1000))))
            try:
                with conn.transaction():  # a savepoint: a timeout leaves the rest usable
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                got = True
            except psycopg.errors.LockNotAvailable:
                got = False
        else:
            cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,))
            row = cur.fetchone()
            got = bool(row and row[0])
        yield got
