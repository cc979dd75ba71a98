"""Live following: on PostgreSQL the runner follows the log through the library's
subscription; on SQLite the application catches up in process after each command."""

from __future__ import annotations

import threading

import pytest

from ledger.app import Ledger
from ledger.sources import Source
from projections.entities import get_entity
from projections.runner import Runner, attach

ADMIN = Source("admin", "alice")


def test_the_follower_applies_new_events_as_they_are_recorded(
    ledger: Ledger, runner: Runner
) -> None:
    if ledger.backend != "postgres":
        pytest.skip("SQLite has no subscriptions; the in-process catch-up serves it")
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            runner.follow()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        for n in range(3):
            ledger.register_entity(f"Live {n}", "company", ADMIN, entity_id=f"live-{n}")
            runner.wait(ledger.recorder.max_notification_id() or 0, timeout=10)
            assert get_entity(runner.store, f"live-{n}") is not None
        ledger.rename_entity("live-0", "Live Zero", ADMIN)
        runner.wait(ledger.recorder.max_notification_id() or 0, timeout=10)
        entity = get_entity(runner.store, "live-0")
        assert entity is not None
        assert entity.name == "Live Zero"
    finally:
        runner.stop()
        thread.join(timeout=10)
    assert not errors
    assert not thread.is_alive()


def test_the_follower_survives_its_connections_being_killed(
    ledger: Ledger, runner: Runner, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    if ledger.backend != "postgres":
        pytest.skip("the live follower is PostgreSQL's")
    import psycopg

    errors: list[BaseException] = []

    def follow() -> None:
        try:
            runner.follow(retry_wait=0.05)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        ledger.register_entity("Before", "company", ADMIN, entity_id="before")
        runner.wait(ledger.recorder.max_notification_id() or 0, timeout=10)
        # What a database restart does to every open connection.
        with psycopg.connect(database_url.split("?")[0], autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ledger.register_entity("After", "company", ADMIN, entity_id="after")
        runner.wait(ledger.recorder.max_notification_id() or 0, timeout=20)
        assert get_entity(runner.store, "after") is not None
    finally:
        runner.stop()
        thread.join(timeout=10)
    assert not errors
    assert not thread.is_alive()
    assert "lost the database" in caplog.text


def test_attached_runner_catches_up_after_each_command(ledger: Ledger, runner: Runner) -> None:
    attach(ledger, runner)
    ledger.register_entity("Inline", "organization", ADMIN, entity_id="inline")
    entity = get_entity(runner.store, "inline")
    assert entity is not None
    assert entity.kind == "organization"
    assert set(runner.positions().values()) == {ledger.recorder.max_notification_id()}
