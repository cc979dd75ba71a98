"""Recording calls and usage reports. `record_calls` takes a batch of validated
calls (from an import file, in chunks), sorts each into the day of usage it belongs
to (the entity's local day), rejects call ids the ledger already has (counted as
duplicates when the data is the same, reported as conflicts when it differs) and
saves every touched day in one transaction together with the call index rows.

The import path hands over calls already prepared (UTC text and local day worked
out while the file was validated), because at a million calls the per-call cost of
this loop is what the import's speed is."""

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


def utc_text(moment: datetime) -> str:
    """A timezone-aware time as UTC ISO 8601 with "Z", the form calls are stored in."""
    text = moment.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@dataclass(frozen=True)
class CallRow:
    """One validated call, with the line it came from."""

    line_no: int
    call_id: str
    entity_id: str
    started_at: datetime  # timezone-aware
    duration_seconds: int


# A validated call with its UTC time and its entity's local day worked out:
# (line_no, call_id, entity_id, started_utc, local day as date.toordinal(), duration).
# A plain tuple: a million of them are built, spilled and read back per import.
PreparedCall = tuple[int, str, str, str, int, int]


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


@dataclass
class _Day:
    entity_id: str
    day: date
    first_line: int
    calls: list[Call] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


class UsageCommands(EntityCommands):
    def record_calls(self, rows: Sequence[CallRow], source: Source) -> BatchOutcome:
        zones: dict[str, ZoneInfo] = {}
        prepared: list[PreparedCall] = []
        for r in rows:
            zone = zones.get(r.entity_id)
            if zone is None:
                zone = zones[r.entity_id] = ZoneInfo(self.entity(r.entity_id).timezone)
            local_day = r.started_at.astimezone(zone).date().toordinal()
            prepared.append(
                (
                    r.line_no,
                    r.call_id,
                    r.entity_id,
                    utc_text(r.started_at),
                    local_day,
                    r.duration_seconds,
                )
            )
        return self.record_prepared_calls(prepared, source)

    def record_prepared_calls(self, rows: Sequence[PreparedCall], source: Source) -> BatchOutcome:
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                return self._record_calls_once(rows, source)
            except IntegrityError:
                # Another writer recorded some of these calls or days meanwhile:
                # classify again against the index as it is now.
                continue
        raise ConcurrentChange("calls kept being recorded concurrently; import again")

    def _record_calls_once(self, rows: Sequence[PreparedCall], source: Source) -> BatchOutcome:
        outcome = BatchOutcome()
        known = self.ledger_recorder.call_fingerprints(list({r[1] for r in rows}))
        days: dict[tuple[str, int], _Day] = {}
        index_rows: list[tuple[str, str]] = []
        conflicts = outcome.conflicts
        for line_no, call_id, entity_id, started, day, duration in rows:
            fingerprint = f"{entity_id}|{started}|{duration}"
            previous = known.get(call_id)
            slot = days.get((entity_id, day))
            if slot is None:
                slot = days[(entity_id, day)] = _Day(entity_id, date.fromordinal(day), line_no)
            if previous is None:
                known[call_id] = fingerprint
                slot.calls.append(Call(call_id, started, duration))
                index_rows.append((call_id, fingerprint))
            elif previous == fingerprint:
                slot.duplicates.append(call_id)
            else:
                conflicts.append(Conflict(line_no, call_id, f"recorded before as {previous}"))
        self._save_days([d for d in days.values() if d.calls or d.duplicates], index_rows, source)
        outcome.recorded = len(index_rows)
        outcome.duplicates = sum(len(d.duplicates) for d in days.values())
        return outcome

    def _save_days(
        self, days: list[_Day], index_rows: list[tuple[str, str]], source: Source
    ) -> None:
        keys = [
            self.source_key(
                source, f"record_calls@{d.first_line}", Usage.create_id(d.entity_id, d.day)
            )
            for d in days
        ]
        # A day whose calls are all duplicates, from a source that already counted
        # them (the same file imported again), records nothing.
        applied = self.ledger_recorder.existing_sources([k for k in keys if k])
        at = self.clock()
        usages: list[Usage] = []
        source_keys: list[str] = []
        for day, key in zip(days, keys, strict=True):
            if key in applied and not day.calls:
                continue
            usage = self._usage_or_begin(day.entity_id, day.day, source, at)
            if usage.record_calls(day.calls, day.duplicates, source, at):
                usages.append(usage)
                # A key already stored (this source counted the day before, and now
                # brings new calls) must not be inserted again: its unique index would
                # fail every retry of this batch.
                if key and key not in applied:
                    source_keys.append(key)
        if usages:
            self.save(*usages, source_keys=source_keys, call_index=index_rows)

    def _usage_or_begin(self, entity_id: str, day: date, source: Source, at: datetime) -> Usage:
        usage_id = Usage.create_id(entity_id, day)
        if self.exists(usage_id):
            return self.load(Usage, usage_id, lambda: _gone(usage_id))
        return Usage.begin(entity_id, day, source, at)

    def usage(self, entity_id: str, day: date, as_recorded: datetime | None = None) -> Usage | None:
        """The day's usage (as recorded at `as_recorded`), or None if nothing was."""
        usage_id = Usage.create_id(entity_id, day)
        if not self.exists(usage_id):
            return None
        if as_recorded is None:
            return self.load(Usage, usage_id, lambda: _gone(usage_id))
        if not self.history(usage_id, as_recorded):
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
