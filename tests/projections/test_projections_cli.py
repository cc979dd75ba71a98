"""The commands: `billtrail invoices list` reads the invoice read model,
`billtrail projections status|run|rebuild` operate the runner, and a rebuild killed
with SIGKILL half way is finished by `run --once` with the same rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from billtrail.cli import _register_commands, cli
from ledger.app import Ledger
from ledger.invoices.domain import Invoice, Totals
from ledger.sources import Source
from ledger.values import Line, Period
from projections.runner import Runner

SEAL_KEY = "seal-key-for-tests-only-0123456789abcdef"


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "BILLTRAIL_DATABASE_URL": database_url,
        "BILLTRAIL_SEAL_KEY": SEAL_KEY,
        "BILLTRAIL_VAR_DIR": str(tmp_path / "var"),
    }


@pytest.fixture
def billtrail(env: dict[str, str]) -> Callable[..., Any]:
    _register_commands()

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


def last_json(output: str) -> Any:
    return json.loads(output.strip().splitlines()[-1])


def test_invoices_list_json_shows_the_read_model_rows(
    ledger: Ledger, world: Callable[[], None], billtrail: Callable[..., Any]
) -> None:
    world()
    billtrail("projections", "run", "--once")
    result = billtrail("invoices", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = last_json(result.output)
    assert len(rows) == 12
    assert set(rows[0]) == {
        "number",
        "stripe_id",
        "entity_id",
        "entity_name",
        "issue_date",
        "due_date",
        "total",
        "currency",
        "status",
    }
    paid = last_json(billtrail("invoices", "list", "--json", "--status", "paid").output)
    assert {r["number"] for r in paid} == {"GLOBEX-0001", "GLOBEX-0007"}
    assert all(Decimal(r["total"]) == Decimal(r["total"]).quantize(Decimal("0.01")) for r in paid)
    ranged = last_json(
        billtrail(
            "invoices",
            "list",
            "--json",
            "--entity",
            "initech",
            "--from",
            "2026-02-03",
            "--to",
            "2026-02-09",
        ).output
    )
    assert [r["number"] for r in ranged] == ["INITECH-0008", "INITECH-0005", "INITECH-0002"]
    found = last_json(billtrail("invoices", "list", "--json", "--search", "globex int").output)
    assert {r["entity_id"] for r in found} == {"globex"}
    as_of = last_json(
        billtrail("invoices", "list", "--json", "--as-of", "2026-02-05", "--status", "open").output
    )
    assert {r["number"] for r in as_of} == {
        "GLOBEX-0001",
        "INITECH-0002",
        "ACME-0003",
        "GLOBEX-0004",
    }


def test_bad_input_is_one_line_on_stderr_and_exit_2(billtrail: Callable[..., Any]) -> None:
    for args in (
        ("invoices", "list", "--status", "overdue"),
        ("invoices", "list", "--from", "2026-02-30"),
        ("invoices", "list", "--min-total", "ten"),
        ("projections", "rebuild", "nope"),
    ):
        result = billtrail(*args)
        assert result.exit_code == 2, args
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_status_shows_the_lag_until_run_once_catches_up(
    ledger: Ledger, world: Callable[[], None], billtrail: Callable[..., Any]
) -> None:
    world()
    before = {
        s["projection"]: s for s in last_json(billtrail("projections", "status", "--json").output)
    }
    head = ledger.recorder.max_notification_id()
    assert before["invoices"]["lag"] == head
    assert before["invoices"]["pending"] > 0
    assert "caught up" in billtrail("projections", "run", "--once").output
    after = last_json(billtrail("projections", "status", "--json").output)
    assert {(s["position"], s["lag"], s["pending"]) for s in after} == {(head, 0, 0)}


def _many_invoices(ledger: Ledger, n: int) -> None:
    ledger.register_entity("Bulk Co", "company", Source("admin", "a"), entity_id="bulk")
    at = ledger.clock()
    src = Source("seed", "bulk")
    amount = Decimal("1.00")
    drafts = [
        Invoice.draft(
            f"in_bulk_{i}",
            "bulk",
            "usd",
            Period(date(2026, 1, 1), date(2026, 2, 1)),
            [Line("il", "fee", "Fee", Decimal(1), amount, amount)],
            Totals(amount, Decimal(0), amount),
            src,
            at,
        )
        for i in range(n)
    ]
    for i in range(0, n, 500):
        ledger.save(*drafts[i : i + 500])


def test_a_rebuild_killed_half_way_is_finished_by_run_with_the_same_rows(
    ledger: Ledger, env: dict[str, str], dump: Any, billtrail: Callable[..., Any]
) -> None:
    _many_invoices(ledger, 3000)
    runner = Runner(ledger)
    runner.catch_up()
    expected = dump(runner)
    head = ledger.recorder.max_notification_id() or 0
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from billtrail.cli import main; main()",
            "projections",
            "rebuild",
            "--page",
            "20",
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Wait on the rebuild's own position: past its start, short of the head.
        while True:
            position = runner.positions()["invoices"]
            if 0 < position < head or child.poll() is not None:
                break
        assert child.poll() is None, "the rebuild finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    killed_at = runner.positions()["invoices"]
    assert 0 < killed_at < head
    assert dump(runner) != expected
    result = billtrail("projections", "run", "--once")
    assert result.exit_code == 0, result.output
    assert dump(runner) == expected


def test_run_follows_new_commands_until_sigterm(
    ledger: Ledger, env: dict[str, str], runner: Runner
) -> None:
    with subprocess.Popen(
        [
            sys.executable, "-c", "from billtrail.cli import main; main()",
            "projections", "run", "--interval", "0.05",
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as child:  # fmt: skip
        try:
            assert child.stderr is not None
            child.stderr.readline()  # "projections: following the log ..." once it runs
            for n in range(3):
                ledger.register_entity(
                    f"Followed {n}", "company", Source("admin", "a"), entity_id=f"f{n}"
                )
                head = ledger.recorder.max_notification_id() or 0
                # Wait on the projections' position, which only the child advances.
                while min(runner.positions().values()) < head:
                    assert child.poll() is None, "run exited"
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=30) == 0
        finally:
            if child.poll() is None:
                child.kill()
    assert {e[1] for e in _entity_ids(runner)} >= {"f0", "f1", "f2"}


def _entity_ids(runner: Runner) -> list[tuple[Any, ...]]:
    with runner.store.reading() as tx:
        return tx.execute("SELECT aggregate_id, entity_id FROM {p}proj_entities")
