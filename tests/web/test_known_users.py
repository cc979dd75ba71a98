"""A logged-in user is not rebuilt from its events on every request (web.auth's
KnownUsers), yet a change to it takes effect on the next one."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from ledger.app import Ledger

from .conftest import ADMIN_EMAIL, OPERATOR


def test_a_logged_in_user_is_read_from_the_ledger_once_while_it_does_not_change(
    admin: FlaskClient, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    find_user = ledger.find_user

    def counted(email: str) -> object:
        loads.append(email)
        return find_user(email)

    monkeypatch.setattr(ledger, "find_user", counted)
    for _ in range(3):
        assert admin.get("/admin/invoices").status_code == 200
    assert loads == [ADMIN_EMAIL]

    ledger.disable_user(ADMIN_EMAIL, "left the company", OPERATOR)
    assert admin.get("/admin/invoices").status_code == 302
    assert loads == [ADMIN_EMAIL, ADMIN_EMAIL]
