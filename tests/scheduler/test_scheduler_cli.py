"""`billtrail sweep past-due` and `billtrail notifications` through the CLI's own
entry point, with the environment an operator would set, on both backends."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest

from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger

TODAY = date(2026, 2, 20)


# run_cli(*args) -> Run(code, out, err): tests/conftest.py, in the environment below.
RunCLI = Callable[..., Any]


@pytest.fixture
def cli_env(scheduler_env: Callable[..., dict[str, str]]) -> dict[str, str]:
    return scheduler_env(BILLTRAIL_ADMIN_EMAILS="ops@billtrail.test")


@pytest.fixture
def ledger(run_cli: RunCLI) -> Iterator[Ledger]:
    """The ledger the CLI uses (the environment is set by `run_cli`)."""
    app = bootstrap.ledger(Settings.from_env())
    yield app
    app.close()


@pytest.fixture
def acme(ledger: Ledger, new_world: Callable[[Ledger], Any]) -> str:
    world = new_world(ledger)
    world.issue("in_1", "acme", date(2026, 2, 10))  # ACME-0001, overdue on TODAY
    world.issue("in_2", "acme", TODAY)  # ACME-0002, due on TODAY: not overdue
    return "acme"


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_sweep_past_due_by_hand_marks_delivers_and_is_a_no_op_the_second_time(
    run_cli: RunCLI, acme: str, smtp: Any, ledger: Ledger
) -> None:
    first = run_cli("sweep", "past-due", "--today", "2026-02-20")
    assert first.code == 0, first.err
    assert first.out.splitlines() == [
        "past-due sweep 2026-02-20: 1 invoice(s) moved to past due, 3 notice(s) queued",
        "delivered: 3 sent, 0 to retry, 0 failed for good",
    ]
    assert sorted(r.recipients[0] for r in smtp.received) == [
        "billing@acme.test",
        "cfo@acme.test",
        "ops@billtrail.test",
    ]
    again = run_cli("sweep", "past-due", "--today", "2026-02-20")
    assert again.code == 0, again.err
    assert again.out.splitlines()[0] == (
        "past-due sweep 2026-02-20: 0 invoice(s) moved to past due, 0 notice(s) queued"
    )
    assert len(smtp.received) == 3
    assert ledger.last_past_due_sweep() == TODAY


def test_sweep_past_due_with_a_bad_date_is_one_line_and_exit_2(run_cli: RunCLI) -> None:
    r = run_cli("sweep", "past-due", "--today", "20/02/2026")
    assert r.code == 2
    assert one_line(r.err) == "billtrail: --today must be a date like 2026-02-01, not '20/02/2026'"


def test_notifications_list_gives_the_proof_of_dunning_and_what_failed_for_good(
    run_cli: RunCLI, acme: str, smtp: Any
) -> None:
    smtp.refuse = "550 5.1.1 mailbox unavailable"
    assert run_cli("sweep", "past-due", "--today", "2026-02-20").code == 0
    listed = run_cli("notifications", "list", "--invoice", "ACME-0001", "--json")
    assert listed.code == 0, listed.err
    docs = json.loads(listed.out.strip().splitlines()[-1])
    assert {(d["audience"], d["channel"], d["recipient"], d["status"]) for d in docs} == {
        ("admin", "email", "ops@billtrail.test", "gave_up"),
        ("customer", "email", "billing@acme.test", "gave_up"),
        ("customer", "email", "cfo@acme.test", "gave_up"),
    }
    assert {d["detail"] for d in docs} == {"DATA: 550 5.1.1 mailbox unavailable"}
    failed = run_cli("notifications", "list", "--failed")
    assert failed.code == 0
    assert len(failed.out.strip().splitlines()) == 3
    assert "3 notice(s)" in failed.err


def test_the_webhook_secret_is_the_one_the_customer_verifies_deliveries_with(
    run_cli: RunCLI, acme: str, hooks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run_cli("notifications", "webhook-secret", "hooked")
    assert r.code == 0, r.err
    assert r.out.strip() == hooks.secret
    assert hooks.secret.startswith("whsec_")
    unknown = run_cli("notifications", "webhook-secret", "nobody")
    assert unknown.code == 2
    assert one_line(unknown.err) == "billtrail: no billable entity 'nobody'"
    monkeypatch.delenv("BILLTRAIL_SECRET_KEY")
    unset = run_cli("notifications", "webhook-secret", "acme")
    assert unset.code == 2
    assert "BILLTRAIL_SECRET_KEY is not set" in one_line(unset.err)
