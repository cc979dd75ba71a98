"""Properties of the calls import over random files: the ledger's days hold exactly
what a direct fold of the file says (first sighting recorded, same data again a
duplicate, other data a conflict, each on the entity's local day), and importing
the same file again records nothing at all."""

from __future__ import annotations

import csv
import tempfile
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.sources import Source, SourceKind
from ledger.usage.importer import EntityInfo, import_calls

ZONES = {"north": "UTC", "south": "Pacific/Auckland"}
T0 = datetime(2026, 3, 1, tzinfo=UTC)

calls = st.lists(
    st.tuples(
        st.integers(0, 30).map(lambda i: f"c{i}"),  # few ids: repeats are likely
        st.sampled_from(sorted(ZONES)),
        st.integers(0, 3 * 24 * 60).map(lambda m: T0 + timedelta(minutes=m)),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=60,
)


def fold(rows: list[tuple[str, str, datetime, int]]) -> tuple[Counter[Any], Counter[Any], int]:
    """The model: what each day should count, and how many conflicts."""
    first: dict[str, tuple[str, datetime, int]] = {}
    recorded: Counter[tuple[str, date]] = Counter()
    duplicates: Counter[tuple[str, date]] = Counter()
    conflicts = 0
    for call_id, entity, at, seconds in rows:
        day = (entity, at.astimezone(ZoneInfo(ZONES[entity])).date())
        if call_id not in first:
            first[call_id] = (entity, at, seconds)
            recorded[day] += 1
        elif first[call_id] == (entity, at, seconds):
            duplicates[day] += 1
        else:
            conflicts += 1
    return recorded, duplicates, conflicts


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=calls)
def test_import_equals_a_fold_of_the_file_and_reimport_records_nothing(
    fresh_ledgers: Any, rows: list[tuple[str, str, datetime, int]]
) -> None:
    with fresh_ledgers() as (ledger, clock, raw), tempfile.TemporaryDirectory() as tmp:
        clock.set(T0 + timedelta(days=10))
        for entity_id, zone in ZONES.items():
            ledger.register_entity(
                entity_id.title(),
                "company",
                Source(SourceKind.CLI, "t"),
                entity_id=entity_id,
                timezone=zone,
            )
        path = Path(tmp) / "calls.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["call_id", "entity_id", "started_at", "duration_seconds"])
            w.writerows([c, e, at.isoformat(), s] for c, e, at, s in rows)
        known = {e: EntityInfo(z, False) for e, z in ZONES.items()}

        report = import_calls(ledger, path, known, clock())
        recorded, duplicates, conflicts = fold(rows)
        assert report.summary() == {
            "recorded": sum(recorded.values()),
            "duplicates": sum(duplicates.values()),
            "conflicts": conflicts,
            "invalid": 0,
        }
        for entity, day in set(recorded) | set(duplicates):
            usage = ledger.usage(entity, day)
            assert usage is not None
            assert (usage.calls, usage.duplicates) == (
                recorded[(entity, day)],
                duplicates[(entity, day)],
            )

        head = raw.max_position()
        again = import_calls(ledger, path, known, clock())
        assert again.recorded == 0
        assert raw.max_position() == head
        assert ledger.verify_seal().ok
