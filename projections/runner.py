"""The runner: feeds the projections from the ledger's log.

- `Runner.catch_up()` polls `select_notifications` (topics filtered in SQL) up to the
  head of the log as it was when called, a page at a time. Each page is ONE
  transaction: every projection behind the page applies the page's events after its
  own position and advances its own tracking row once, to the page's end.
- On SQLite the application catches up in process after each command
  (`attach`); `billtrail projections run` polls.
- On PostgreSQL `Runner.follow()` follows the log live through the library's
  subscription (LISTEN/NOTIFY) and writes what arrives in pages the same way.
- `Runner.rebuild(names)` drops and re-creates the tables and resets the positions in
  one transaction, then catches up; a crash mid-rebuild leaves a consistent prefix
  that the next catch-up continues from."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.projection import ApplicationSubscription

from projections.base import POSTGRES, SQLITE, TRACKING_TABLE, Delivered, Projection, Store, Tx
from projections.decoding import Decoder

log = logging.getLogger(__name__)

PAGE = 500
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Position:
    projection: str
    tracking_name: str
    position: int
    head: int
    pending: int
    rebuilding: bool = False

    @property
    def lag(self) -> int:
        return self.head - self.position


def default_projections() -> list[Projection]:
    from projections.calls import CallsProjection
    from projections.entities import EntitiesProjection
    from projections.invoice_history import InvoiceHistoryProjection
    from projections.invoice_lines import InvoiceLinesProjection
    from projections.invoices import InvoicesProjection
    from projections.notifications import NotificationsProjection
    from projections.rates import RatesProjection
    from projections.usage import UsageProjection

    return [
        InvoicesProjection(),
        InvoiceLinesProjection(),
        InvoiceHistoryProjection(),
        EntitiesProjection(),
        RatesProjection(),
        UsageProjection(),
        CallsProjection(),
        NotificationsProjection(),
    ]


class UnknownProjection(ValueError):
    pass


class Runner:
    def __init__(
        self,
        app: Any,
        projections: Sequence[Projection] | None = None,
        *,
        page: int = PAGE,
        store: Store | None = None,
    ) -> None:
        self.app = app
        self.store = store or Store.of(app)
        self.projections = list(projections if projections is not None else default_projections())
        self.page = page
        self.decoder = Decoder(app.mapper)
        self._stop = threading.Event()
        self._advanced = threading.Condition()
        self.setup()

    # Names ---------------------------------------------------------------------

    def tracking_name(self, projection: Projection) -> str:
        return f"{self.app.name}/{projection.name}"

    def select(self, names: Iterable[str] | None) -> list[Projection]:
        if names is None:
            return list(self.projections)
        by_name = {p.name: p for p in self.projections}
        chosen = []
        for name in names:
            if name not in by_name:
                raise UnknownProjection(
                    f"no projection {name!r}; known: {', '.join(sorted(by_name))}"
                )
            chosen.append(by_name[name])
        return chosen

    # Tables and tracking ---------------------------------------------------------

    def setup(self) -> None:
        """Create what is missing. A new projection, or one whose stored version
        differs from its code's, starts from position 0 as a bulk load."""
        with self.store.transaction() as tx:
            if tx.backend == POSTGRES:
                # Two processes starting at once must not race on CREATE statements.
                tx.execute("SELECT pg_advisory_xact_lock(746162)")
            tx.execute(
                f"CREATE TABLE IF NOT EXISTS {{p}}{TRACKING_TABLE} (name TEXT PRIMARY KEY, "
                "notification_id BIGINT NOT NULL, version INTEGER NOT NULL, "
                "bulk INTEGER NOT NULL)"
            )
            rows = {
                r[0]: (r[1], r[2])
                for r in tx.execute(f"SELECT name, version, bulk FROM {{p}}{TRACKING_TABLE}")
            }
            for p in self.projections:
                stored = rows.get(self.tracking_name(p))
                if stored is None or stored[0] != p.version:
                    self._reset(tx, p)
                    continue
                statements = p.table_statements(tx.backend, tx.prefix)
                if not stored[1]:
                    statements += p.index_statements(tx.backend, tx.prefix)
                for statement in statements:
                    tx.raw(tx.sql(statement))

    def _reset(self, tx: Tx, p: Projection) -> None:
        """Empty tables without secondary indexes, position 0, marked as a bulk load:
        the indexes are built when the catch-up reaches the head (`_finish_bulk`),
        also when that is a later run's catch-up after a crash."""
        for statement in p.drop_statements(tx.backend, tx.prefix):
            tx.raw(statement)
        for statement in p.table_statements(tx.backend, tx.prefix):
            tx.raw(tx.sql(statement))
        tx.execute(
            f"INSERT INTO {{p}}{TRACKING_TABLE} (name, notification_id, version, bulk) "
            "VALUES (?, 0, ?, 1) ON CONFLICT (name) DO UPDATE SET notification_id = 0, "
            "version = excluded.version, bulk = 1",
            (self.tracking_name(p), p.version),
        )

    def _finish_bulk(self, projections: Sequence[Projection]) -> None:
        chosen = {p.name for p in projections}
        if not self.loading() & chosen:
            return  # the usual case after a command: a read, no write
        names = [self.tracking_name(p) for p in projections]
        finished: list[Projection] = []
        with self.store.transaction() as tx:
            clause, params = tx.in_list(names)
            loading = {
                r[0]
                for r in tx.execute(
                    f"SELECT name FROM {{p}}{TRACKING_TABLE} WHERE name {clause} AND bulk = 1",
                    params,
                )
            }
            for p in projections:
                if self.tracking_name(p) not in loading:
                    continue
                for statement in p.index_statements(tx.backend, tx.prefix):
                    tx.raw(tx.sql(statement))
                # Fresh statistics, so the planner picks the right index per filter;
                # sampled on SQLite, where a full ANALYZE reads every index entry.
                if tx.backend == SQLITE:
                    tx.raw("PRAGMA analysis_limit = 2000")
                for table in p.tables:
                    tx.raw(f"ANALYZE {tx.prefix}{table.name}")
                tx.execute(
                    f"UPDATE {{p}}{TRACKING_TABLE} SET bulk = 0 WHERE name = ?",
                    (self.tracking_name(p),),
                )
                finished.append(p)
        if finished and self.store.backend == POSTGRES:
            # Freshly loaded tables have no visibility map yet, so every index scan
            # would also visit the table; VACUUM sets it (it cannot run in a
            # transaction, hence after the commit).
            self.store.vacuum([t.name for p in finished for t in p.tables])

    def loading(self) -> set[str]:
        """Projections still in a bulk load (rebuilding, search and indexes pending)."""
        with self.store.reading() as tx:
            rows = tx.execute(f"SELECT name FROM {{p}}{TRACKING_TABLE} WHERE bulk = 1")
        names = {r[0] for r in rows}
        return {p.name for p in self.projections if self.tracking_name(p) in names}

    def positions(self, projections: Sequence[Projection] | None = None) -> dict[str, int]:
        chosen = self.projections if projections is None else projections
        with self.store.reading() as tx:
            return self._positions(tx, chosen, lock=False)

    def _positions(self, tx: Tx, projections: Sequence[Projection], lock: bool) -> dict[str, int]:
        names = sorted(self.tracking_name(p) for p in projections)
        clause, params = tx.in_list(names)
        # FOR UPDATE serialises two runners on PostgreSQL; SQLite's BEGIN IMMEDIATE
        # already holds the write lock.
        tail = " ORDER BY name FOR UPDATE" if lock and tx.backend == POSTGRES else ""
        rows = tx.execute(
            f"SELECT name, notification_id FROM {{p}}{TRACKING_TABLE} WHERE name {clause}{tail}",
            params,
        )
        found = {r[0]: int(r[1]) for r in rows}
        return {p.name: found.get(self.tracking_name(p), 0) for p in projections}

    def position(self, name: str) -> int:
        return self.positions(self.select([name]))[name]

    # Applying a page -------------------------------------------------------------

    def apply(self, projections: Sequence[Projection], page: Sequence[Delivered], upto: int) -> int:
        """Apply `page` (events up to `upto`, in log order) in ONE transaction. Events
        at or before a projection's position are skipped, so a page delivered twice
        changes nothing. Returns how many (projection, event) pairs were applied."""
        applied = 0
        with self.store.transaction() as tx:
            positions = self._positions(tx, projections, lock=True)
            for p in projections:
                position = positions[p.name]
                if position >= upto:
                    continue
                topics = frozenset(p.topics)
                mine = [d for d in page if d.id > position and d.topic in topics]
                if mine:
                    p.process(tx, mine)
                    applied += len(mine)
                tx.execute(
                    f"UPDATE {{p}}{TRACKING_TABLE} SET notification_id = ? "
                    "WHERE name = ? AND notification_id < ?",
                    (upto, self.tracking_name(p), upto),
                )
        with self._advanced:
            self._advanced.notify_all()
        return applied

    def _deliver(self, notes: Sequence[Any]) -> list[Delivered]:
        decode = self.decoder.decode
        return [Delivered(n.id, n.topic, decode(n)) for n in notes]

    def catch_up(
        self,
        names: Iterable[str] | None = None,
        progress: Progress | None = None,
        *,
        until: int | None = None,
    ) -> int:
        """Bring the chosen projections up to the head of the log as it is now (or
        to `until`). Returns how many events were applied (summed over projections)."""
        chosen = self.select(names)
        head = self.app.recorder.max_notification_id() or 0
        if until is not None:
            head = min(head, until)
        applied = 0
        while True:
            positions = self.positions(chosen)
            behind = [p for p in chosen if positions[p.name] < head]
            if progress is not None:
                progress(min(positions.values(), default=head), head)
            if not behind:
                self._finish_bulk(chosen)
                return applied
            start = min(positions[p.name] for p in behind)
            topics = sorted({t for p in behind for t in p.topics})
            notes = self.app.recorder.select_notifications(
                start=start, limit=self.page, stop=head, topics=topics, inclusive_of_start=False
            )
            upto = notes[-1].id if len(notes) == self.page else head
            applied += self.apply(behind, self._deliver(notes), upto)

    def rebuild(
        self,
        names: Iterable[str] | None = None,
        progress: Progress | None = None,
        *,
        until: int | None = None,
    ) -> int:
        """Drop, re-create and refill the chosen projections (all by default)."""
        chosen = self.select(names)
        with self.store.transaction() as tx:
            for p in chosen:
                self._reset(tx, p)
        return self.catch_up([p.name for p in chosen], progress, until=until)

    def status(self) -> list[Position]:
        head = self.app.recorder.max_notification_id() or 0
        positions = self.positions()
        loading = self.loading()
        result = []
        for p in self.projections:
            position = positions[p.name]
            pending = self.count_events(p.topics, position, head) if position < head else 0
            result.append(
                Position(p.name, self.tracking_name(p), position, head, pending, p.name in loading)
            )
        return result

    def count_events(self, topics: Sequence[str], after: int, upto: int) -> int:
        """How many events of `topics` the log holds in (after, upto], counted in SQL."""
        recorder = self.app.recorder
        column = "rowid" if self.store.backend == SQLITE else "notification_id"
        with self.store.reading() as tx:
            clause, params = tx.in_list(sorted(topics))
            rows = tx.execute(
                f"SELECT count(*) FROM {tx.prefix}{recorder.events_table_name} "
                f"WHERE {column} > ? AND {column} <= ? AND topic {clause}",
                [after, upto, *params],
            )
        return int(rows[0][0])

    # Waiting and following ---------------------------------------------------------

    def wait(self, notification_id: int, timeout: float = 10.0) -> None:
        """Block until every projection has applied the log up to `notification_id`
        (advanced by this runner's `follow` in another thread)."""
        with self._advanced:
            ok = self._advanced.wait_for(
                lambda: min(self.positions().values(), default=0) >= notification_id,
                timeout=timeout,
            )
        if not ok:
            raise TimeoutError(f"projections did not reach {notification_id} in {timeout}s")

    def stop(self) -> None:
        self._stop.set()

    def poll(self, interval: float = 0.5) -> None:
        """Catch up, then again every `interval` seconds, until `stop()` (SQLite)."""
        while not self._stop.is_set():
            self.catch_up()
            self._stop.wait(interval)

    def follow(self, batch_wait: float = 0.05, retry_wait: float = 1.0) -> None:
        """Follow the log live until `stop()`: catch up, then take what the
        library's subscription delivers, in pages (PostgreSQL). A lost connection
        (a database restart) is logged and followed again from the tracked
        positions, so nothing is skipped or applied twice."""
        while not self._stop.is_set():
            try:
                self._follow(batch_wait)
            except _CONNECTION_ERRORS as exc:
                log.warning("projections: lost the database (%s); following again", exc)
                self._stop.wait(retry_wait)

    def _follow(self, batch_wait: float) -> None:
        self.catch_up()
        start = min(self.positions().values(), default=0)
        inbox: queue.Queue[tuple[Any, Any] | BaseException] = queue.Queue(maxsize=self.page * 4)
        # Unfiltered: every event advances the positions, so `wait(id)` ends for
        # any id, also of an event no projection reads.
        subscription = ApplicationSubscription(self.app, gt=start)

        def pump() -> None:
            try:
                for item in subscription:
                    inbox.put(item)
            except BaseException as exc:  # handed to the main loop, which re-raises
                inbox.put(exc)

        thread = threading.Thread(target=pump, name="projections-subscription", daemon=True)
        with subscription:
            thread.start()
            try:
                while not self._stop.is_set():
                    try:
                        first = inbox.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    items = [first]
                    while len(items) < self.page:
                        try:
                            items.append(inbox.get(timeout=batch_wait))
                        except queue.Empty:
                            break
                    page: list[Delivered] = []
                    for item in items:
                        if isinstance(item, BaseException):
                            raise item
                        event, tracking = item
                        page.append(Delivered(tracking.notification_id, event_topic(event), event))
                    self.apply(self.projections, page, page[-1].id)
            finally:
                subscription.stop()
        thread.join(timeout=5)


_CONNECTION_ERRORS = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def event_topic(event: Any) -> str:
    from eventsourcing.utils import get_topic

    return get_topic(type(event))


def attach(app: Any, runner: Runner) -> None:
    """Catch the projections up in process after each command the application saves
    (the embedded SQLite mode). A failure there is logged, never raised: the
    command's events are committed, and the next catch-up retries."""
    saved = app._notify

    def notify_then_catch_up(recordings: Any) -> None:
        saved(recordings)
        try:
            runner.catch_up()
        except Exception:
            log.exception("projections: catch-up after a command failed; will retry")

    app._notify = notify_then_catch_up
