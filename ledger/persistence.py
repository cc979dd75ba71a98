"""The ledger's recorders: the library's application recorders for SQLite and
PostgreSQL, extended to write three things in the same transaction as the events:

- `ledger_seal`: the seal's links (ledger.seal), one per event;
- `ledger_sources`: the idempotency keys of commands applied from a source with a
  stable id (a Stripe event, an import file's lines, a scheduler run);
- `ledger_calls`: every call id ever recorded, with a fingerprint of its data, so a
  call id counts once across all entities and days.

A duplicate key in either index fails the whole transaction with the library's
IntegrityError: nothing is half-written."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteDatastore
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from ledger.seal import GENESIS, Link, SealedEvent, chain

# SQLite's default limit of host parameters is 32766; stay well under it.
_IN_BATCH = 900


class SealKeyMissing(RuntimeError):
    """The recorder was asked to write events before it was given the seal key."""


def _oid(originator_id: UUID | str) -> str:
    return originator_id.hex if isinstance(originator_id, UUID) else str(originator_id)


def _batches(items: Sequence[str], size: int = _IN_BATCH) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class LedgerRecorder:
    """What the ledger needs of its recorder beyond the library's interface."""

    seal_key: bytes | None = None

    def _key(self) -> bytes:
        if not self.seal_key:
            raise SealKeyMissing("the ledger recorder has no seal key")
        return self.seal_key

    def existing_sources(self, keys: Sequence[str]) -> set[str]:
        raise NotImplementedError

    def call_fingerprints(self, call_ids: Sequence[str]) -> dict[str, str]:
        raise NotImplementedError

    def sealed_event_pages(self, page: int = 500) -> Iterator[list[SealedEvent]]:
        """The log in notification order, a page at a time."""
        raise NotImplementedError

    def sealed_events(self) -> Iterator[SealedEvent]:
        for page in self.sealed_event_pages():
            yield from page

    def seal_links(self, page: int = 5000) -> Iterator[Link]:
        raise NotImplementedError

    def seal_bounds(self) -> tuple[int, int]:
        """The last notification id and the last seal seq, read in one statement (one
        snapshot), so a verification can ignore what is committed after it starts."""
        raise NotImplementedError


