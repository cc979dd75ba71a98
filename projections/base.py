"""The projection machinery: tables described once and created per backend, a store
on the ledger's own database, and the base class of every read model.

Exactly once: a projection's rows and its tracking position are written in ONE
transaction, and that transaction first reads the position under a lock, so a page
delivered twice (two runners, a retry after a crash) applies only the events after
the position. Each projection has its own tracking row, named
`<application>/<projection>`: on SQLite the library's `tracking` table is one per
file, so billtrail keeps its own `projection_tracking` table instead."""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore
from psycopg.rows import tuple_row

SQLITE = "sqlite"
POSTGRES = "postgres"

# Column types of the read models, mapped to each backend. Money is exact text on
# SQLite and NUMERIC on PostgreSQL; dates are ISO text on SQLite.
_TYPES = {
    SQLITE: {
        "text": "TEXT",
        "int": "INTEGER",
        "bigint": "INTEGER",
        "date": "TEXT",
        "decimal": "TEXT",
        "timestamp": "TEXT",
        "json": "TEXT",
        "bool": "INTEGER",
    },
    POSTGRES: {
        "text": "text",
        "int": "integer",
        "bigint": "bigint",
        "date": "date",
        "decimal": "numeric",
        "timestamp": "timestamptz",
        "json": "text",
        "bool": "boolean",
    },
}

# Units of `*_units` sort columns: a ten-thousandth of the currency's major unit,
# exact for every Stripe amount (at most three decimals) and comparable across
# currencies with different minor units (JPY, USD, KWD).
UNITS_PER_MAJOR = 10_000


def to_units(amount: Decimal) -> int:
    return int((amount * UNITS_PER_MAJOR).to_integral_value())


def timestamp_text(at: datetime) -> str:
    # Fixed width, always UTC, so text order is time order on SQLite.
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date()


@dataclass(frozen=True)
class Col:
    name: str
    type: str
    nullable: bool = True


@dataclass(frozen=True)
class Table:
    """A read-model table: columns, primary key and secondary indexes.

    `rowid_key` names an integer column that becomes the SQLite rowid (and the
    PostgreSQL primary key), so keyset pagination on it costs nothing extra."""

    name: str
    cols: tuple[Col, ...]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    unique: tuple[tuple[str, ...], ...] = ()
    rowid_key: str | None = None
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Made with the table (not deferred after a bulk load like `extra`), because
    # the projection writes them itself.
    companions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def col_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cols)

    def types(self) -> dict[str, str]:
        return {c.name: c.type for c in self.cols}

    def row_encoder(self, backend: str) -> Callable[[Mapping[str, Any]], list[Any]]:
        """Turns a row of Python values into the column values for `backend`."""
        encoders = _ENCODERS[backend]
        plan = [(c.name, encoders.get(c.type)) for c in self.cols]

        def encode_row(row: Mapping[str, Any]) -> list[Any]:
            values = []
            for name, fn in plan:
                value = row.get(name)
                values.append(value if fn is None or value is None else fn(value))
            return values

        return encode_row

    def create_statements(self, backend: str, prefix: str) -> list[str]:
        return self.table_statements(backend, prefix) + self.index_statements(backend, prefix)

    def table_statements(self, backend: str, prefix: str) -> list[str]:
        types = _TYPES[backend]
        cols = []
        for c in self.cols:
            sql_type = types[c.type]
            if c.name == self.rowid_key and backend == SQLITE:
                cols.append(f"{c.name} INTEGER PRIMARY KEY")
                continue
            cols.append(f"{c.name} {sql_type}{'' if c.nullable else ' NOT NULL'}")
        if self.rowid_key and backend == POSTGRES:
            cols.append(f"PRIMARY KEY ({self.rowid_key})")
        if self.rowid_key and tuple(self.key) != (self.rowid_key,):
            cols.append(f"UNIQUE ({', '.join(self.key)})")
        elif not self.rowid_key:
            cols.append(f"PRIMARY KEY ({', '.join(self.key)})")
        tail = " WITHOUT ROWID" if backend == SQLITE and not self.rowid_key else ""
        return [
            f"CREATE TABLE IF NOT EXISTS {prefix}{self.name} ({', '.join(cols)}){tail}",
            *(s.format(p=prefix) for s in self.companions.get(backend, ())),
        ]

    def index_statements(self, backend: str, prefix: str) -> list[str]:
        """Secondary indexes and search indexes: built once after a bulk load."""
        statements = []
        for n, index in enumerate(self.indexes):
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {self.name}_i{n} ON {prefix}{self.name} "
                f"({', '.join(index)})"
            )
        for n, index in enumerate(self.unique):
            statements.append(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {self.name}_u{n} ON {prefix}{self.name} "
                f"({', '.join(index)})"
            )
        statements.extend(s.format(p=prefix) for s in self.extra.get(backend, ()))
        return statements

    def drop_statements(self, backend: str, prefix: str) -> list[str]:
        drops = [f"DROP TABLE IF EXISTS {prefix}{self.name}"]
        if backend == SQLITE:
            drops = [f"DROP TABLE IF EXISTS {self.name}_fts", *drops]
        return drops


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# How a Python value is written to each backend, per column type (None: as it is).
_ENCODERS: dict[str, dict[str, Callable[[Any], Any] | None]] = {
    SQLITE: {
        "date": date.isoformat,
        "decimal": str,
        "timestamp": timestamp_text,
        "json": _json_text,
        "bool": int,
    },
    POSTGRES: {"json": _json_text},
}


