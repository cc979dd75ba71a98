"""Recording calls and usage reports. `record_calls` takes a batch of validated
calls (from an import file, in chunks), sorts each into the day of usage it belongs
to (the entity's local day), rejects call ids the ledger already has (counted as
duplicates when the data is the same, reported as conflicts when it differs) and
saves every touched day in one transaction together with the call index rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from uuid import UUID
from zoneinfo import ZoneInfo

from eventsourcing.persistence import IntegrityError

from ledger.application import MAX_CONFLICT_RETRIES, ConcurrentChange
from ledger.entities.application import EntityCommands
from ledger.errors import NotFound
from ledger.sources import Source
from ledger.usage.domain import Call, Usage


@dataclass(frozen=True)
class CallRow:
    """One validated call from an import, with the line it came from."""

    line_no: int
    call_id: str
    entity_id: str
    started_at: datetime  # timezone-aware
    duration_seconds: int

    @property
    def started_utc(self) -> str:
        return self.started_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def fingerprint(self) -> str:
        return f"{self.entity_id}|{self.started_utc}|{self.duration_seconds}"


@dataclass(frozen=True)
class Conflict:
    line_no: int
    call_id: str
    reason: str


@dataclass
class BatchOutcome:
    recorded: int = 0
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)

    def add(self, other: BatchOutcome) -> None:
        self.recorded += other.recorded
        self.duplicates += other.duplicates
        self.conflicts.extend(other.conflicts)


@dataclass
class _Day:
    entity_id: str
    day: date
    first_line: int
    calls: list[Call] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


class UsageCommands(EntityCommands):
    def record_calls(self, rows: Sequence[CallRow], source: Source) -> BatchOutcome:
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                return self._record_calls_once(rows, source)
            except IntegrityError:
                # Another writer recorded some of these calls or days meanwhile:
                # classify again against the index as it is now.
                continue
        raise ConcurrentChange("calls kept being recorded concurrently; import again")

    def _record_calls_once(self, rows: Sequence[CallRow], source: Source) -> BatchOutcome:
        outcome = BatchOutcome()
        known = self.ledger_recorder.call_fingerprints(list({r.call_id for r in rows}))
        zones: dict[str, ZoneInfo] = {}
        days: dict[tuple[str, date], _Day] = {}
        in_batch: dict[str, str] = {}
        index_rows: list[tuple[str, str]] = []
        for row in rows:
            zone = zones.get(row.entity_id)
            if zone is None:
                zone = zones[row.entity_id] = ZoneInfo(self.entity(row.entity_id).timezone)
            fingerprint = row.fingerprint
            previous = known.get(row.call_id) or in_batch.get(row.call_id)
            if previous is not None and previous != fingerprint:
                outcome.conflicts.append(
                    Conflict(row.line_no, row.call_id, f"recorded before as {previous}")
                )
                continue
            local_day = row.started_at.astimezone(zone).date()
            slot = days.get((row.entity_id, local_day))
            if slot is None:
                slot = days[(row.entity_id, local_day)] = _Day(
                    row.entity_id, local_day, row.line_no
                )
            if previous is not None:
                slot.duplicates.append(row.call_id)
                outcome.duplicates += 1
                continue
            in_batch[row.call_id] = fingerprint
            slot.calls.append(Call(row.call_id, row.started_utc, row.duration_seconds))
            index_rows.append((row.call_id, fingerprint))
        self._save_days(list(days.values()), index_rows, source)
        outcome.recorded = len(index_rows)
        return outcome

    def _save_days(
        self, days: list[_Day], index_rows: list[tuple[str, str]], source: Source
    ) -> None:
        keys = {
            id(d): self.source_key(
                source, f"record_calls@{d.first_line}", Usage.create_id(d.entity_id, d.day)
            )
            for d in days
        }
        # A day whose calls are all duplicates, from a source that already counted
        # them (the same file imported again), records nothing.
        applied = self.ledger_recorder.existing_sources([k for k in keys.values() if k])
        at = self.clock()
        usages: list[Usage] = []
        source_keys: list[str] = []
        for day in days:
            key = keys[id(day)]
            if key in applied and not day.calls:
                continue
            usage = self._usage_or_begin(day.entity_id, day.day, source, at)
            if usage.record_calls(day.calls, day.duplicates, source, at):
                usages.append(usage)
                if key:
                    source_keys.append(key)
        if usages:
            self.save(*usages, source_keys=source_keys, call_index=index_rows)

    def _usage_or_begin(self, entity_id: str, day: date, source: Source, at: datetime) -> Usage:
        usage_id = Usage.create_id(entity_id, day)
        if self.exists(usage_id):
            return self.load(Usage, usage_id, lambda: _gone(usage_id))
        return Usage.begin(entity_id, day, source, at)

    def usage(self, entity_id: str, day: date, as_recorded: datetime | None = None) -> Usage | None:
        usage_id = Usage.create_id(entity_id, day)
        if not self.exists(usage_id):
            return None
        if as_recorded is None:
            return self.load(Usage, usage_id, lambda: _gone(usage_id))
        events = self.history(usage_id, as_recorded)
        if not events:
            return None
        return self.as_recorded(Usage, usage_id, as_recorded, lambda: _gone(usage_id))

    def report_usage(
        self,
        entity_id: str,
        day: date,
        quantity: int,
        identifier: str,
        reported_at: datetime,
        source: Source,
    ) -> bool:
        at = self.clock()
        usage_id = Usage.create_id(entity_id, day)
        if not self.exists(usage_id):
            usage = Usage.begin(entity_id, day, source, at)
            usage.report_usage(quantity, identifier, reported_at, source, at)
            if self._create(usage):
                return True
        return self._change(
            Usage,
            usage_id,
            "report_usage",
            source,
            lambda u: u.report_usage(quantity, identifier, reported_at, source, at),
            lambda: _gone(usage_id),
        )


def _gone(usage_id: UUID) -> NotFound:
    return NotFound(f"no usage {usage_id}")
