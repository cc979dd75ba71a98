"""Usage: calls land on the entity's local day, a call id counts once ever, and usage
pushed to Stripe is recorded as a report then corrections."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.app import Ledger
from ledger.errors import UnknownEntity
from ledger.sources import Source
from ledger.usage.application import CallRow, Conflict
from ledger.usage.domain import InvalidUsageReport, Usage

ADMIN = Source("admin", "admin-1", actor="alice@example.com")
FILE = Source("import_file", "calls-2026-03-01.csv")
PUSH = Source("scheduler_run", "usage-push-2026-03-02")


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def call_ids(ledger: Ledger, entity_id: str, day: date) -> set[str]:
    """The ids of the calls counted on the day, read from its CallsRecorded events."""
    return {
        row[0]
        for e in ledger.history(Usage.create_id(entity_id, day))
        if type(e).__name__ == "CallsRecorded"
        for row in e.calls
    }


def row(line: int, call_id: str, entity: str, started: datetime, seconds: int = 60) -> CallRow:
    return CallRow(line, call_id, entity, started, seconds)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.fixture
def entities(ledger: Ledger) -> None:
    ledger.register_entity("West", "company", ADMIN, timezone="America/Los_Angeles")
    ledger.register_entity("East", "company", ADMIN, timezone="Asia/Tokyo")
    ledger.register_entity("Zulu", "organization", ADMIN, timezone="UTC")


@pytest.mark.usefixtures("entities")
def test_calls_land_on_the_entitys_local_day(ledger: Ledger) -> None:
    # 05:00 UTC on 2 March is 21:00 on 1 March in Los Angeles and 14:00 on 2 March in Tokyo;
    # 20:00 UTC on 1 March is already 2 March in Tokyo.
    rows = [
        row(1, "c-west", "west", utc(2026, 3, 2, 5, 0), 30),
        row(2, "c-east-1", "east", utc(2026, 3, 2, 5, 0), 40),
        row(3, "c-east-2", "east", utc(2026, 3, 1, 20, 0), 50),
        row(4, "c-zulu", "zulu", utc(2026, 3, 1, 23, 59)),
        # The same instant given with another offset is the same local day.
        row(5, "c-west-2", "west", datetime(2026, 3, 2, 14, 0, tzinfo=ZoneInfo("Asia/Tokyo"))),
    ]
    outcome = ledger.record_calls(rows, FILE)
    assert (outcome.recorded, outcome.duplicates, outcome.conflicts) == (5, 0, [])
    west = ledger.usage("west", date(2026, 3, 1))
    assert west is not None
    assert (west.calls, west.duration_seconds) == (2, 90)
    assert call_ids(ledger, "west", date(2026, 3, 1)) == {"c-west", "c-west-2"}
    assert ledger.usage("west", date(2026, 3, 2)) is None
    east = ledger.usage("east", date(2026, 3, 2))
    assert east is not None
    assert (east.calls, east.duration_seconds) == (2, 90)
    assert ledger.usage("east", date(2026, 3, 1)) is None
    zulu = ledger.usage("zulu", date(2026, 3, 1))
    assert zulu is not None
    assert zulu.calls == 1


@pytest.mark.usefixtures("entities")
def test_calls_are_stored_with_their_utc_start_and_duration(ledger: Ledger) -> None:
    started = datetime(2026, 3, 1, 9, 30, 15, tzinfo=ZoneInfo("America/Los_Angeles"))
    ledger.record_calls([row(1, "c1", "west", started, 125)], FILE)
    usage = ledger.usage("west", date(2026, 3, 1))
    assert usage is not None
    recorded = ledger.history(usage.id)[-1]
    assert type(recorded).__name__ == "CallsRecorded"
    assert recorded.calls == [["c1", "2026-03-01T17:30:15Z", 125]]
    assert recorded.source == FILE


@pytest.mark.usefixtures("entities")
def test_duplicate_call_ids_are_rejected_and_counted(ledger: Ledger, clock) -> None:
    t = utc(2026, 3, 1, 12)
    first = ledger.record_calls(
        [row(1, "c1", "zulu", t), row(2, "c2", "zulu", t), row(3, "c1", "zulu", t)], FILE
    )
    assert (first.recorded, first.duplicates, first.conflicts) == (2, 1, [])
    clock.advance(hours=1)
    other_file = Source("import_file", "calls-2026-03-01-resend.csv")
    second = ledger.record_calls([row(1, "c2", "zulu", t), row(2, "c3", "zulu", t)], other_file)
    assert (second.recorded, second.duplicates, second.conflicts) == (1, 1, [])
    usage = ledger.usage("zulu", date(2026, 3, 1))
    assert usage is not None
    assert (usage.calls, usage.duplicates) == (3, 2)
    assert call_ids(ledger, "zulu", date(2026, 3, 1)) == {"c1", "c2", "c3"}
    recorded = [e for e in ledger.history(usage.id) if type(e).__name__ == "CallsRecorded"]
    assert [e.duplicates for e in recorded] == [["c1"], ["c2"]]


@pytest.mark.usefixtures("entities")
def test_conflicting_call_data_is_reported_not_recorded(ledger: Ledger) -> None:
    t = utc(2026, 3, 1, 12)
    ledger.record_calls([row(1, "c1", "zulu", t, 60)], FILE)
    before = head(ledger)
    outcome = ledger.record_calls(
        [
            row(7, "c1", "zulu", t, 61),  # other duration
            row(8, "c1", "west", t, 60),  # other entity
            row(9, "c1", "zulu", t + timedelta(seconds=1), 60),  # other start
            row(10, "c9", "zulu", t, 10),
            row(11, "c9", "zulu", t, 11),  # conflicts within the batch
        ],
        Source("import_file", "other.csv"),
    )
    assert [(c.line_no, c.call_id) for c in outcome.conflicts] == [
        (7, "c1"),
        (8, "c1"),
        (9, "c1"),
        (11, "c9"),
    ]
    assert all(
        isinstance(c, Conflict) and "recorded before as" in c.reason for c in outcome.conflicts
    )
    assert "zulu|2026-03-01T12:00:00Z|60" in outcome.conflicts[0].reason
    assert (outcome.recorded, outcome.duplicates) == (1, 0)
    assert head(ledger) == before + 1  # c9's CallsRecorded only
    usage = ledger.usage("zulu", date(2026, 3, 1))
    assert usage is not None
    assert (usage.calls, usage.duplicates, usage.duration_seconds) == (2, 0, 70)
    assert ledger.usage("west", date(2026, 3, 1)) is None


@pytest.mark.usefixtures("entities")
def test_recording_the_same_batch_again_from_the_same_file_records_nothing(
    ledger: Ledger, clock
) -> None:
    rows = [
        row(i, f"c{i}", entity, utc(2026, 3, 1, 10 + i % 5))
        for i, entity in enumerate(["west", "east", "zulu"] * 4, start=1)
    ]
    rows.append(row(13, "c1", "west", rows[0].started_at))  # a duplicate inside the file
    first = ledger.record_calls(rows, FILE)
    assert (first.recorded, first.duplicates) == (12, 1)
    before = head(ledger)
    usages = {
        (e, d): ledger.usage(e, d)
        for e in ["west", "east", "zulu"]
        for d in [date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 2)]
    }
    clock.advance(days=1)
    again = ledger.record_calls(rows, FILE)
    assert (again.recorded, again.duplicates, again.conflicts) == (0, 13, [])
    assert head(ledger) == before
    for (e, d), usage in usages.items():
        now = ledger.usage(e, d)
        assert (now and now.version) == (usage and usage.version)


@pytest.mark.usefixtures("entities")
def test_new_calls_from_a_source_that_already_counted_that_day_are_recorded(
    ledger: Ledger, clock
) -> None:
    """Two batches from one source whose first row for the day is on the same line
    (a caller chunking by its own numbering, or a file name reused as the source id):
    the second batch's calls are new to the call index and must be recorded, not
    failed as if another writer kept interfering."""
    t = utc(2026, 3, 1, 12)
    assert ledger.record_calls([row(1, "c1", "zulu", t)], FILE).recorded == 1
    clock.advance(minutes=1)
    outcome = ledger.record_calls([row(1, "c2", "zulu", t), row(2, "c1", "zulu", t)], FILE)
    assert (outcome.recorded, outcome.duplicates, outcome.conflicts) == (1, 1, [])
    usage = ledger.usage("zulu", date(2026, 3, 1))
    assert usage is not None
    assert (usage.calls, usage.duplicates) == (2, 1)
    # And the same second batch once more changes nothing.
    before = head(ledger)
    again = ledger.record_calls([row(1, "c2", "zulu", t), row(2, "c1", "zulu", t)], FILE)
    assert (again.recorded, again.duplicates) == (0, 2)
    assert head(ledger) == before


@pytest.mark.usefixtures("entities")
def test_a_batch_with_an_unknown_entity_records_nothing(ledger: Ledger) -> None:
    t = utc(2026, 3, 1, 12)
    before = head(ledger)
    with pytest.raises(UnknownEntity, match="ghost"):
        ledger.record_calls([row(1, "c1", "zulu", t), row(2, "c2", "ghost", t)], FILE)
    assert head(ledger) == before
    assert ledger.record_calls([row(1, "c1", "zulu", t)], FILE).recorded == 1


@pytest.mark.usefixtures("entities")
def test_the_first_usage_report_is_a_report_and_later_ones_corrections(
    ledger: Ledger, clock
) -> None:
    day = date(2026, 3, 1)
    ledger.record_calls([row(1, "c1", "zulu", utc(2026, 3, 1, 12))], FILE)
    pushed = utc(2026, 3, 2, 1)
    assert ledger.report_usage("zulu", day, 1, "zulu-2026-03-01", pushed, PUSH) is True
    assert ledger.report_usage("zulu", day, 1, "zulu-2026-03-01", pushed, PUSH) is False
    clock.advance(days=1)
    later = Source("scheduler_run", "usage-push-2026-03-03")
    assert ledger.report_usage("zulu", day, 2, "zulu-2026-03-01-c1", pushed, later) is True
    # One scheduler run reports a day once: its second push for the day is a no-op.
    assert ledger.report_usage("zulu", day, 5, "zulu-2026-03-01-x", pushed, later) is False
    third = Source("scheduler_run", "usage-push-2026-03-04")
    assert ledger.report_usage("zulu", day, -1, "zulu-2026-03-01-c2", pushed, third) is True
    usage = ledger.usage("zulu", day)
    assert usage is not None
    assert [(r.kind, r.quantity, r.identifier) for r in usage.reports] == [
        ("report", 1, "zulu-2026-03-01"),
        ("correction", 2, "zulu-2026-03-01-c1"),
        ("correction", -1, "zulu-2026-03-01-c2"),
    ]
    assert usage.reported_quantity == 2
    with pytest.raises(InvalidUsageReport, match="must change the quantity"):
        ledger.report_usage("zulu", day, 0, "zulu-2026-03-01-c3", pushed, ADMIN)


@pytest.mark.usefixtures("entities")
def test_a_report_for_a_day_without_calls_begins_that_day(ledger: Ledger) -> None:
    day = date(2026, 3, 5)
    assert ledger.usage("east", day) is None
    assert ledger.report_usage("east", day, 0, "east-2026-03-05", utc(2026, 3, 6), PUSH) is True
    usage = ledger.usage("east", day)
    assert usage is not None
    assert (usage.calls, usage.reports[0].kind, usage.reports[0].quantity) == (0, "report", 0)
    assert [type(e).__name__ for e in ledger.history(Usage.create_id("east", day))] == [
        "Begun",
        "UsageReported",
    ]


@pytest.mark.usefixtures("entities")
def test_usage_as_recorded_sees_only_the_calls_recorded_by_then(ledger: Ledger, clock) -> None:
    t = utc(2026, 3, 1, 12)
    first_at = clock.now
    ledger.record_calls([row(1, "c1", "zulu", t)], FILE)
    clock.advance(hours=2)
    ledger.record_calls([row(1, "c2", "zulu", t)], Source("import_file", "late.csv"))
    day = date(2026, 3, 1)
    assert ledger.usage("zulu", day, as_recorded=first_at - timedelta(seconds=1)) is None
    then = ledger.usage("zulu", day, as_recorded=first_at)
    assert then is not None
    assert (then.calls, then.version) == (1, 2)
    now = ledger.usage("zulu", day)
    assert now is not None
    assert (now.calls, now.version) == (2, 3)


ZONES = ["UTC", "America/Los_Angeles", "Asia/Kolkata", "Pacific/Chatham", "Europe/London"]
DST_CHANGES = [
    utc(2026, 3, 8, 10),  # Los Angeles springs forward
    utc(2026, 11, 1, 9),  # Los Angeles falls back
    utc(2026, 3, 29, 1),  # London springs forward
    utc(2026, 10, 25, 1),  # London falls back
    utc(2026, 4, 4, 14),  # Chatham (+13:45 -> +12:45)
    utc(2026, 9, 26, 14),  # Chatham (+12:45 -> +13:45)
]


def test_every_call_lands_on_its_local_day_across_offsets_and_dst(fresh_ledgers) -> None:
    """For any instant (DST changes included) and any zone, the call is counted on the
    date its start has on the entity's wall clock, and on no other day."""
    with fresh_ledgers() as (ledger, _clock, _raw):
        for i, zone in enumerate(ZONES):
            ledger.register_entity(f"E{i}", "company", ADMIN, timezone=zone)
        serial = iter(range(10**9))

        @settings(max_examples=100, deadline=None)
        @given(
            zone=st.integers(min_value=0, max_value=len(ZONES) - 1),
            started=st.one_of(
                st.integers(min_value=0, max_value=275 * 86400).map(
                    lambda s: utc(2026, 3, 1) + timedelta(seconds=s)
                ),
                # Within two hours of a DST change in Los Angeles, London or Chatham.
                st.tuples(st.sampled_from(DST_CHANGES), st.integers(-7200, 7200)).map(
                    lambda c: c[0] + timedelta(seconds=c[1])
                ),
            ),
        )
        def check(zone: int, started: datetime) -> None:
            entity = f"e{zone}"
            local_day = started.astimezone(ZoneInfo(ZONES[zone])).date()
            n = next(serial)
            call_id = f"c{n}"
            outcome = ledger.record_calls([row(n, call_id, entity, started)], FILE)
            assert outcome.recorded == 1
            assert call_id in call_ids(ledger, entity, local_day)
            for other in (local_day - timedelta(days=1), local_day + timedelta(days=1)):
                if ledger.usage(entity, other) is not None:
                    assert call_id not in call_ids(ledger, entity, other)

        check()
