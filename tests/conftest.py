"""Shared fixtures. One fixture, `database_url`, is parametrised over the two
backends: a fresh SQLite file per test, and on PostgreSQL a database made for this
test run (dropped at the end) with a fresh schema per test. With CI=true the
PostgreSQL tests must run; elsewhere they skip with the reason when no server
answers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

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
