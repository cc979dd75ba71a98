"""`billtrail users`: logins added from the command line, password on stdin."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

PASSWORD = "a long enough password"


@pytest.fixture
def with_stdin(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    return lambda text: monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_users_add_reads_the_password_from_stdin_and_lists_the_user(
    run_cli: Callable[..., Any], with_stdin: Callable[[str], None]
) -> None:
    assert run_cli("entities", "add", "Acme Corp", "--kind", "company").code == 0
    with_stdin(PASSWORD + "\n")
    added = run_cli(
        "users", "add", "AP@acme.example", "--role", "customer", "--entity", "acme-corp"
    )
    assert (added.code, added.out.strip()) == (0, "ap@acme.example")
    listed = run_cli("users", "list")
    assert listed.out.strip() == "ap@acme.example\tcustomer acme-corp"


def test_a_token_is_printed_once_and_disabling_the_user_is_recorded(
    run_cli: Callable[..., Any], with_stdin: Callable[[str], None]
) -> None:
    with_stdin(PASSWORD + "\n")
    assert run_cli("users", "add", "admin@example.com", "--role", "admin").code == 0
    token = run_cli("users", "token", "admin@example.com", "--label", "ci")
    assert token.code == 0
    assert token.out.startswith("bt_")
    assert (
        run_cli("users", "disable", "admin@example.com", "--reason", "left").out.strip()
        == "disabled"
    )
    assert "(disabled)" in run_cli("users", "list").out


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("users", "add", "x@example.com", "--role", "admin"), "", "password on stdin"),
        (("users", "add", "x@example.com", "--role", "admin"), "short\n", "at least 10"),
        (("users", "add", "nope", "--role", "admin"), PASSWORD + "\n", "not an email"),
        (("users", "add", "x@example.com", "--role", "customer"), PASSWORD + "\n", "--entity"),
        (
            ("users", "add", "x@example.com", "--role", "customer", "--entity", "ghost"),
            PASSWORD + "\n",
            "ghost",
        ),
        (("users", "add", "x@example.com", "--role", "owner"), PASSWORD + "\n", "role"),
        (("users", "token", "ghost@example.com"), "", "no user"),
    ],
)
def test_bad_users_exit_2_with_one_line_and_record_nothing(
    run_cli: Callable[..., Any],
    with_stdin: Callable[[str], None],
    args: tuple[str, ...],
    stdin: str,
    message: str,
) -> None:
    with_stdin(stdin)
    result = run_cli(*args)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert message in result.err
    assert "Traceback" not in result.err
    assert run_cli("users", "list").out.strip() == ""