def encode(value: Any, type_: str, backend: str) -> Any:
    if value is None or backend == POSTGRES:
        if backend == POSTGRES and type_ == "json" and value is not None:
            return json.dumps(value, sort_keys=True)
        return value
    if type_ in ("date", "decimal"):
        return str(value) if type_ == "decimal" else value.isoformat()
    if type_ == "timestamp":
        return timestamp_text(value)
    if type_ == "json":
        return json.dumps(value, sort_keys=True)
    if type_ == "bool":
        return 1 if value else 0
    return value


def decode(value: Any, type_: str, backend: str) -> Any:
    if value is None:
        return None
    if type_ == "json":
        return json.loads(value)
    if backend == POSTGRES:
        if type_ == "timestamp":
            return value.astimezone(UTC)
        return value
    if type_ == "date":
        return date.fromisoformat(value)
    if type_ == "decimal":
        return Decimal(value)
    if type_ == "timestamp":
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    if type_ == "bool":
        return bool(value)
    return value


class Tx:
    """One transaction on the read models' database. SQL is written once with `?`
    placeholders and `{p}` before table names (the PostgreSQL schema)."""

    def __init__(self, backend: str, cursor: Any, prefix: str) -> None:
        self.backend = backend
        self.cursor = cursor
        self.prefix = prefix
        self._sql: dict[str, str] = {}

    def sql(self, statement: str) -> str:
        done = self._sql.get(statement)
        if done is None:
            done = statement.replace("{p}", self.prefix)
            if self.backend == POSTGRES:
                done = done.replace("?", "%s")
            self._sql[statement] = done
        return done

    def execute(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.cursor.execute(self.sql(statement), params)
        if self.cursor.description is None:
            return []
        return [tuple(row) for row in self.cursor.fetchall()]

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            self.cursor.executemany(self.sql(statement), rows)

    def raw(self, statement: str) -> None:
        self.cursor.execute(statement)

    def in_list(self, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """An `IN` clause for values; `= ANY(?)` on PostgreSQL keeps one prepared plan."""
        if self.backend == POSTGRES:
            return "= ANY(?)", [list(values)]
        return f"IN ({','.join('?' * len(values))})", list(values)

    # Rows as dicts of Python values ---------------------------------------------

    def upsert(self, table: Table, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        names = table.col_names
        conflict = table.key
        fixed = (*conflict, table.rowid_key)
        updates = ", ".join(f"{n} = excluded.{n}" for n in names if n not in fixed)
        statement = (
            f"INSERT INTO {{p}}{table.name} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({', '.join(conflict)}) DO "
            + (f"UPDATE SET {updates}" if updates else "NOTHING")
        )
        encode_row = table.row_encoder(self.backend)
        self.executemany(statement, [encode_row(row) for row in rows])

    def insert(self, table: Table, rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert new rows (a key that exists already fails the transaction)."""
        encode_row = table.row_encoder(self.backend)
        self.copy_rows(table.name, table.col_names, [encode_row(row) for row in rows])

    def copy_rows(
        self, table_name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Bulk insert: COPY on PostgreSQL (several times faster than INSERTs for
        pages of thousands of rows), one prepared INSERT over the rows on SQLite."""
        if not rows:
            return
        if self.backend == POSTGRES:
            with self.cursor.copy(
                f"COPY {self.prefix}{table_name} ({', '.join(columns)}) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            return
        self.executemany(
            f"INSERT INTO {table_name} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})",
            rows,
        )

    def select(
        self, table: Table, where: str = "", params: Sequence[Any] = (), tail: str = ""
    ) -> list[dict[str, Any]]:
        names = table.col_names
        types = table.types()
        rows = self.execute(
            f"SELECT {', '.join(names)} FROM {{p}}{table.name}"
            + (f" WHERE {where}" if where else "")
            + (f" {tail}" if tail else ""),
            params,
        )
        return [
            {n: decode(v, types[n], self.backend) for n, v in zip(names, row, strict=True)}
            for row in rows
        ]

    def select_in(
        self, table: Table, column: str, values: Sequence[Any], chunk: int = 500
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for i in range(0, len(values), chunk):
            clause, params = self.in_list(values[i : i + chunk])
            found.extend(self.select(table, f"{column} {clause}", params))
        return found


TRACKING_TABLE = "projection_tracking"


class Store:
    """The read models' database: the ledger's own, through the ledger's datastore
    (its connection pool), so views and events share one database and one pool."""

    def __init__(self, datastore: SQLiteDatastore | PostgresDatastore) -> None:
        self.datastore = datastore
        if isinstance(datastore, SQLiteDatastore):
            self.backend = SQLITE
            self.prefix = ""
        else:
            self.backend = POSTGRES
            self.prefix = f'"{datastore.schema}".'

    @classmethod
    def of(cls, app: Any) -> Store:
        return cls(app.recorder.datastore)

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A write transaction. On SQLite it takes the write lock at BEGIN, so a
        position read inside it cannot go stale before the commit."""
        if isinstance(self.datastore, SQLiteDatastore):
            with self.datastore.get_connection(commit=True) as conn:
                cursor = conn.cursor().sqlite_cursor
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield Tx(SQLITE, cursor, self.prefix)
                except BaseException:
                    conn.rollback()
                    raise
                else:
                    conn.commit()
                finally:
                    cursor.close()
        else:
            with (
                self.datastore.get_connection() as pg,
                pg.transaction(),
                pg.cursor(row_factory=tuple_row) as pg_cursor,
            ):
                yield Tx(POSTGRES, pg_cursor, self.prefix)

    def vacuum(self, tables: Sequence[str]) -> None:
        """VACUUM (ANALYZE) the tables (PostgreSQL; outside any transaction)."""
        if isinstance(self.datastore, PostgresDatastore):
            with self.datastore.get_connection() as pg:
                for table in tables:
                    pg.execute(f"VACUUM (ANALYZE) {self.prefix}{table}")

    @contextmanager
    def reading(self) -> Iterator[Tx]:
        """A read-only snapshot for queries (a count and its page agree)."""
        if isinstance(self.datastore, SQLiteDatastore):
            with self.datastore.get_connection(commit=False) as conn:
                cursor = conn.cursor().sqlite_cursor
                cursor.execute("BEGIN")
                try:
                    yield Tx(SQLITE, cursor, self.prefix)
                finally:
                    conn.rollback()
                    cursor.close()
        else:
            with (
                self.datastore.get_connection() as pg,
                pg.transaction(force_rollback=True),
                pg.cursor(row_factory=tuple_row) as pg_cursor,
            ):
                yield Tx(POSTGRES, pg_cursor, self.prefix)


@dataclass(frozen=True)
class Delivered:
    """A domain event with its position in the application log."""

    id: int
    topic: str
    event: Any


class Projection(ABC):
    """One read model. Subclasses name it, list the event topics it reads, declare
    its tables and fold a page of events into them in the given transaction.
    Bump `version` when the tables or the fold change: the runner then rebuilds it."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    topics: ClassVar[tuple[str, ...]]
    tables: ClassVar[tuple[Table, ...]]

    def create_statements(self, backend: str, prefix: str) -> list[str]:
        return self.table_statements(backend, prefix) + self.index_statements(backend, prefix)

    def table_statements(self, backend: str, prefix: str) -> list[str]:
        return [s for t in self.tables for s in t.table_statements(backend, prefix)]

    def index_statements(self, backend: str, prefix: str) -> list[str]:
        """Run once the tables hold the rows (after a rebuild's bulk load): building
        an index over a million rows at once is many times cheaper than keeping it
        up to date row by row."""
        return [s for t in self.tables for s in t.index_statements(backend, prefix)]

    def drop_statements(self, backend: str, prefix: str) -> list[str]:
        return [s for t in reversed(self.tables) for s in t.drop_statements(backend, prefix)]

    @abstractmethod
    def process(self, tx: Tx, page: Sequence[Delivered]) -> None:
        """Fold `page` (events this projection reads, in log order, all after its
        position) into its tables through `tx`."""


def aggregate_key(event: Any) -> str:
    return str(event.originator_id.hex)


@functools.lru_cache(maxsize=65536)
def entity_key(entity_id: str) -> str:
    """The entity aggregate's id (hex) from its entity id: uuid5, cached."""
    from ledger.entities.domain import BillableEntity

    return BillableEntity.create_id(entity_id).hex


class FoldProjection(Projection):
    """A table of one row per aggregate, folded from that aggregate's events: rows
    touched by a page are loaded once, folded in memory and written back with one
    batched upsert, so a page costs a few statements, not one per event."""

    table: ClassVar[Table]
    key_column: ClassVar[str] = "aggregate_id"
    creates: ClassVar[tuple[type[Any], ...]] = ()

    def process(self, tx: Tx, page: Sequence[Delivered]) -> None:
        side = self.side_events
        state: dict[str, dict[str, Any] | None] = {}
        to_load: list[str] = []
        for d in page:
            if side and isinstance(d.event, side):
                continue
            key = aggregate_key(d.event)
            if key not in state:
                state[key] = None
                if not isinstance(d.event, self.creates):
                    to_load.append(key)
        self.before(tx, page)
        for row in tx.select_in(self.table, self.key_column, to_load):
            state[row[self.key_column]] = row
        new_keys = {key for key, row in state.items() if row is None}
        changed: dict[str, dict[str, Any]] = {}
        for d in page:
            if side and isinstance(d.event, side):
                self.apply_side(d)
                continue
            key = aggregate_key(d.event)
            new = self.apply(state[key], d, tx)
            if new is not None:
                state[key] = changed[key] = new
        # Rows first made in this page are inserted (COPY on PostgreSQL); the others
        # already exist and are updated.
        tx.insert(self.table, [row for key, row in changed.items() if key in new_keys])
        tx.upsert(self.table, [row for key, row in changed.items() if key not in new_keys])
        self.after(tx, page, changed)

    side_events: ClassVar[tuple[type[Any], ...]] = ()

    def before(self, tx: Tx, page: Sequence[Delivered]) -> None:
        """Reads the fold needs beyond the rows, before it starts."""

    def apply_side(self, d: Delivered) -> None:
        """Fold one of `side_events` (events of other aggregates the rows depend on)."""

    @abstractmethod
    def apply(self, row: dict[str, Any] | None, d: Delivered, tx: Tx) -> dict[str, Any] | None:
        """The row after `d` (a new dict or `row` changed in place); None: unchanged."""

    def after(self, tx: Tx, page: Sequence[Delivered], changed: dict[str, dict[str, Any]]) -> None:
        """Writes beyond the table's rows, after them, in the same transaction."""
