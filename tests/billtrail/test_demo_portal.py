"""`billtrail demo` ends with the portal: an admin and a customer login printed,
whose passwords work on the portal built on the demo's database (through the real
login form, CSRF token included), each landing on its own pages; and the demo's
serving path hands the portal a Stripe that holds the world it built."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from billtrail import bootstrap
from billtrail.cli import demo as demo_command
from billtrail.settings import Settings
from web.services import KEY

_LOGIN = re.compile(r"^  (admin|customer)(?: of (\S+))?: (\S+)  password: (\S+)$", re.M)
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from billtrail.cli import main

    directory = tmp_path_factory.mktemp("demo-portal")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(directory)
        for name in ("STRIPE_API_BASE", "BILLTRAIL_SEAL_KEY", "BILLTRAIL_DATABASE_URL"):
            mp.delenv(name, raising=False)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
            main(["demo", "--no-serve", "--dir", str(directory / "world"), "--seed", "5"])
        assert exited.value.code == 0, out.getvalue()
    return directory / "world", out.getvalue()


def logins(out: str) -> dict[str, tuple[str, str, str | None]]:
    """role -> (email, password, entity) as the demo printed them."""
    return {role: (email, pw, entity or None) for role, entity, email, pw in _LOGIN.findall(out)}


def demo_settings(directory: Path, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": f"sqlite:///{directory / 'billtrail.db'}",
            "BILLTRAIL_VAR_DIR": str(directory),
            **extra,
        }
    )


@contextlib.contextmanager
def portal(settings: Settings) -> Iterator[Flask]:
    web = bootstrap.web_app(settings)
    web.testing = True
    try:
        yield web
    finally:
        bootstrap.close_web_app(web)


def log_in(client: FlaskClient, email: str, password: str) -> Any:
    form = client.get("/login").get_data(as_text=True)
    token = _CSRF.search(form)
    assert token, "no CSRF token in the login form"
    return client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token.group(1)}
    )


def test_the_demo_prints_an_admin_and_a_customer_login(demo: tuple[Path, str]) -> None:
    _, out = demo
    found = logins(out)
    assert set(found) == {"admin", "customer"}
    assert found["admin"][2] is None
    assert found["customer"][2] == "okapi-logistics"
    assert found["admin"][1] != found["customer"][1]
    assert "serve it with: billtrail serve" in out


def test_the_printed_logins_open_the_portal_each_on_its_own_pages(
    demo: tuple[Path, str],
) -> None:
    directory, out = demo
    found = logins(out)
    with portal(demo_settings(directory)) as web:
        admin, customer = web.test_client(), web.test_client()
        email, password, _ = found["admin"]
        assert log_in(admin, email, password).headers["Location"] == "/admin/invoices"
        email, password, _ = found["customer"]
        assert log_in(customer, email, password).headers["Location"] == "/billing"
        # The sessions hold: each is sent home, and the other role's pages do not exist
        # for it (an anonymous client would be sent to /login instead).
        assert admin.get("/").headers["Location"] == "/admin/invoices"
        assert customer.get("/").headers["Location"] == "/billing"
        assert customer.get("/admin/invoices").status_code == 404
        assert admin.get("/billing").status_code == 404


def test_a_wrong_password_for_the_printed_email_is_refused(demo: tuple[Path, str]) -> None:
    directory, out = demo
    email, password, _ = logins(out)["admin"]
    with portal(demo_settings(directory)) as web:
        response = log_in(web.test_client(), email, password + "x")
    assert response.status_code == 401


def test_the_demo_serves_the_portal_with_the_sandbox_that_billed_the_world(
    demo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory, out = demo
    # A copy of the world, so this test leaves the demo's saved sandbox state alone.
    world = tmp_path / "world"
    shutil.copytree(directory, world)
    served: list[tuple[Settings, str, int]] = []

    def serve(settings: Settings, host: str, port: int) -> None:
        served.append((settings, host, port))
        with portal(settings) as web:
            client = web.test_client()
            email, password, _ = logins(out)["admin"]
            assert log_in(client, email, password).status_code == 302
            # The Stripe the portal talks to holds the demo's customers.
            found = web.extensions[KEY]
            customer_id = found.ledger.entity("okapi-logistics").stripe_customer_id
            assert found.stripe.v1.customers.retrieve(customer_id).id == customer_id

    monkeypatch.setattr(demo_command, "serve_portal", serve)
    demo_command.serve_demo(demo_settings(world), world, "127.0.0.1", 5999)
    [(settings, host, port)] = served
    assert (host, port) == ("127.0.0.1", 5999)
    assert settings.stripe_api_base is not None
    assert settings.stripe_api_base.startswith("http://127.0.0.1:")
    assert settings.stripe_webhook_secrets  # Stripe's webhooks come back to the portal
    # ... while it serves: the saved state sends nothing to a portal that is gone.
    saved = json.loads((world / demo_command.STATE_FILE).read_text())
    endpoints = saved["objects"]["webhook_endpoint"].values()
    assert [e["url"] for e in endpoints if not e.get("_deleted")] == []
