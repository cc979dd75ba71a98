"""The ledger application itself: its persistence wiring, the seal key it needs, one
log across restarts, and concurrent writers that neither lose a change nor break
the seal's chain."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.application import ConcurrentChange
from ledger.entities.domain import BillableEntity
from ledger.persistence import SealKeyMissing
from ledger.sources import Source

ADMIN = Source("admin", "admin-1", actor="alice@example.com")
SEAL_KEY = "seal-key-for-tests-only-0123456789abcdef"


def open_ledger(database_url: str, var_dir: Path, clock: Any = None) -> Ledger:
    settings = Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": database_url,
            "BILLTRAIL_SEAL_KEY": SEAL_KEY,
            "BILLTRAIL_VAR_DIR": str(var_dir),
        }
    )
    return bootstrap.ledger(settings) if clock is None else bootstrap.ledger(settings, clock)


def test_a_ledger_without_a_persistence_module_is_refused() -> None:
    """The library's default is in memory: a ledger that forgets is no ledger."""
    with pytest.raises(ValueError, match="PERSISTENCE_MODULE"):
        Ledger({}, seal_key=b"k" * 32)
    with pytest.raises(ValueError, match="PERSISTENCE_MODULE"):
        Ledger({"PERSISTENCE_MODULE": "eventsourcing.popo"}, seal_key=b"k" * 32)


def test_the_backend_follows_the_database_url(ledger: Ledger, database_url: str) -> None:
    assert ledger.backend == ("sqlite" if database_url.startswith("sqlite") else "postgres")
    assert ledger.name == "Ledger"


def test_without_a_seal_key_nothing_is_written(database_url: str, raw_log: Any) -> None:
    env = bootstrap.eventsourcing_env(
        Settings.from_env({"BILLTRAIL_DATABASE_URL": database_url}).database
    )
    keyless = Ledger(env, seal_key=b"")
    try:
        with pytest.raises(SealKeyMissing):
            keyless.register_entity("Acme", "company", ADMIN)
        with pytest.raises(SealKeyMissing):
            keyless.verify_seal()
    finally:
        keyless.close()
    assert raw_log.count("events") == 0
    assert raw_log.count("seal") == 0


def test_a_reopened_ledger_continues_the_same_log_and_seal(
    database_url: str, tmp_path: Path, clock: Any
) -> None:
    first = open_ledger(database_url, tmp_path, clock)
    try:
        first.register_entity("Acme", "company", ADMIN)
        first.set_rate("acme", Decimal("0.01"), "usd", date(2026, 1, 1), "signed", ADMIN)
        checkpoint = first.verify_seal().head
    finally:
        first.close()
    clock.advance(days=1)
    second = open_ledger(database_url, tmp_path, clock)
    try:
        assert second.rate_on("acme", date(2026, 1, 2)).unit_price == Decimal("0.01")
        second.rename_entity("acme", "Acme Inc", ADMIN)
        result = second.verify_seal(checkpoint=checkpoint)
        assert (result.ok, result.checked) == (True, 3)
    finally:
        second.close()


def test_concurrent_writers_lose_no_change_and_keep_one_seal_chain(
    database_url: str, tmp_path: Path, ledger: Ledger
) -> None:
    """Two processes' worth of ledgers (two applications on one database) rename the
    same entity at once: each rename lands exactly once or gives up with
    ConcurrentChange, and the log stays one unbroken chain."""
    for name in ("Acme", "W0", "W1"):
        ledger.register_entity(name, "company", ADMIN)
    writers = [open_ledger(database_url, tmp_path / f"w{i}") for i in range(2)]

    def work(i: int) -> int:
        landed = 0
        for n in range(12):
            # Its own entity: never a conflict, always appended (the seal's contention).
            assert writers[i].rename_entity(f"w{i}", f"W{i} {n}", ADMIN) is True
            landed += 1
            # The shared entity: conflicts are retried, or given up on as a whole.
            with contextlib.suppress(ConcurrentChange):
                landed += writers[i].rename_entity("acme", f"Acme {i}-{n}", ADMIN)
        return landed

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            landed = sum(pool.map(work, range(2)))
    finally:
        for writer in writers:
            writer.close()
    renames = sum(
        len(ledger.history(BillableEntity.create_id(e))) - 1 for e in ("acme", "w0", "w1")
    )
    assert renames == landed
    assert renames >= 24
    result = ledger.verify_seal()
    assert (result.ok, result.checked) == (True, 3 + renames)
