"""The outbound commands through `billtrail.cli.main`, with the environment an
operator sets (STRIPE_API_BASE at the sandbox): `stripe push`, `usage push`,
`corrections ...` and `reconcile`; a user's mistake is one line and exit 2, a
Stripe that refuses the key one line and exit 1, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.stripe.sandbox import RunningSandbox

# run_cli(*args) -> Run(code, out, err): tests/conftest.py, in the environment below.
RunCLI = Callable[..., Any]


@pytest.fixture
def cli_env(cli_env: dict[str, str], sandbox: RunningSandbox) -> dict[str, str]:
    """tests/conftest.py's environment, with Stripe at the sandbox."""
    return {**cli_env, "STRIPE_API_BASE": sandbox.url, "STRIPE_API_KEY": sandbox.api_key}


def one_line(run: Any, code: int) -> str:
    assert run.code == code, run
    assert "Traceback" not in run.err
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    return lines[0]


def test_push_then_usage_then_reconcile(run_cli: RunCLI, tmp_path: Path) -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    assert run_cli("entities", "add", "Acme", "--kind", "company").code == 0
    assert (
        run_cli(
            "rates",
            "set",
            "acme",
            "--per-call",
            "0.0125",
            "--currency",
            "EUR",
            "--effective-from",
            str(yesterday - timedelta(days=30)),
        ).code
        == 0
    )
    calls = tmp_path / "calls.csv"
    calls.write_text(
        "call_id,entity_id,started_at,duration_seconds\n"
        + "".join(f"c{i},acme,{yesterday}T10:00:{i:02d}Z,60\n" for i in range(7))
    )
    assert run_cli("calls", "import", str(calls)).code == 0

    # Usage before anything is in Stripe: the user's order of work is wrong.
    assert "stripe push" in one_line(run_cli("usage", "push"), 2)

    pushed = run_cli("stripe", "push")
    assert pushed.code == 0, pushed
    assert pushed.out.strip() == (
        "pushed 1 customers, 1 prices, 1 subscriptions (0 entities not ready)"
    )
    usage = run_cli("usage", "push", "--json")
    assert usage.code == 0, usage
    assert json.loads(usage.out.strip().splitlines()[-1]) == {
        "pushed": 1,
        "corrections": 0,
        "calls": 7,
        "up_to_date": 0,
        "refused": 0,
    }
    again = run_cli("usage", "push", "--date", str(yesterday))
    assert again.code == 0
    assert "1 already up to date" in again.out

    reconciled = run_cli("reconcile", "--json")
    assert reconciled.code == 0, reconciled
    assert json.loads(reconciled.out.strip().splitlines()[-1]) == {"checked": 0, "findings": []}


def test_a_users_mistakes_are_one_line_and_exit_2(run_cli: RunCLI) -> None:
    assert "--date" in one_line(run_cli("usage", "push", "--date", "yesterday"), 2)
    assert "no invoice" in one_line(
        run_cli("corrections", "write-off", "in_nope", "--reason", "x"), 2
    )
    assert "go together" in one_line(
        run_cli("corrections", "wrong-rate", "in_nope", "--per-call", "0.01", "--reason", "x"),
        2,
    )
    assert "--reason" in one_line(run_cli("corrections", "credit", "in_nope", "--amount", "1"), 2)
    assert "ghost" in one_line(run_cli("stripe", "push", "--send-invoice", "ghost"), 2)


def test_stripe_refusing_the_key_is_one_line(
    run_cli: RunCLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_cli("entities", "add", "Acme", "--kind", "company").code == 0
    monkeypatch.setenv("STRIPE_API_KEY", "sk_live_not_a_key")
    assert "API key" in one_line(run_cli("stripe", "push"), 2)
