"""Shared fixtures. One fixture, `database_url`, is parametrised over the two
backends: a fresh SQLite file per test, and on PostgreSQL a database made for this
test run (dropped at the end) with a fresh schema per test. With CI=true the
PostgreSQL tests must run; elsewhere they skip with the reason when no server
answers.

Shared by every package: `run_cli` (the CLI in process, with the environment of
`cli_env`, which a package overrides) and `raw_log_of` (raw SQL on a ledger's stored
log and seal, for tampering)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

PG_HOST = os.environ.get("BILLTRAIL_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BILLTRAIL_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("BILLTRAIL_TEST_PG_USER", "postgres")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _pg_admin_connect() -> object:
    import psycopg

    return psycopg.connect(
        host=PG_HOST,
        port=PG_PORT,
        user=PG_USER,
        dbname="postgres",
        autocommit=True,
        connect_timeout=3,
    )


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database for this test run; yields its URL without schema."""
    import psycopg

    try:
        admin = _pg_admin_connect()
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but PostgreSQL at {PG_HOST}:{PG_PORT} does not answer: {exc}")
        pytest.skip(f"no PostgreSQL server answers at {PG_HOST}:{PG_PORT}")
    name = f"billtrail_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin:  # type: ignore[attr-defined]
        admin.execute(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with _pg_admin_connect() as admin2:  # type: ignore[attr-defined]
            admin2.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL with nothing in it, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'billtrail.db'}"
        return
    import psycopg

    base = request.getfixturevalue("pg_database")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base}?schema={schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def shared_dir() -> Path | None:
    """`../shared` beside the clone, when it exists (it does in CI, not in a user's clone)."""
    return SHARED if SHARED.is_dir() else None


# The CLI in process ------------------------------------------------------------------

CLI_SEAL_KEY = "cli-tests-seal-key-0123456789abcdef0123456789"


class Run(NamedTuple):
    """One CLI run: exit code and what it printed (unpacks as `code, out, err`)."""

    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        return self.out.strip().splitlines()[-1]


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment `run_cli` gives the CLI, as an operator would set it. A package
    (or module) whose commands need more (a Stripe sandbox, SMTP) overrides it; the
    override may take `cli_env` itself, this one, and extend it."""
    return {
        "BILLTRAIL_DATABASE_URL": database_url,
        "BILLTRAIL_VAR_DIR": str(tmp_path / "var"),
        "BILLTRAIL_SEAL_KEY": CLI_SEAL_KEY,
    }


@pytest.fixture
def run_cli(
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Callable[..., Run]:
    """`run_cli(*args) -> Run`: `billtrail.cli.main`, the console script's own entry
    point, run in this process with `cli_env` set and the test's tmp_path as cwd."""
    from billtrail.cli import main

    for name, value in cli_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Run:
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


# The stored log through raw SQL ----------------------------------------------------------


class RawLog:
    """The stored log and the ledger's side tables, reached with raw SQL, for tampering
    the way someone with database access (but not the seal key) would.

    Positions are notification ids: the rowid of `stored_events` on SQLite, the
    `notification_id` of `<schema>.ledger_events` on PostgreSQL."""

    def __init__(self, database_url: str) -> None:
        from billtrail.settings import DatabaseURL

        self.url = database_url
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
            lite = sqlite3.connect(self.db.path)
            try:
                with lite:
                    rows = lite.execute(sql, params).fetchall()
            finally:
                lite.close()
            return rows
        import psycopg

        with psycopg.connect(
            host=self.db.host,
            port=self.db.port,
            user=self.db.user,
            dbname=self.db.dbname,
            autocommit=True,
        ) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)
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

    def links(self) -> list[tuple[int, int, bytes]]:
        """The seal table: (seq, notification_id, mac) by seq."""
        return [
            (int(s), int(n), bytes(m))
            for s, n, m in self.run(f"SELECT seq, notification_id, mac FROM {self.seal} ORDER BY 1")
        ]

    # Tampering with events -----------------------------------------------------

    def set_state(self, position: int, state: bytes) -> None:
        self.run(f"UPDATE {self.events} SET state = ? WHERE {self.position} = ?", (state, position))

    def replace_in_state(self, position: int, old: bytes, new: bytes) -> None:
        state = self.state(position)
        assert old in state, (old, state)
        self.set_state(position, state.replace(old, new))

    def swap_states(self, a: int, b: int) -> None:
        sa, sb = self.state(a), self.state(b)
        self.set_state(a, sb)
        self.set_state(b, sa)

    def delete_event(self, position: int) -> None:
        self.run(f"DELETE FROM {self.events} WHERE {self.position} = ?", (position,))

    def insert_event(self, originator_id: uuid.UUID, version: int, topic: str, state: bytes) -> int:
        """Append a forged event (no seal link: the key is not in the database)."""
        oid: Any = originator_id.hex if self.backend == "sqlite" else originator_id
        self.run(
            f"INSERT INTO {self.events} (originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?)",
            (oid, version, topic, state),
        )
        return self.max_position()

    def insert_event_at(
        self, position: int, originator_id: uuid.UUID, version: int, topic: str, state: bytes
    ) -> None:
        """Push a forged event in at `position`, moving the events from there on up one."""
        # Through negative positions: moving them up in place would collide one by one.
        p = self.position
        self.run(f"UPDATE {self.events} SET {p} = -{p} WHERE {p} >= ?", (position,))
        self.run(f"UPDATE {self.events} SET {p} = 1 - {p} WHERE {p} < 0")
        oid: Any = originator_id.hex if self.backend == "sqlite" else originator_id
        self.run(
            f"INSERT INTO {self.events} ({p}, originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?, ?)",
            (position, oid, version, topic, state),
        )

    def truncate_events(self, position: int) -> None:
        """Delete the events from `position` on (their links stay)."""
        self.run(f"DELETE FROM {self.events} WHERE {self.position} >= ?", (position,))

    # Tampering with the seal ---------------------------------------------------

    def delete_link(self, position: int) -> None:
        """Delete the link of the event at `position` (by its notification id)."""
        self.run(f"DELETE FROM {self.seal} WHERE notification_id = ?", (position,))

    def delete_link_seq(self, seq: int) -> None:
        self.run(f"DELETE FROM {self.seal} WHERE seq = ?", (seq,))

    def set_mac(self, seq: int, mac: bytes) -> None:
        self.run(f"UPDATE {self.seal} SET mac = ? WHERE seq = ?", (mac, seq))

    def insert_link(self, seq: int, notification_id: int, mac: bytes) -> None:
        self.run(
            f"INSERT INTO {self.seal} (seq, notification_id, mac) VALUES (?, ?, ?)",
            (seq, notification_id, mac),
        )

    def truncate_links(self, seq: int) -> None:
        """Delete the links from `seq` on (their events stay)."""
        self.run(f"DELETE FROM {self.seal} WHERE seq >= ?", (seq,))

    def rewrite_links(self, links: list[tuple[int, int, bytes]]) -> None:
        """Replace the whole seal table with `links` (seq, notification_id, mac)."""
        self.run(f"DELETE FROM {self.seal}")
        for seq, nid, mac in links:
            self.insert_link(seq, nid, mac)


@pytest.fixture(scope="session")
def raw_log_of() -> Callable[[str], RawLog]:
    """`raw_log_of(database_url)`: the RawLog of a database (its ledger's tables must
    exist). A fixture, not an import: tests do not import conftest modules."""
    return RawLog
