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
import marshal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO
from zoneinfo import ZoneInfo

from ledger.errors import LedgerError
from ledger.sources import Source, SourceKind
from ledger.usage.application import BatchOutcome, Conflict, PreparedCall, utc_text

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
    def record_prepared_calls(
        self, rows: Sequence[PreparedCall], source: Source
    ) -> BatchOutcome: ...


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


# A record as read from the file: (line number, fields or None, error, raw line).
# Fields are (call_id, entity_id, started_at, duration_seconds), possibly empty.
Record = tuple[int, tuple[Any, Any, Any, Any] | None, str, str]


def _records(stream: TextIO, fmt: str) -> Iterator[Record]:
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
            yield (
                line_no,
                (
                    obj.get(COLUMNS[0]),
                    obj.get(COLUMNS[1]),
                    obj.get(COLUMNS[2]),
                    obj.get(COLUMNS[3]),
                ),
                "",
                line,
            )
        return
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        raise ImportFileError("the file is empty: expected a header line")
    names = [h.strip().lower() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise ImportFileError(f"the header lacks column(s) {', '.join(missing)}")
    a, b, c, d = (names.index(col) for col in COLUMNS)
    width = max(a, b, c, d) + 1
    for row in reader:
        if len(row) < width:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            absent = [col for col, p in zip(COLUMNS, (a, b, c, d), strict=True) if p >= len(row)]
            yield reader.line_num, None, f"missing column {', '.join(absent)}", ",".join(row)
            continue
        yield reader.line_num, (row[a], row[b], row[c], row[d]), "", ""


class Validator:
    def __init__(self, entities: dict[str, EntityInfo], now: datetime) -> None:
        self.entities = entities
        self.zones = {k: ZoneInfo(v.timezone) for k, v in entities.items() if not v.archived}
        self.latest = now + FUTURE_SLACK

    def prepare(self, line_no: int, fields: tuple[Any, Any, Any, Any]) -> PreparedCall | str:
        """The call ready to record, or the reason the record is invalid."""
        call_id, entity_id, started_text, duration = fields
        if isinstance(call_id, int) and not isinstance(call_id, bool):
            call_id = str(call_id)  # JSON Lines may carry numeric ids
        if call_id is None or call_id == "":
            return "missing column call_id"
        if not isinstance(call_id, str) or not call_id.strip():
            return f"call_id must be non-empty text: {call_id!r}"
        if len(call_id) > MAX_CALL_ID:
            return f"call_id longer than {MAX_CALL_ID} characters"
        zone = self.zones.get(entity_id) if isinstance(entity_id, str) else None
        if zone is None:
            if not entity_id:
                return "missing column entity_id"
            if entity_id in self.entities:
                return f"entity {entity_id!r} is archived"
            return f"unknown entity {entity_id!r}"
        if not started_text or not isinstance(started_text, str):
            return "missing column started_at"
        try:
            started_at = datetime.fromisoformat(started_text)
        except ValueError:
            return f"started_at is not an ISO 8601 time: {started_text!r}"
        if started_at.tzinfo is None:
            return f"started_at has no UTC offset: {started_text!r}"
        if started_at > self.latest:
            return f"started_at is in the future: {started_text!r}"
        if isinstance(duration, int) and not isinstance(duration, bool):
            seconds = duration
        elif isinstance(duration, str) and duration.strip():
            try:
                seconds = int(duration)
            except ValueError:
                return f"duration_seconds must be a whole number: {duration!r}"
        elif duration is None or duration == "":
            return "missing column duration_seconds"
        else:
            return f"duration_seconds must be a whole number: {duration!r}"
        if seconds < 0:
            return f"duration_seconds is negative: {seconds}"
        return (
            line_no,
            call_id.strip(),
            entity_id,
            utc_text(started_at),
            started_at.astimezone(zone).toordinal(),
            seconds,
        )


# progress(lines done, lines in the file)
Progress = Callable[[int, int], None]


def _open(path: Path) -> TextIO:
    try:
        return path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror}") from exc


def _rows(
    path: Path, validator: Validator, progress: Progress | None = None, total: int = 0
) -> Iterator[PreparedCall | InvalidLine]:
    with _open(path) as stream:
        prepare = validator.prepare
        try:
            # Inside the try: a file that is not UTF-8 can fail on its first line.
            first = stream.readline()
            stream.seek(0)
            fmt = detect_format(path, first)
            for done, (line_no, fields, error, raw) in enumerate(_records(stream, fmt), 1):
                if progress is not None and done % 10_000 == 0:
                    progress(done, total)
                if fields is None:
                    yield InvalidLine(line_no, error, raw)
                    continue
                result = prepare(line_no, fields)
                if isinstance(result, str):
                    yield InvalidLine(line_no, result, raw or ",".join(map(str, fields)))
                else:
                    yield result
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
    line means nothing is recorded: the report lists the first 20 and counts all.

    The file is parsed once: validated calls are spilled in chunks to a temporary
    file, which is replayed into the ledger only if the whole file was valid."""
    validator = Validator(entities, now)
    report = ImportReport()
    source, total = scan_file(path, actor)
    rejected: TextIO | None = None
    with tempfile.TemporaryFile() as spill:
        chunk: list[PreparedCall] = []
        try:
            for item in _rows(path, validator, progress, total):
                if isinstance(item, InvalidLine):
                    report.invalid_count += 1
                    if len(report.invalid) < MAX_LISTED:
                        report.invalid.append(item)
                    if skip_invalid:
                        if rejected is None:
                            report.rejected_file = path.with_name(path.name + ".rejected")
                            rejected = report.rejected_file.open("w", encoding="utf-8")
                        rejected.write(f"{item.line_no}\t{item.reason}\t{item.raw.rstrip()}\n")
                    continue
                chunk.append(item)
                if len(chunk) >= CHUNK:
                    if skip_invalid:
                        _record(ledger, chunk, source, report)
                    elif not report.invalid_count:
                        _spill(spill, chunk)
                    chunk.clear()
        finally:
            if rejected is not None:
                rejected.close()
        if report.invalid_count and not skip_invalid:
            return report
        if not skip_invalid:
            spill.seek(0)
            for stored in _unspill(spill):
                _record(ledger, stored, source, report)
        _record(ledger, chunk, source, report)
    return report


def _spill(spill: BinaryIO, chunk: list[PreparedCall]) -> None:
    # marshal: plain tuples of str and int, and several times faster than pickle here.
    data = marshal.dumps(chunk)
    spill.write(len(data).to_bytes(8, "little"))
    spill.write(data)


def _unspill(spill: BinaryIO) -> Iterator[list[PreparedCall]]:
    while size := spill.read(8):
        yield marshal.loads(spill.read(int.from_bytes(size, "little")))


def _record(
    ledger: Recorder, chunk: Sequence[PreparedCall], source: Source, report: ImportReport
) -> None:
    if not chunk:
        return
    outcome = ledger.record_prepared_calls(chunk, source)
    report.recorded += outcome.recorded
    report.duplicates += outcome.duplicates
    report.conflicts.extend(outcome.conflicts)
