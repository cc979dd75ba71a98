"""`billtrail demo` ends with the portal: an admin and a customer login printed,
whose passwords work on the portal built on the demo's database (through the real
login form, CSRF token included), each landing on its own pages; served for real on
a port until stopped (SIGTERM, as by Ctrl-C), with the sandbox that billed the world
behind it, whose state is saved as it was."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient

from billtrail import bootstrap
from billtrail.cli import demo as demo_command
from billtrail.settings import Settings

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


def http_log_in(port: int, email: str, password: str) -> str | None:
    """Log in through the served form over HTTP; where the portal sends the user."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/login")
    answer = conn.getresponse()
    token = _CSRF.search(answer.read().decode())
    assert token, "no CSRF token in the served login form"
    cookie = answer.headers["Set-Cookie"].split(";", 1)[0]
    body = urlencode({"email": email, "password": password, "csrf_token": token.group(1)})
    headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    conn.request("POST", "/login", body, headers)
    answer = conn.getresponse()
    answer.read()
    conn.close()
    return answer.getheader("Location")


def test_the_demo_serves_the_portal_until_stopped_then_saves_stripe_as_it_was(
    demo: tuple[Path, str], tmp_path: Path
) -> None:
    directory, out = demo
    # A copy of the world, so this test leaves the demo's saved sandbox state alone.
    world = tmp_path / "world"
    shutil.copytree(directory, world)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    found = logins(out)
    landed: dict[str, str | None] = {}
    serving = threading.Event()

    def visit_then_stop() -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and serving.is_set():
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=5).close()
                    break
                except OSError:
                    time.sleep(0.05)  # polling for the port, with a deadline
            for role in ("admin", "customer"):
                email, password, _ = found[role]
                landed[role] = http_log_in(port, email, password)
        finally:
            if serving.is_set():  # what Ctrl-C or `kill` sends the demo
                os.kill(os.getpid(), signal.SIGTERM)

    serving.set()
    visitor = threading.Thread(target=visit_then_stop)
    visitor.start()
    try:
        demo_command.serve_demo(demo_settings(world), world, "127.0.0.1", port)
    finally:
        serving.clear()
        visitor.join(timeout=60)
    assert landed == {"admin": "/admin/invoices", "customer": "/billing"}
    # The portal's Stripe was the sandbox from the saved state: it sent the portal its
    # webhooks while serving, and the endpoint is gone from the state saved at the stop.
    saved = json.loads((world / demo_command.STATE_FILE).read_text())
    endpoints = saved["objects"]["webhook_endpoint"].values()
    portal = [e for e in endpoints if e["url"] == f"http://127.0.0.1:{port}/stripe/webhook"]
    assert len(portal) == 1
    assert portal[0].get("_deleted") is True
