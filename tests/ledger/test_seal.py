"""The seal: an HMAC chain over the log in notification order. Tampering with the
stored log through raw SQL (as someone with database access but without the key
would) is found, and verification names the first position where the log and its
seal disagree; a clean log is never flagged."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.errors import InvalidEntity, InvalidRate
from ledger.invoices.application import InvoiceSnapshot
from ledger.invoices.domain import Totals
from ledger.seal import Link
from ledger.sources import Source
from ledger.usage.application import CallRow
from ledger.values import Period

ADMIN = Source("admin", "admin-1", actor="alice@example.com")
D = Decimal


def build_world(ledger: Ledger, clock: Any) -> int:
    """A small log touching every aggregate; returns its number of events."""
    ledger.register_entity("Acme", "company", ADMIN, timezone="Europe/Paris")
    clock.advance(seconds=1)
    ledger.register_entity("Beta", "organization", ADMIN)
    clock.advance(seconds=1)
    ledger.rename_entity("beta", "Beta Org", ADMIN)
    clock.advance(seconds=1)
    ledger.set_rate("acme", D("0.0125"), "usd", date(2026, 1, 1), "signed", ADMIN)
    clock.advance(seconds=1)
    ledger.set_rate("acme", D("0.0100"), "usd", date(2026, 2, 1), "discount", ADMIN)
    clock.advance(seconds=1)
    calls = [
        CallRow(i, f"c{i}", "acme", datetime(2026, 1, 1 + i % 2, 12, tzinfo=UTC), 60)
        for i in range(1, 5)
    ]
    ledger.record_calls(calls, Source("import_file", "calls.csv"))
    clock.advance(seconds=1)
    ledger.observe_invoice(
        InvoiceSnapshot(
            stripe_id="in_1",
            entity_id="acme",
            currency="usd",
            period=Period(date(2026, 1, 1), date(2026, 2, 1)),
            status="open",
            lines=[],
            totals=Totals(D("0.05"), D("0"), D("0.05")),
            number="A-1",
            issue_date=date(2026, 2, 1),
            due_date=date(2026, 2, 15),
        ),
        Source("stripe_event", "evt_1"),
    )
    clock.advance(seconds=1)
    return ledger.recorder.max_notification_id() or 0


@pytest.fixture
def world(ledger: Ledger, clock: Any) -> int:
    n = build_world(ledger, clock)
    assert n == 11  # 2 registered + renamed + contracted + revised + 2x(begun, calls) + 2 invoice
    return n


def assert_found(ledger: Ledger, position: int, what: str, checkpoint: Link | None = None) -> None:
    result = ledger.verify_seal(checkpoint)
    assert not result.ok
    assert result.finding is not None
    assert (result.finding.position, what in result.finding.what) == (position, True), str(
        result.finding
    )
    # Everything before the finding did verify.
    assert result.head is None or result.head.notification_id < position


def test_a_clean_log_verifies_with_the_right_count(
    ledger: Ledger, raw_log: Any, world: int
) -> None:
    result = ledger.verify_seal()
    assert result.ok
    assert result.finding is None
    assert result.checked == world == raw_log.count("events") == raw_log.count("seal")
    assert result.head is not None
    assert (result.head.seq, result.head.notification_id) == (world, raw_log.max_position())
    # Verifying against its own head, or an older head, is clean too.
    assert ledger.verify_seal(checkpoint=result.head).ok


def test_an_empty_log_verifies(ledger: Ledger) -> None:
    result = ledger.verify_seal()
    assert (result.ok, result.checked, result.head) == (True, 0, None)


def test_a_log_that_grew_since_the_checkpoint_verifies(ledger: Ledger, clock, world: int) -> None:
    checkpoint = ledger.verify_seal().head
    ledger.rename_entity("acme", "Acme Two", ADMIN)
    result = ledger.verify_seal(checkpoint=checkpoint)
    assert (result.ok, result.checked) == (True, world + 1)


@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_altering_one_events_state_is_found_at_its_position(
    ledger: Ledger, raw_log: Any, world: int, which: str
) -> None:
    position = {"first": 1, "middle": world // 2, "last": world}[which]
    state = raw_log.state(position)
    raw_log.set_state(position, state[:-1] + bytes([state[-1] ^ 0x01]))
    assert_found(ledger, position, "does not match its seal (altered or reordered)")


def test_a_changed_price_in_the_contract_is_found(ledger: Ledger, raw_log: Any, world: int) -> None:
    [contracted] = [
        p for p in raw_log.positions() if raw_log.row(p)[2] == "billtrail:Rate.Contracted"
    ]
    state = raw_log.state(contracted)
    assert b"0.0125" in state
    raw_log.set_state(contracted, state.replace(b"0.0125", b"0.0001"))
    assert_found(ledger, contracted, "altered")


@pytest.mark.parametrize(
    ("column", "value"),
    [("topic", "billtrail:BillableEntity.Archived"), ("originator_version", 7)],
)
def test_altering_an_events_identity_is_found(
    ledger: Ledger, raw_log: Any, world: int, column: str, value: object
) -> None:
    raw_log.run(
        f"UPDATE {raw_log.events} SET {column} = ? WHERE {raw_log.position} = ?", (value, 3)
    )
    assert_found(ledger, 3, "altered")


def test_a_deleted_event_is_found_at_its_position(ledger: Ledger, raw_log: Any, world: int) -> None:
    raw_log.delete_event(4)
    assert_found(ledger, 4, "the sealed event is missing (removed)")


def test_a_deleted_seal_link_is_found_at_its_events_position(
    ledger: Ledger, raw_log: Any, world: int
) -> None:
    """Only the link is gone: the event it sealed is still in the log and is the first
    bad position (it used to be reported at the next event, whose link is intact)."""
    raw_log.delete_link(5)
    assert_found(ledger, 5, "seal link 5 is missing")


@pytest.mark.parametrize("named", [0, -5])
def test_a_seal_link_altered_to_name_an_earlier_position_is_found_at_its_event(
    ledger: Ledger, raw_log: Any, world: int, named: int
) -> None:
    """Link 4 altered to name position 0 or a negative one: the first bad position is
    event 4 (it used to be reported at the position the link named, which is no
    position of the log)."""
    links = raw_log.links()
    raw_log.rewrite_links([(s, named if s == 4 else p, m) for s, p, m in links])
    assert_found(ledger, 4, f"seal link 4 names position {named}")


def test_a_deleted_event_with_its_seal_link_is_found_where_the_chain_breaks(
    ledger: Ledger, raw_log: Any, world: int
) -> None:
    """The removed event's position is gone with its link; the finding names the first
    surviving position after the gap, whose link no longer chains."""
    raw_log.delete_event(5)
    raw_log.delete_link(5)
    assert_found(ledger, 6, "seal link 5 is missing")


def test_a_deleted_last_event_with_its_link_needs_the_checkpoint(
    ledger: Ledger, raw_log: Any, world: int
) -> None:
    checkpoint = ledger.verify_seal().head
    raw_log.delete_event(world)
    raw_log.delete_link(world)
    # A chain alone cannot show a cut of its tail (ledger/seal.py says so)...
    cut = ledger.verify_seal()
    assert (cut.ok, cut.checked) == (True, world - 1)
    # ...the checkpoint kept outside the database does.
    assert_found(ledger, world, "ends before the checkpointed link", checkpoint)


def test_a_forged_event_is_found_where_it_was_inserted(
    ledger: Ledger, raw_log: Any, world: int
) -> None:
    _oid, _version, topic, state = raw_log.row(2)
    forged = raw_log.insert_event(uuid4(), 1, topic, state)
    assert forged == world + 1
    assert_found(ledger, forged, "is not in the seal (inserted)")


def test_a_forged_event_with_a_forged_link_is_found(
    ledger: Ledger, raw_log: Any, world: int
) -> None:
    _oid, _version, topic, state = raw_log.row(2)
    forged = raw_log.insert_event(uuid4(), 1, topic, state)
    raw_log.run(
        f"INSERT INTO {raw_log.seal} (seq, notification_id, mac) VALUES (?, ?, ?)",
        (world + 1, forged, bytes(32)),
    )
    assert_found(ledger, forged, "does not match its seal")


def test_two_swapped_events_are_found_at_the_first(
    ledger: Ledger, raw_log: Any, world: int
) -> None:
    raw_log.swap_states(3, 8)
    assert_found(ledger, 3, "altered or reordered")


def test_a_truncated_tail_is_found_with_the_checkpoint(
    ledger: Ledger, raw_log: Any, world: int
) -> None:
    checkpoint = ledger.verify_seal().head
    assert checkpoint is not None
    for position in range(world - 2, world + 1):
        raw_log.delete_event(position)
        raw_log.delete_link(position)
    assert ledger.verify_seal().ok  # without the checkpoint: a shorter, valid chain
    # The finding names the checkpointed position: the positions removed before it
    # are not recorded anywhere that survived.
    assert_found(ledger, checkpoint.notification_id, "(truncated)", checkpoint)


def test_a_tail_rewritten_after_the_checkpoint_is_found(
    ledger: Ledger, raw_log: Any, clock, world: int
) -> None:
    """Cut the last two events and their links, then let the application append two
    new ones: the chain is valid again, but not the one the checkpoint saw."""
    checkpoint = ledger.verify_seal().head
    assert checkpoint is not None
    for position in (world - 1, world):
        raw_log.delete_event(position)
        raw_log.delete_link(position)
    clock.advance(days=1)
    ledger.rename_entity("acme", "Acme Rewritten", ADMIN)
    ledger.rename_entity("beta", "Beta Rewritten", ADMIN)
    assert ledger.verify_seal().ok
    [(new_position,)] = raw_log.run(
        f"SELECT notification_id FROM {raw_log.seal} WHERE seq = ?", (checkpoint.seq,)
    )
    assert_found(ledger, new_position, "differs from the checkpoint (log rewritten)", checkpoint)


def test_verifying_with_another_key_fails_at_the_first_event(
    ledger: Ledger, database_url: str, tmp_path: Any, world: int
) -> None:
    settings = Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": database_url,
            "BILLTRAIL_SEAL_KEY": "another-key-entirely-0123456789abcdef",
            "BILLTRAIL_VAR_DIR": str(tmp_path / "other"),
        }
    )
    other = bootstrap.ledger(settings)
    try:
        result = other.verify_seal()
    finally:
        other.close()
    assert result.finding is not None
    assert (result.checked, result.finding.position) == (0, 1)


# Random tampering ----------------------------------------------------------------

TAMPERS = ["alter", "delete_event", "delete_event_and_link", "swap", "insert"]
EXAMPLES = {"sqlite": 60, "postgres": 15}


def test_random_tampering_is_found_at_the_first_bad_position(fresh_ledgers: Any) -> None:
    @settings(
        max_examples=EXAMPLES[fresh_ledgers.backend],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(tamper=st.sampled_from(TAMPERS), data=st.data())
    def check(tamper: str, data: st.DataObject) -> None:
        with fresh_ledgers() as (ledger, clock, raw_log):
            n = build_world(ledger, clock)
            clean = ledger.verify_seal()
            assert clean.ok
            assert clean.checked == n
            checkpoint = clean.head
            k = data.draw(st.integers(min_value=1, max_value=n), label="position")
            if tamper == "alter":
                state = raw_log.state(k)
                byte = data.draw(st.integers(min_value=0, max_value=len(state) - 1), label="byte")
                raw_log.set_state(k, state[:byte] + bytes([state[byte] ^ 0x20]) + state[byte + 1 :])
                expected = k
            elif tamper == "delete_event":
                raw_log.delete_event(k)
                expected = k
            elif tamper == "delete_event_and_link":
                raw_log.delete_event(k)
                raw_log.delete_link(k)
                expected = k + 1 if k < n else n  # the last one: found by the checkpoint
            elif tamper == "swap":
                j = data.draw(st.integers(min_value=1, max_value=n).filter(lambda j: j != k))
                assume(raw_log.state(k) != raw_log.state(j))
                raw_log.swap_states(k, j)
                expected = min(k, j)
            else:
                _oid, _version, topic, state = raw_log.row(k)
                expected = raw_log.insert_event(uuid4(), 1, topic, state)
            result = ledger.verify_seal(checkpoint)
            assert result.finding is not None, tamper
            assert result.finding.position == expected, str(result.finding)

    check()


def test_a_clean_log_is_never_flagged(fresh_ledgers: Any) -> None:
    """Whatever the application records (here: random renames and rates, some
    refused), the seal verifies, also against any earlier checkpoint."""

    @settings(
        max_examples=EXAMPLES[fresh_ledgers.backend],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        steps=st.lists(
            st.one_of(
                st.sampled_from(["Acme", "Acme Two", "  "]),
                st.sampled_from([D("0.01"), D("0.02"), D("-1")]),
            ),
            max_size=12,
        )
    )
    def check(steps: list[Any]) -> None:
        with fresh_ledgers() as (ledger, clock, _raw):
            ledger.register_entity("Acme", "company", ADMIN)
            checkpoints = []
            for step in steps:
                clock.advance(seconds=1)
                # A refused command (blank name, negative price) records nothing.
                with contextlib.suppress(InvalidEntity, InvalidRate):
                    if isinstance(step, str):
                        ledger.rename_entity("acme", step, ADMIN)
                    else:
                        ledger.set_rate("acme", step, "usd", date(2026, 1, 1), "r", ADMIN)
                result = ledger.verify_seal()
                assert result.ok, result.finding
                checkpoints.append(result.head)
            total = ledger.recorder.max_notification_id()
            for checkpoint in checkpoints:
                result = ledger.verify_seal(checkpoint)
                assert (result.ok, result.checked) == (True, total)

    check()


def test_verifying_while_another_writer_appends_never_reports_tampering(
    ledger: Ledger, database_url: str, tmp_path: Any
) -> None:
    """`billtrail verify` runs beside the workers: events and links committed while it
    reads must not look removed or inserted. (Each verification reads the events and
    the links in separate queries; a write in between used to be reported as
    tampering in roughly one run in ten.)"""
    ledger.register_entity("Acme", "company", ADMIN)
    settings = Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": database_url,
            "BILLTRAIL_SEAL_KEY": "seal-key-for-tests-only-0123456789abcdef",
            "BILLTRAIL_VAR_DIR": str(tmp_path / "writer"),
        }
    )
    writer = bootstrap.ledger(settings)
    stop = threading.Event()
    written = [0]

    def write() -> None:
        while not stop.is_set():
            written[0] += 1
            writer.rename_entity("acme", f"Acme {written[0]}", ADMIN)

    findings = []
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            done = pool.submit(write)
            try:
                # Verify over and over until the writer has appended a good many events
                # meanwhile (bounded, should the writer be starved).
                while (written[0] < 40 or len(findings) < 100) and len(findings) < 5000:
                    findings.append(ledger.verify_seal().finding)
            finally:
                stop.set()
            done.result()
    finally:
        writer.close()
    assert written[0] >= 40  # the writer really ran alongside
    assert [str(f) for f in findings if f is not None] == []
    assert ledger.verify_seal().checked == 1 + written[0]


# Random tampering of the seal table, and more of the events ------------------------------

SEAL_TAMPERS = [
    "edit_mac",
    "edit_link_position",
    "delete_link",
    "insert_link",
    "reorder_links",
    "truncate_links",
    "insert_event_at",
    "truncate_events",
    "truncate_tail",
]


def flip(mac: bytes, byte: int) -> bytes:
    return mac[:byte] + bytes([mac[byte] ^ 0x80]) + mac[byte + 1 :]


# Per kind: every kind runs on each backend, at positions hypothesis draws.
EXAMPLES_PER_KIND = {"sqlite": 20, "postgres": 6}


@pytest.mark.parametrize("tamper", SEAL_TAMPERS)
def test_random_tampering_of_the_seal_table_is_found_at_the_first_bad_position(
    fresh_ledgers: Any, tamper: str
) -> None:
    """Edit, delete, insert, reorder or truncate links of the seal table (and insert or
    truncate events) at hypothesis-drawn positions: verification, with the checkpoint
    of the clean log, fails at the first position the tampering touched, and
    everything before it verified."""

    @settings(
        max_examples=EXAMPLES_PER_KIND[fresh_ledgers.backend],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        with fresh_ledgers() as (ledger, clock, raw_log):
            n = build_world(ledger, clock)
            clean = ledger.verify_seal()
            assert (clean.ok, clean.checked) == (True, n)
            checkpoint = clean.head
            links = raw_log.links()
            # A fresh log: seq k seals position k, so "position k" means both.
            assert [(s, p) for s, p, _ in links] == [(k, k) for k in range(1, n + 1)]
            k = data.draw(st.integers(min_value=1, max_value=n), label="position")
            # A position no event has: past the end, or before the first.
            unused = data.draw(
                st.integers(min_value=n + 1, max_value=n + 1000) | st.integers(-1000, 0),
                label="unused",
            )
            expected = k
            if tamper == "edit_mac":
                byte = data.draw(st.integers(min_value=0, max_value=31), label="byte")
                raw_log.set_mac(k, flip(links[k - 1][2], byte))
            elif tamper == "edit_link_position":
                raw_log.rewrite_links(
                    [(s, unused if s == k else p, m) for s, p, m in links]
                )  # link k now names a position no event has
            elif tamper == "delete_link":
                raw_log.delete_link_seq(k)
            elif tamper == "insert_link":
                k = data.draw(st.integers(min_value=1, max_value=n + 1), label="before")
                forged = (k, unused, data.draw(st.binary(min_size=32, max_size=32)))
                raw_log.rewrite_links(
                    [(s, p, m) for s, p, m in links if s < k]
                    + [forged]
                    + [(s + 1, p, m) for s, p, m in links if s >= k]
                )
                # Appended after the last: a link for a position with no event, found
                # there, or right after the last when it names one before it.
                expected = k if k <= n else max(unused, n + 1)
            elif tamper == "reorder_links":
                j = data.draw(st.integers(min_value=1, max_value=n).filter(lambda j: j != k))
                a, b = links[k - 1], links[j - 1]
                swap_macs_only = data.draw(st.booleans(), label="macs only")
                moved = {
                    k: (k, a[1] if swap_macs_only else b[1], b[2]),
                    j: (j, b[1] if swap_macs_only else a[1], a[2]),
                }
                raw_log.rewrite_links([moved.get(s, (s, p, m)) for s, p, m in links])
                expected = min(k, j)
            elif tamper == "truncate_links":
                raw_log.truncate_links(k)
            elif tamper == "insert_event_at":
                _oid, _version, topic, state = raw_log.row(
                    data.draw(st.integers(min_value=1, max_value=n), label="copied")
                )
                raw_log.insert_event_at(k, uuid4(), 1, topic, state)
            elif tamper == "truncate_events":
                raw_log.truncate_events(k)
            else:  # events and links cut together: only the checkpoint shows it
                raw_log.truncate_events(k)
                raw_log.truncate_links(k)
                unchecked = ledger.verify_seal()
                assert (unchecked.ok, unchecked.checked) == (True, k - 1)
                expected = n
            result = ledger.verify_seal(checkpoint)
            assert result.finding is not None, tamper
            assert result.finding.position == expected, (tamper, str(result.finding))
            # Everything before the finding verified; nothing after it was counted.
            assert result.checked == min(expected, k) - 1, (tamper, result.checked)

    check()


def test_a_log_grown_by_two_writers_in_any_interleaving_is_never_flagged(
    fresh_ledgers: Any, tmp_path: Any
) -> None:
    """Two ledgers on one database (two processes) append in a random interleaving;
    every verification, by either, against every earlier checkpoint, is clean."""

    @settings(
        max_examples=EXAMPLES[fresh_ledgers.backend] // 3,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(writers=st.lists(st.sampled_from([0, 1]), min_size=1, max_size=10))
    def check(writers: list[int]) -> None:
        with fresh_ledgers() as (ledger, clock, raw_log):
            ledger.register_entity("Acme", "company", ADMIN)
            other = bootstrap.ledger(
                Settings.from_env(
                    {
                        "BILLTRAIL_DATABASE_URL": raw_log.url,
                        "BILLTRAIL_SEAL_KEY": "seal-key-for-tests-only-0123456789abcdef",
                        "BILLTRAIL_VAR_DIR": str(tmp_path / "other"),
                    }
                ),
                clock=clock,
            )
            try:
                checkpoints: list[Link | None] = [None]
                for n, writer in enumerate(writers):
                    clock.advance(seconds=1)
                    (ledger, other)[writer].rename_entity("acme", f"Acme {n}", ADMIN)
                    for verifier in (ledger, other):
                        result = verifier.verify_seal(checkpoints[-1])
                        assert result.ok, result.finding
                    checkpoints.append(result.head)
                for checkpoint in checkpoints:
                    result = other.verify_seal(checkpoint)
                    assert (result.ok, result.checked) == (True, 1 + len(writers))
            finally:
                other.close()

    check()
