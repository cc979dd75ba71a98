"""Importing calls from a CSV or JSON Lines file.

The file is validated first, whole: if any line is invalid nothing is recorded and
the caller gets every bad line (with --skip-invalid the valid lines are recorded and
the invalid ones written aside). Then it is streamed in chunks into
`Ledger.record_calls`, so memory stays flat however long the file is. Its source is
the file's SHA-256: importing the same file again records nothing."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TextIO

from ledger.errors import LedgerError
from ledger.sources import Source, SourceKind
from ledger.usage.application import BatchOutcome, CallRow, Conflict

COLUMNS = ("call_id", "entity_id", "started_at", "duration_seconds")
CHUNK = 20_000
MAX_CALL_ID = 200
# A call cannot have started in the future; a little slack for clock skew.
FUTURE_SLACK = timedelta(minutes=5)


class ImportFileError(LedgerError):
    """The file as a whole cannot be imported (unreadable, no header, missing column)."""


@dataclass(frozen=True)
class InvalidLine:
    line_no: int
    reason: str
    raw: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.reason}"


@dataclass(frozen=True)
class EntityInfo:
    timezone: str
    archived: bool


class Recorder(Protocol):
    def record_calls(self, rows: Sequence[CallRow], source: Source) -> BatchOutcome: ...


@dataclass
class ImportReport:
    recorded: int = 0
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    invalid: list[InvalidLine] = field(default_factory=list)
    invalid_count: int = 0
    rejected_file: Path | None = None

    def summary(self) -> dict[str, int]:
        return {
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "conflicts": len(self.conflicts),
            "invalid": self.invalid_count,
        }


def scan_file(path: Path, actor: str | None = None) -> tuple[Source, int]:
    """The file's source (named by its SHA-256) and its number of lines."""
    digest = hashlib.sha256()
    lines = 0
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
                lines += block.count(b"\n")
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror}") from exc
    source = Source(SourceKind.IMPORT_FILE, f"{path.name}@sha256:{digest.hexdigest()}", actor)
    return source, lines


def detect_format(path: Path, first_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


def _records(stream: TextIO, fmt: str) -> Iterator[tuple[int, dict[str, Any] | None, str, str]]:
    """(line number, fields or None, error, raw line) for each data line."""
    if fmt == "jsonl":
        for line_no, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, None, f"not valid JSON ({exc.msg})", line
                continue
            if not isinstance(obj, dict):
                yield line_no, None, "not a JSON object", line
                continue
            yield line_no, obj, "", line
        return
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        raise ImportFileError("the file is empty: expected a header line")
    names = [h.strip().lower() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ImportFileError(f"the header lacks column(s) {', '.join(missing)}")
    positions = [names.index(c) for c in COLUMNS]
    width = len(names)
    for row in reader:
        line_no = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        raw = ",".join(row)
        if len(row) < width:
            absent = [c for c, p in zip(COLUMNS, positions, strict=True) if p >= len(row)]
            yield line_no, None, f"missing column {', '.join(absent) or names[len(row)]}", raw
            continue
        yield line_no, {c: row[p] for c, p in zip(COLUMNS, positions, strict=True)}, "", raw


class Validator:
    def __init__(self, entities: dict[str, EntityInfo], now: datetime) -> None:
        self.entities = entities
        self.latest = now + FUTURE_SLACK

    def row(self, line_no: int, rec: dict[str, Any]) -> CallRow | str:
        """A CallRow, or the reason the record is invalid."""
        for column in COLUMNS:
            value = rec.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                return f"missing column {column}"
        call_id = str(rec["call_id"]).strip()
        if len(call_id) > MAX_CALL_ID:
            return f"call_id longer than {MAX_CALL_ID} characters"
        entity_id = str(rec["entity_id"]).strip()
        entity = self.entities.get(entity_id)
        if entity is None:
            return f"unknown entity {entity_id!r}"
        if entity.archived:
            return f"entity {entity_id!r} is archived"
        started_text = str(rec["started_at"]).strip()
        try:
            started_at = datetime.fromisoformat(started_text)
        except ValueError:
            return f"started_at is not an ISO 8601 time: {started_text!r}"
        if started_at.tzinfo is None:
            return f"started_at has no UTC offset: {started_text!r}"
        if started_at > self.latest:
            return f"started_at is in the future: {started_text!r}"
        duration = rec["duration_seconds"]
        if isinstance(duration, bool | float):
            return f"duration_seconds must be a whole number: {duration!r}"
        try:
            seconds = int(str(duration).strip())
        except ValueError:
            return f"duration_seconds must be a whole number: {duration!r}"
        if seconds < 0:
            return f"duration_seconds is negative: {seconds}"
        return CallRow(line_no, call_id, entity_id, started_at, seconds)


# progress(lines done, lines in the file)
Progress = Callable[[int, int], None]


def _open(path: Path) -> TextIO:
    try:
        return path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror}") from exc


def _rows(
    path: Path, validator: Validator, progress: Progress | None = None, total: int = 0
) -> Iterator[CallRow | InvalidLine]:
    with _open(path) as stream:
        first = stream.readline()
        stream.seek(0)
        fmt = detect_format(path, first)
        done = 0
        try:
            for line_no, rec, error, raw in _records(stream, fmt):
                done += 1
                if progress is not None and done % 10_000 == 0:
                    progress(done, total)
                if rec is None:
                    yield InvalidLine(line_no, error, raw)
                    continue
                result = validator.row(line_no, rec)
                yield InvalidLine(line_no, result, raw) if isinstance(result, str) else result
        except UnicodeDecodeError as exc:
            raise ImportFileError(f"{path} is not UTF-8 text ({exc.reason})") from exc
        except csv.Error as exc:
            raise ImportFileError(f"{path} is not valid CSV: {exc}") from exc


MAX_LISTED = 20


def import_calls(
    ledger: Recorder,
    path: Path,
    entities: dict[str, EntityInfo],
    now: datetime,
    *,
    skip_invalid: bool = False,
    actor: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Validate then record the calls in `path`. Without skip_invalid, any invalid
    line means nothing is recorded: the report lists them (the first 20) and counts
    them all."""
    validator = Validator(entities, now)
    report = ImportReport()
    source, total = scan_file(path, actor)
    if not skip_invalid:
        for item in _rows(path, validator):
            if isinstance(item, InvalidLine):
                report.invalid_count += 1
                if len(report.invalid) < MAX_LISTED:
                    report.invalid.append(item)
        if report.invalid_count:
            return report
    rejected: TextIO | None = None
    chunk: list[CallRow] = []
    try:
        for item in _rows(path, validator, progress, total):
            if isinstance(item, InvalidLine):
                report.invalid_count += 1
                if len(report.invalid) < MAX_LISTED:
                    report.invalid.append(item)
                if rejected is None:
                    report.rejected_file = path.with_name(path.name + ".rejected")
                    rejected = report.rejected_file.open("w", encoding="utf-8")
                rejected.write(f"{item.line_no}\t{item.reason}\t{item.raw.rstrip()}\n")
                continue
            chunk.append(item)
            if len(chunk) >= CHUNK:
                _flush(ledger, chunk, source, report)
        _flush(ledger, chunk, source, report)
    finally:
        if rejected is not None:
            rejected.close()
    return report


def _flush(ledger: Recorder, chunk: list[CallRow], source: Source, report: ImportReport) -> None:
    if not chunk:
        return
    outcome = ledger.record_calls(chunk, source)
    report.recorded += outcome.recorded
    report.duplicates += outcome.duplicates
    report.conflicts.extend(outcome.conflicts)
    chunk.clear()
