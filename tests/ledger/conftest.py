"""Fixtures for the ledger's tests.

- `clock`: a clock that only moves when a test moves it (`advance`, `set`), injected
  into the Ledger as `clock=`, so recorded times are exact and no test sleeps.
- `ledger`: a `Ledger` built by `billtrail.bootstrap.ledger` on `database_url`
  (parametrised over SQLite and PostgreSQL by tests/conftest.py).
- `raw_log`: raw SQL on the ledger's own tables (tests/conftest.py `RawLog`), for
  tampering with the stored log the way an attacker with database access would.
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
from billtrail.settings import Settings
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


@pytest.fixture
def raw_log(database_url: str, ledger: Ledger, raw_log_of: Callable[[str], Any]) -> Any:
    """Depends on `ledger` so that the tables exist."""
    return raw_log_of(database_url)


# (ledger, clock, RawLog of tests/conftest.py)
FreshLedger = Callable[[], AbstractContextManager[tuple[Ledger, ManualClock, Any]]]


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def fresh_ledgers(request: pytest.FixtureRequest, raw_log_of: Callable[[str], Any]) -> FreshLedger:
    """A factory of empty ledgers, cheap enough to make one per hypothesis example."""
    backend: str = request.param
    base = request.getfixturevalue("pg_database") if backend == "postgres" else ""

    @contextmanager
    def fresh() -> Iterator[tuple[Ledger, ManualClock, Any]]:
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
                yield app, clock, raw_log_of(url)
            finally:
                app.close()
                if backend == "postgres":
                    with psycopg.connect(base, autocommit=True) as conn:
                        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[arg-type]

    fresh.backend = backend  # type: ignore[attr-defined]
    return fresh
