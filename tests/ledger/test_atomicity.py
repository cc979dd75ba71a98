"""Nothing half-written: the events, their seal links, the source keys and the call
index rows of one save commit together or not at all."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError

from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.entities.domain import BillableEntity
from ledger.sources import Source
from ledger.usage.application import CallRow
from ledger.usage.domain import Call, Usage

ADMIN = Source("admin", "admin-1", actor="alice@example.com")
FILE = Source("import_file", "calls.csv")
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def snapshot(raw_log: Any) -> dict[str, Any]:
    """Every table a save writes to, in full."""
    return {
        "events": raw_log.run(
            f"SELECT {raw_log.position}, originator_version, topic FROM {raw_log.events} ORDER BY 1"
        ),
        "seal": raw_log.run(f"SELECT seq, notification_id FROM {raw_log.seal} ORDER BY 1"),
        "sources": raw_log.run(f"SELECT key FROM {raw_log.sources} ORDER BY 1"),
        "calls": raw_log.run(f"SELECT call_id, fingerprint FROM {raw_log.calls} ORDER BY 1"),
    }


def entity(entity_id: str, at: datetime) -> BillableEntity:
    return BillableEntity.register(entity_id, entity_id.title(), "company", "UTC", [], ADMIN, at)


@pytest.mark.parametrize("colliding_first", [False, True])
def test_saving_two_aggregates_where_one_collides_leaves_neither(
    ledger: Ledger, raw_log: Any, clock, colliding_first: bool
) -> None:
    ledger.register_entity("Acme", "company", ADMIN)
    ledger.record_calls([CallRow(1, "c1", "acme", NOON, 60)], FILE)
    before = snapshot(raw_log)
    fresh = entity("beta", clock.now)
    duplicate = entity("acme", clock.now)  # version 1 of an aggregate that exists
    pair = (duplicate, fresh) if colliding_first else (fresh, duplicate)
    with pytest.raises(IntegrityError):
        ledger.save(
            *pair,
            source_keys=["stripe_event:evt_9|register|x"],
            call_index=[("c-new", "beta|2026-03-01T12:00:00Z|60")],
        )
    assert snapshot(raw_log) == before
    assert not ledger.exists(fresh.id)
    assert ledger.verify_seal().ok
    # The chain continues from the last committed link, not from the rolled-back one.
    ledger.register_entity("Beta", "company", ADMIN)
    result = ledger.verify_seal()
    assert (result.ok, result.checked) == (True, len(before["events"]) + 1)


def test_a_source_key_already_used_fails_the_whole_save(
    ledger: Ledger, raw_log: Any, clock
) -> None:
    ledger.register_entity("Acme", "company", ADMIN)
    ledger.link_stripe_customer("acme", "cus_1", Source("stripe_event", "evt_1"))
    [(used_key,)] = raw_log.run(f"SELECT key FROM {raw_log.sources}")
    before = snapshot(raw_log)
    fresh = entity("beta", clock.now)
    with pytest.raises(IntegrityError):
        ledger.save(fresh, source_keys=["stripe_event:evt_2|x|y", used_key])
    assert snapshot(raw_log) == before
    assert not ledger.exists(fresh.id)


def test_a_call_id_already_in_the_index_fails_the_whole_save(
    ledger: Ledger, raw_log: Any, clock
) -> None:
    """A day that does not know call c1 (the index does) cannot record it: the day's
    events, the new day's creation and the other calls' index rows all roll back."""
    ledger.register_entity("Acme", "company", ADMIN)
    ledger.record_calls([CallRow(1, "c1", "acme", NOON, 60)], FILE)
    before = snapshot(raw_log)
    day = Usage.begin("acme", date(2026, 3, 2), ADMIN, clock.now)
    calls = [Call("c1", "2026-03-02T12:00:00Z", 60), Call("c2", "2026-03-02T12:05:00Z", 60)]
    day.record_calls(calls, [], ADMIN, clock.now)
    with pytest.raises(IntegrityError):
        ledger.save(
            day,
            source_keys=["import_file:other.csv|record_calls@1|x"],
            call_index=[("c2", "acme|2026-03-02T12:05:00Z|60"), ("c1", "acme|x|60")],
        )
    assert snapshot(raw_log) == before
    assert ledger.usage("acme", date(2026, 3, 2)) is None


@pytest.mark.parametrize(
    ("their_fingerprint", "duplicates", "conflicts"),
    [("acme|2026-03-01T12:05:00Z|45", 1, []), ("acme|2026-03-01T12:05:00Z|99", 0, [(2, "c2")])],
)
def test_a_call_recorded_by_another_writer_between_classification_and_save(
    ledger: Ledger,
    raw_log: Any,
    clock,
    their_fingerprint: str,
    duplicates: int,
    conflicts: list[tuple[int, str]],
) -> None:
    """Another writer indexes call c2 after record_calls classified the batch (all new)
    and before it saved: the first transaction fails as a whole, and the retry
    classifies c2 against the index as it is now."""
    ledger.register_entity("Acme", "company", ADMIN)
    before = snapshot(raw_log)
    clock.on_next_read.append(
        lambda: raw_log.run(
            f"INSERT INTO {raw_log.calls} (call_id, fingerprint) VALUES (?, ?)",
            ("c2", their_fingerprint),
        )
    )
    rows = [
        CallRow(1, "c1", "acme", NOON, 30),
        CallRow(2, "c2", "acme", datetime(2026, 3, 1, 12, 5, tzinfo=UTC), 45),
    ]
    reads = clock.reads
    outcome = ledger.record_calls(rows, FILE)
    assert clock.on_next_read == []  # the other writer did act
    assert clock.reads - reads == 2  # once per attempt: the first one failed and was retried
    assert (outcome.recorded, outcome.duplicates) == (1, duplicates)
    assert [(c.line_no, c.call_id) for c in outcome.conflicts] == conflicts
    after = snapshot(raw_log)
    # Exactly the retry's writes: one new day (Begun, CallsRecorded), two links, one
    # source key, and c1's index row beside the other writer's c2.
    assert [t for _p, _v, t in after["events"][len(before["events"]) :]] == [
        "billtrail:Usage.Begun",
        "billtrail:Usage.CallsRecorded",
    ]
    assert len(after["seal"]) == len(after["events"])
    assert len(after["sources"]) == 1
    assert after["calls"] == [("c1", "acme|2026-03-01T12:00:00Z|30"), ("c2", their_fingerprint)]
    usage = ledger.usage("acme", date(2026, 3, 1))
    assert usage is not None
    assert (usage.calls, usage.duplicates, usage.duration_seconds) == (1, duplicates, 30)
    assert ledger.verify_seal().ok


def test_two_writers_importing_overlapping_calls_count_each_call_once(
    ledger: Ledger, database_url: str, tmp_path: Any
) -> None:
    """Two importers (two applications on one database) record the same 60 calls in
    chunks, in opposite orders, at the same time: every call lands in exactly one
    day's events, the rest are duplicates, and the seal holds."""
    ledger.register_entity("Acme", "company", ADMIN, timezone="Europe/Paris")
    rows = [
        CallRow(i, f"c{i}", "acme", datetime(2026, 3, 1 + i % 3, 8 + i % 12, tzinfo=UTC), i)
        for i in range(1, 61)
    ]
    chunks = [rows[i : i + 10] for i in range(0, 60, 10)]
    writers = [
        bootstrap.ledger(
            Settings.from_env(
                {
                    "BILLTRAIL_DATABASE_URL": database_url,
                    "BILLTRAIL_SEAL_KEY": "seal-key-for-tests-only-0123456789abcdef",
                    "BILLTRAIL_VAR_DIR": str(tmp_path / f"w{n}"),
                }
            )
        )
        for n in range(2)
    ]

    def run(n: int) -> tuple[int, int, int]:
        source = Source("import_file", f"calls-{n}.csv")
        outcomes = [writers[n].record_calls(c, source) for c in (chunks if n else chunks[::-1])]
        return (
            sum(o.recorded for o in outcomes),
            sum(o.duplicates for o in outcomes),
            sum(len(o.conflicts) for o in outcomes),
        )

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(run, range(2)))
    finally:
        for writer in writers:
            writer.close()
    assert sum(r[0] for r in results) == 60
    assert sum(r[1] for r in results) == 60
    assert sum(r[2] for r in results) == 0
    counted: list[str] = []
    for day in (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)):
        for event in ledger.history(Usage.create_id("acme", day)):
            if type(event).__name__ == "CallsRecorded":
                counted.extend(row[0] for row in event.calls)
    assert sorted(counted) == sorted(r.call_id for r in rows)
    result = ledger.verify_seal()
    assert result.ok, result.finding