class LedgerSQLiteRecorder(LedgerRecorder, SQLiteApplicationRecorder):
    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS ledger_seal (seq INTEGER PRIMARY KEY, "
            "notification_id INTEGER NOT NULL UNIQUE, mac BLOB NOT NULL)",
            "CREATE TABLE IF NOT EXISTS ledger_sources (key TEXT PRIMARY KEY) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS ledger_calls (call_id TEXT PRIMARY KEY, "
            "fingerprint TEXT NOT NULL) WITHOUT ROWID",
        ]

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        *,
        source_keys: Iterable[str] = (),
        call_index: Iterable[tuple[str, str]] = (),
        **kwargs: Any,
    ) -> Sequence[int] | None:
        key = self._key()
        c.executemany("INSERT INTO ledger_sources (key) VALUES (?)", [(k,) for k in source_keys])
        c.executemany("INSERT INTO ledger_calls (call_id, fingerprint) VALUES (?, ?)", call_index)
        ids = super()._insert_events(c, stored_events, **kwargs)
        if ids:
            c.execute("SELECT seq, mac FROM ledger_seal ORDER BY seq DESC LIMIT 1")
            row = c.fetchone()
            prev, seq = (bytes(row[1]), row[0] + 1) if row else (GENESIS, 1)
            links = chain(key, prev, seq, _sealed(ids, stored_events))
            c.executemany(
                "INSERT INTO ledger_seal (seq, notification_id, mac) VALUES (?, ?, ?)",
                [(ln.seq, ln.notification_id, ln.mac) for ln in links],
            )
        return ids

    def existing_sources(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self.datastore.transaction(commit=False) as c:
            for batch in _batches(keys):
                marks = ",".join("?" * len(batch))
                c.execute(f"SELECT key FROM ledger_sources WHERE key IN ({marks})", list(batch))
                found.update(row[0] for row in c.fetchall())
        return found

    def call_fingerprints(self, call_ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self.datastore.transaction(commit=False) as c:
            for batch in _batches(call_ids):
                marks = ",".join("?" * len(batch))
                c.execute(
                    f"SELECT call_id, fingerprint FROM ledger_calls WHERE call_id IN ({marks})",
                    list(batch),
                )
                found.update((row[0], row[1]) for row in c.fetchall())
        return found

    def sealed_event_pages(self, page: int = 500) -> Iterator[list[SealedEvent]]:
        last = 0
        while True:
            with self.datastore.transaction(commit=False) as c:
                c.execute(
                    f"SELECT rowid, originator_id, originator_version, topic, state "
                    f"FROM {self.events_table_name} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                    (last, page),
                )
                rows = c.fetchall()
            if not rows:
                return
            yield [SealedEvent(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]
            last = rows[-1][0]

    def seal_links(self, page: int = 5000) -> Iterator[Link]:
        last = 0
        while True:
            with self.datastore.transaction(commit=False) as c:
                c.execute(
                    "SELECT seq, notification_id, mac FROM ledger_seal WHERE seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (last, page),
                )
                rows = c.fetchall()
            if not rows:
                return
            for r in rows:
                yield Link(r[0], r[1], bytes(r[2]))
            last = rows[-1][0]

    def seal_bounds(self) -> tuple[int, int]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT (SELECT COALESCE(MAX(rowid), 0) FROM {self.events_table_name}), "
                "(SELECT COALESCE(MAX(seq), 0) FROM ledger_seal)"
            )
            row = c.fetchone()
        return int(row[0]), int(row[1])


class LedgerPostgresRecorder(LedgerRecorder, PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema = Identifier(self.datastore.schema)
        prefix = self.events_table_name.removesuffix("_events")
        self.seal_table = Identifier(f"{prefix}_seal")
        self.sources_table = Identifier(f"{prefix}_sources")
        self.calls_table = Identifier(f"{prefix}_calls")
        self.schema_id = schema
        self.sql_create_statements.extend(
            [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {}.{} (seq bigint PRIMARY KEY, "
                    "notification_id bigint NOT NULL UNIQUE, mac bytea NOT NULL)"
                ).format(schema, self.seal_table),
                SQL("CREATE TABLE IF NOT EXISTS {}.{} (key text PRIMARY KEY)").format(
                    schema, self.sources_table
                ),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {}.{} (call_id text PRIMARY KEY, "
                    "fingerprint text NOT NULL)"
                ).format(schema, self.calls_table),
            ]
        )

    def _insert_events(
        self,
        curs: Any,
        stored_events: Sequence[StoredEvent],
        *,
        source_keys: Iterable[str] = (),
        call_index: Iterable[tuple[str, str]] = (),
        **kwargs: Any,
    ) -> None:
        # Runs in the events' transaction, before the events are inserted.
        self._key()
        keys = [(k,) for k in source_keys]
        if keys:
            curs.executemany(
                SQL("INSERT INTO {}.{} (key) VALUES (%s)").format(
                    self.schema_id, self.sources_table
                ),
                keys,
            )
        calls = list(call_index)
        if calls:
            curs.executemany(
                SQL("INSERT INTO {}.{} (call_id, fingerprint) VALUES (%s, %s)").format(
                    self.schema_id, self.calls_table
                ),
                calls,
            )
        if keys or calls:
            # In pipeline mode a duplicate key would surface later as "pipeline
            # aborted" (an OperationalError the library retries, then raises). Sync
            # here so it is the IntegrityError callers treat as "already applied".
            try:
                with curs.connection.pipeline() as pipeline:
                    pipeline.sync()
            except psycopg.IntegrityError as exc:
                raise IntegrityError(str(exc)) from exc

    def _fetch_ids_after_insert_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
        if not ids:
            return ids
        # The events table is locked EXCLUSIVE for this transaction, so no other writer
        # can append a link between this read and our insert.
        curs.execute(
            SQL("SELECT seq, mac FROM {}.{} ORDER BY seq DESC LIMIT 1").format(
                self.schema_id, self.seal_table
            )
        )
        row: DictRow | None = curs.fetchone()
        prev, seq = (bytes(row["mac"]), row["seq"] + 1) if row else (GENESIS, 1)
        links = chain(self._key(), prev, seq, _sealed(ids, stored_events))
        curs.executemany(
            SQL("INSERT INTO {}.{} (seq, notification_id, mac) VALUES (%s, %s, %s)").format(
                self.schema_id, self.seal_table
            ),
            [(ln.seq, ln.notification_id, ln.mac) for ln in links],
        )
        return ids

    def _select(self, statement: SQL | Composed, params: Sequence[Any]) -> list[DictRow]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params)
            return curs.fetchall()

    def existing_sources(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        rows = self._select(
            SQL("SELECT key FROM {}.{} WHERE key = ANY(%s)").format(
                self.schema_id, self.sources_table
            ),
            [list(keys)],
        )
        return {row["key"] for row in rows}

    def call_fingerprints(self, call_ids: Sequence[str]) -> dict[str, str]:
        if not call_ids:
            return {}
        rows = self._select(
            SQL("SELECT call_id, fingerprint FROM {}.{} WHERE call_id = ANY(%s)").format(
                self.schema_id, self.calls_table
            ),
            [list(call_ids)],
        )
        return {row["call_id"]: row["fingerprint"] for row in rows}

    def sealed_event_pages(self, page: int = 500) -> Iterator[list[SealedEvent]]:
        last = 0
        statement = SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM {}.{} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(self.schema_id, Identifier(self.events_table_name))
        while rows := self._select(statement, (last, page)):
            yield [
                SealedEvent(
                    r["notification_id"],
                    _oid(r["originator_id"]),
                    r["originator_version"],
                    r["topic"],
                    bytes(r["state"]),
                )
                for r in rows
            ]
            last = rows[-1]["notification_id"]

    def seal_links(self, page: int = 5000) -> Iterator[Link]:
        last = 0
        statement = SQL(
            "SELECT seq, notification_id, mac FROM {}.{} WHERE seq > %s ORDER BY seq LIMIT %s"
        ).format(self.schema_id, self.seal_table)
        while rows := self._select(statement, (last, page)):
            for r in rows:
                yield Link(r["seq"], r["notification_id"], bytes(r["mac"]))
            last = rows[-1]["seq"]

    def seal_bounds(self) -> tuple[int, int]:
        [row] = self._select(
            SQL(
                "SELECT (SELECT COALESCE(MAX(notification_id), 0) FROM {}.{}) AS nid, "
                "(SELECT COALESCE(MAX(seq), 0) FROM {}.{}) AS seq"
            ).format(
                self.schema_id,
                Identifier(self.events_table_name),
                self.schema_id,
                self.seal_table,
            ),
            (),
        )
        return int(row["nid"]), int(row["seq"])


def _sealed(ids: Sequence[int], stored_events: Sequence[StoredEvent]) -> Iterator[SealedEvent]:
    for nid, s in zip(ids, stored_events, strict=True):
        yield SealedEvent(nid, _oid(s.originator_id), s.originator_version, s.topic, s.state)
