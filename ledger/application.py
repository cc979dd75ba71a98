"""The ledger application: one eventsourcing Application holding all four
aggregates, so the ledger has one ordered log that the seal chains and the
projections follow. Commands are verbs on it, grouped by concept in
`ledger/<concept>/application.py`; this module holds what they share: persistence
wiring, the clock, saving with idempotency by source, and point-in-time reads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import takewhile
from typing import Any, TypeVar, cast
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, JSONTranscoder
from eventsourcing.utils import get_topic

from ledger import transcoding
from ledger.errors import LedgerError, NotFound, NotRecordedYet
from ledger.persistence import LedgerPostgresRecorder, LedgerRecorder, LedgerSQLiteRecorder
from ledger.seal import Link, Verification, verify
from ledger.sources import Source, SourceKind

Clock = Callable[[], datetime]
A = TypeVar("A", bound=Aggregate)
T = TypeVar("T")

# Sources whose id names one stable thing (a Stripe event, an import file, a
# scheduler run): applying a command from one of them twice changes nothing.
IDEMPOTENT_SOURCES = frozenset(
    {SourceKind.STRIPE_EVENT, SourceKind.IMPORT_FILE, SourceKind.SCHEDULER_RUN, SourceKind.SEED}
)

_RECORDERS = {
    "eventsourcing.sqlite": LedgerSQLiteRecorder,
    "eventsourcing.postgres": LedgerPostgresRecorder,
}

MAX_CONFLICT_RETRIES = 8


def utc_now() -> datetime:
    return datetime.now(UTC)


class ConcurrentChange(LedgerError):
    """Another writer kept changing the same aggregate; the command gave up."""


class LedgerBase(Application[UUID]):
    name = "Ledger"

    def __init__(self, env: Mapping[str, str], *, seal_key: bytes, clock: Clock = utc_now) -> None:
        env = dict(env)
        recorder = _RECORDERS.get(env.get("PERSISTENCE_MODULE", ""))
        if recorder is None:
            # The library's default is in-memory; a ledger that forgets is no ledger.
            raise ValueError(
                "the ledger needs PERSISTENCE_MODULE eventsourcing.sqlite or .postgres"
            )
        env.setdefault("APPLICATION_RECORDER_TOPIC", get_topic(recorder))
        # Days of usage are loaded again for every chunk of an import that touches
        # them; the cache fast-forwards them from the new events only.
        env.setdefault("AGGREGATE_CACHE_MAXSIZE", "4096")
        super().__init__(env)
        self.ledger_recorder.seal_key = seal_key
        self.clock = clock

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoding.register(transcoder)

    @property
    def ledger_recorder(self) -> LedgerRecorder:
        return cast(LedgerRecorder, self.recorder)

    @property
    def backend(self) -> str:
        return "sqlite" if isinstance(self.recorder, LedgerSQLiteRecorder) else "postgres"

    # Saving --------------------------------------------------------------------

    @staticmethod
    def source_key(source: Source, command: str, aggregate_id: UUID) -> str | None:
        if source.kind not in IDEMPOTENT_SOURCES:
            return None
        return f"{source.key}|{command}|{aggregate_id.hex}"

    def _change(
        self,
        cls: type[A],
        aggregate_id: UUID,
        command: str,
        source: Source,
        change: Callable[[A], bool],
        missing: Callable[[], LedgerError],
    ) -> bool:
        """Load, apply `change`, save; retried on a concurrent write to the same
        aggregate, and a no-op when the same source already applied `command`."""
        key = self.source_key(source, command, aggregate_id)
        keys = [key] if key else []
        for _ in range(MAX_CONFLICT_RETRIES):
            if keys and self.ledger_recorder.existing_sources(keys):
                return False
            aggregate = self.load(cls, aggregate_id, missing)
            if not change(aggregate):
                return False
            try:
                self.save(aggregate, source_keys=keys)
            except IntegrityError:
                continue
            return True
        raise ConcurrentChange(f"{command}: {aggregate_id} kept changing; try again")

    def _create(
        self, aggregate: Aggregate, *others: Aggregate, source_keys: Sequence[str] = ()
    ) -> bool:
        """Save a new aggregate; False when it already existed (same natural id)."""
        try:
            self.save(aggregate, *others, source_keys=list(source_keys))
        except IntegrityError:
            return False
        return True

    def load(self, cls: type[A], aggregate_id: UUID, missing: Callable[[], LedgerError]) -> A:
        try:
            aggregate: Aggregate = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise missing() from None
        if not isinstance(aggregate, cls):
            raise missing()
        return aggregate

    def exists(self, aggregate_id: UUID) -> bool:
        return bool(self.recorder.select_events(aggregate_id, limit=1))

    # Point in time -------------------------------------------------------------

    def as_recorded(
        self, cls: type[A], aggregate_id: UUID, at: datetime, missing: Callable[[], LedgerError]
    ) -> A:
        """The aggregate rebuilt from its events recorded at or before `at`."""
        check_aware(at)
        version = None
        for event in self.events.get(aggregate_id):
            if cast(Any, event).timestamp > at:
                break
            version = event.originator_version
        if version is None:
            if self.exists(aggregate_id):
                raise NotRecordedYet(f"nothing was recorded for it at or before {at.isoformat()}")
            raise missing()
        aggregate: Aggregate = self.repository.get(aggregate_id, version=version)
        if not isinstance(aggregate, cls):
            raise missing()
        return aggregate

    def history(self, aggregate_id: UUID, at: datetime | None = None) -> list[Any]:
        """Every event of the aggregate (recorded at or before `at`), oldest first."""
        if at is not None:
            check_aware(at)
        events = list(self.events.get(aggregate_id))
        if not events:
            raise NotFound(f"no aggregate {aggregate_id}")
        return [e for e in events if at is None or cast(Any, e).timestamp <= at]

    def events_of_topics(self, topics: Sequence[str], page: int = 1000) -> Iterator[Any]:
        """Domain events with the given topics in log order (for lists before the
        read models exist, and for rebuilds)."""
        position: int | None = None
        while True:
            notes = self.recorder.select_notifications(
                start=position, limit=page, topics=list(topics), inclusive_of_start=False
            )
            if not notes:
                return
            for note in notes:
                yield self.mapper.to_domain_event(note)
            position = notes[-1].id

    # The seal --------------------------------------------------------------------

    def verify_seal(self, checkpoint: Link | None = None) -> Verification:
        key = self.ledger_recorder._key()
        # The log as committed when verification starts: events and links are read in
        # separate queries, and a write committed between them (a worker's) is not
        # tampering. Rows of one commit fall on the same side of both bounds.
        last_id, last_seq = self.ledger_recorder.seal_bounds()
        events = takewhile(
            lambda e: e.notification_id <= last_id, self.ledger_recorder.sealed_events()
        )
        links = takewhile(lambda ln: ln.seq <= last_seq, self.ledger_recorder.seal_links())
        return verify(key, events, links, checkpoint)


def check_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise LedgerError(f"a point in time needs a UTC offset: {at.isoformat()}")


def topics_of(*event_classes: type[Any]) -> list[str]:
    return [get_topic(cls) for cls in event_classes]


def first(items: Iterable[A]) -> A | None:
    return next(iter(items), None)
