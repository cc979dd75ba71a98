"""Fixtures for the ledger's tests.

- `clock`: a clock that only moves when a test moves it (`advance`, `set`), injected
  into the Ledger as `clock=`, so recorded times are exact and no test sleeps.
- `ledger`: a `Ledger` built by `billtrail.bootstrap.ledger` on `database_url`
  (parametrised over SQLite and PostgreSQL by tests/conftest.py).
- `raw_log`: raw SQL on the ledger's own tables, for tampering with the stored log
  the way an attacker with database access would (bypassing the application).
- `fresh_ledgers`: for hypothesis tests, a factory of brand-new ledgers (one SQLite
  file or one PostgreSQL schema per example), parametrised over both backends.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from billtrail import bootstrap
from billtrail.settings import DatabaseURL, Settings
from ledger.app import Ledger

SEAL_KEY = "seal-key-for-tests-only-0123456789abcdef"
START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


class ManualClock:
    """Returns `now` until told otherwise; every call of a command reads it."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now
        # Run once each, in order, on the next reads of the clock: lets a test act
        # "between" two steps of a command (a concurrent writer), without mocks.
        self.on_next_read: list[Callable[[], object]] = []
        self.reads = 0

    def __call__(self) -> datetime:
        self.reads += 1
        if self.on_next_read:
            self.on_next_read.pop(0)()
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now

    def set(self, now: datetime) -> datetime:
        self.now = now
        return now


def build_ledger(database_url: str, clock: ManualClock, var_dir: Path) -> Ledger:
    settings = Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": database_url,
            "BILLTRAIL_SEAL_KEY": SEAL_KEY,
            "BILLTRAIL_VAR_DIR": str(var_dir),
        }
    )
    return bootstrap.ledger(settings, clock=clock)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ledger(database_url: str, clock: ManualClock, tmp_path: Path) -> Iterator[Ledger]:
    app = build_ledger(database_url, clock, tmp_path / "var")
    try:
        yield app
    finally:
        app.close()


class RawLog:
    """The stored log and the ledger's side tables, reached with raw SQL.

    Positions are notification ids: the rowid of `stored_events` on SQLite, the
    `notification_id` of `<schema>.ledger_events` on PostgreSQL."""

    def __init__(self, database_url: str) -> None:
        self.db = DatabaseURL.parse(database_url)
        self.backend = self.db.backend
        if self.backend == "sqlite":
            self.events = "stored_events"
            self.position = "rowid"
            self.seal, self.sources, self.calls = "ledger_seal", "ledger_sources", "ledger_calls"
        else:
            s = f'"{self.db.schema}"'
            self.events = f"{s}.ledger_events"
            self.position = "notification_id"
            self.seal = f"{s}.ledger_seal"
            self.sources = f"{s}.ledger_sources"
            self.calls = f"{s}.ledger_calls"

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in its own committed transaction; `?` marks parameters."""
        if self.backend == "sqlite":
            import sqlite3

            assert self.db.path is not None
            conn = sqlite3.connect(self.db.path)
            try:
                with conn:
                    rows = conn.execute(sql, params).fetchall()
            finally:
                conn.close()
            return rows
        with psycopg.connect(
            host=self.db.host,
            port=self.db.port,
            user=self.db.user,
            dbname=self.db.dbname,
            autocommit=True,
        ) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    # Reading -----------------------------------------------------------------

    def positions(self) -> list[int]:
        return [r[0] for r in self.run(f"SELECT {self.position} FROM {self.events} ORDER BY 1")]

    def max_position(self) -> int:
        return int(self.run(f"SELECT COALESCE(MAX({self.position}), 0) FROM {self.events}")[0][0])

    def count(self, table: str) -> int:
        return int(self.run(f"SELECT COUNT(*) FROM {getattr(self, table)}")[0][0])

    def state(self, position: int) -> bytes:
        rows = self.run(f"SELECT state FROM {self.events} WHERE {self.position} = ?", (position,))
        return bytes(rows[0][0])

    def row(self, position: int) -> tuple[Any, ...]:
        return self.run(
            f"SELECT originator_id, originator_version, topic, state FROM {self.events} "
            f"WHERE {self.position} = ?",
            (position,),
        )[0]

    # Tampering ---------------------------------------------------------------

    def set_state(self, position: int, state: bytes) -> None:
        self.run(f"UPDATE {self.events} SET state = ? WHERE {self.position} = ?", (state, position))

    def swap_states(self, a: int, b: int) -> None:
        sa, sb = self.state(a), self.state(b)
        self.set_state(a, sb)
        self.set_state(b, sa)

    def delete_event(self, position: int) -> None:
        self.run(f"DELETE FROM {self.events} WHERE {self.position} = ?", (position,))

    def delete_link(self, position: int) -> None:
        self.run(f"DELETE FROM {self.seal} WHERE notification_id = ?", (position,))

    def insert_event(self, originator_id: uuid.UUID, version: int, topic: str, state: bytes) -> int:
        """Append a forged event (no seal link: the key is not in the database)."""
        oid: Any = originator_id.hex if self.backend == "sqlite" else originator_id
        self.run(
            f"INSERT INTO {self.events} (originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?)",
            (oid, version, topic, state),
        )
        return self.max_position()


@pytest.fixture
def raw_log(database_url: str, ledger: Ledger) -> RawLog:
    """Depends on `ledger` so that the tables exist."""
    return RawLog(database_url)


FreshLedger = Callable[[], AbstractContextManager[tuple[Ledger, ManualClock, RawLog]]]


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def fresh_ledgers(request: pytest.FixtureRequest) -> FreshLedger:
    """A factory of empty ledgers, cheap enough to make one per hypothesis example."""
    backend: str = request.param
    base = request.getfixturevalue("pg_database") if backend == "postgres" else ""

    @contextmanager
    def fresh() -> Iterator[tuple[Ledger, ManualClock, RawLog]]:
        clock = ManualClock()
        with tempfile.TemporaryDirectory(prefix="billtrail-ledger-") as tmp:
            if backend == "sqlite":
                url = f"sqlite:///{Path(tmp) / 'billtrail.db'}"
            else:
                schema = f"h_{uuid.uuid4().hex[:12]}"
                with psycopg.connect(base, autocommit=True) as conn:
                    conn.execute(f'CREATE SCHEMA "{schema}"')  # type: ignore[arg-type]
                url = f"{base}?schema={schema}"
            app = build_ledger(url, clock, Path(tmp) / "var")
            try:
                yield app, clock, RawLog(url)
            finally:
                app.close()
                if backend == "postgres":
                    with psycopg.connect(base, autocommit=True) as conn:
                        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[arg-type]

    fresh.backend = backend  # type: ignore[attr-defined]
    return fresh
