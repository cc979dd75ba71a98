"""The runner's guarantees: read models equal a fresh replay whatever the page size,
a page delivered twice changes nothing, a crash mid-page leaves rows and tracking as
they were, each projection has its own tracking row, and status shows the lag."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from ledger.app import Ledger
from projections.base import Delivered, Tx
from projections.invoices import InvoiceQuery, InvoicesProjection, list_invoices
from projections.runner import Runner, UnknownProjection, attach


class Crash(RuntimeError):
    pass


def test_read_models_equal_a_fresh_replay_whatever_the_page_size(
    ledger: Ledger, runner: Runner, world: Callable[[], None], dump: Any
) -> None:
    attach(ledger, runner)
    world()
    live = dump(runner)
    assert all(live[t] for t in ("proj_invoices", "proj_calls", "proj_rate_versions"))
    runner.rebuild()
    assert dump(runner) == live
    for page in (1, 3, 7):
        small = Runner(ledger, page=page)
        small.rebuild()
        assert dump(small) == live, f"page size {page}"


def test_a_page_delivered_twice_changes_nothing(
    ledger: Ledger, runner: Runner, world: Callable[[], None], dump: Any
) -> None:
    world()
    head = ledger.recorder.max_notification_id() or 0
    notes = ledger.recorder.select_notifications(start=None, limit=head + 1)
    page = [Delivered(n.id, n.topic, ledger.mapper.to_domain_event(n)) for n in notes]
    half = len(page) // 2
    runner.apply(runner.projections, page[:half], page[half - 1].id)
    runner.apply(runner.projections, page, head)
    once = dump(runner)
    positions = runner.positions()
    assert runner.apply(runner.projections, page, head) == 0
    assert runner.apply(runner.projections, page[:half], page[half - 1].id) == 0
    assert dump(runner) == once
    assert runner.positions() == positions == {p.name: head for p in runner.projections}


def test_a_crash_mid_rebuild_leaves_rows_and_tracking_consistent_and_resumable(
    ledger: Ledger, runner: Runner, world: Callable[[], None], dump: Any
) -> None:
    world()
    runner.catch_up()
    expected = dump(runner)
    head = ledger.recorder.max_notification_id() or 0

    class Crashing(InvoicesProjection):
        pages = 0

        def process(self, tx: Tx, page: Sequence[Delivered]) -> None:
            super().process(tx, page)  # its rows are written in the transaction, then:
            Crashing.pages += 1
            if Crashing.pages == 3:
                raise Crash("killed mid-page")

    crashing = Runner(ledger, [Crashing(), *runner.projections[1:]], page=10)
    with pytest.raises(Crash):
        crashing.rebuild(["invoices"])
    positions = runner.positions()
    reached = positions.pop("invoices")
    assert 0 < reached < head
    assert set(positions.values()) == {head}
    assert runner.loading() == {"invoices"}
    assert {s.projection for s in runner.status() if s.rebuilding} == {"invoices"}
    # What survived the crash is exactly a replay up to the tracked position.
    after_crash = dump(runner)
    runner.rebuild(["invoices"], until=reached)
    assert dump(runner) == after_crash
    runner.catch_up()
    assert dump(runner) == expected
    # The search index, built at the end of the bulk load, is complete.
    assert runner.loading() == set()
    found = list_invoices(runner.store, InvoiceQuery(search="Globex Int"), limit=100).rows
    assert {r.entity_id for r in found} == {"globex"}
    assert len(found) == 4


def test_the_fast_decoder_gives_the_events_the_mapper_gives(
    ledger: Ledger, runner: Runner, world: Callable[[], None]
) -> None:
    world()
    notes = ledger.recorder.select_notifications(start=None, limit=10_000)
    topics = {n.topic for n in notes}
    assert len(topics) >= 15
    for note in notes:
        fast, exact = runner.decoder.decode(note), ledger.mapper.to_domain_event(note)
        assert type(fast) is type(exact)
        assert fast == exact
        assert fast.__dict__ == exact.__dict__


def test_each_projection_keeps_its_own_tracking_row(
    ledger: Ledger, runner: Runner, world: Callable[[], None]
) -> None:
    world()
    runner.catch_up()
    head = ledger.recorder.max_notification_id()
    runner.rebuild(["entities"], until=0)
    positions = runner.positions()
    assert positions.pop("entities") == 0
    assert set(positions.values()) == {head}
    assert {s.tracking_name for s in runner.status()} == {
        f"Ledger/{p.name}" for p in runner.projections
    }
    with pytest.raises(UnknownProjection):
        runner.select(["nope"])


def test_status_shows_pending_events_until_caught_up(
    ledger: Ledger, runner: Runner, world: Callable[[], None]
) -> None:
    world()
    status = {s.projection: s for s in runner.status()}
    assert status["invoices"].pending > 0
    assert status["invoices"].lag == status["invoices"].head
    assert status["rates"].pending < status["invoices"].pending
    runner.catch_up()
    assert all(s.pending == 0 and s.lag == 0 for s in runner.status())


def test_a_projection_whose_version_changed_is_rebuilt_from_zero(
    ledger: Ledger, runner: Runner, world: Callable[[], None], dump: Any
) -> None:
    world()
    runner.catch_up()
    expected = dump(runner)

    class Newer(InvoicesProjection):
        version = InvoicesProjection.version + 1

    again = Runner(ledger, [Newer(), *runner.projections[1:]])
    assert again.positions()["invoices"] == 0
    again.catch_up()
    assert dump(again) == expected


def test_two_runners_apply_each_event_once(
    ledger: Ledger, runner: Runner, world: Callable[[], None], dump: Any
) -> None:
    world()
    other = Runner(ledger)
    head = ledger.recorder.max_notification_id() or 0
    notes = ledger.recorder.select_notifications(start=None, limit=head + 1)
    page = [Delivered(n.id, n.topic, ledger.mapper.to_domain_event(n)) for n in notes]
    runner.apply(runner.projections, page, head)
    assert other.catch_up() == 0
    expected = dump(runner)
    runner.rebuild()
    assert dump(other) == expected
