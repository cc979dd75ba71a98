"""Logins: the form, roles, throttling, CSRF, cookies, and where each role may go."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ledger.app import Ledger
from web.auth import MAX_FAILURES

from .conftest import ACME_EMAIL, ADMIN_EMAIL, OPERATOR, PASSWORD, World, csrf_token, log_in


def test_anonymous_pages_redirect_to_the_login_with_where_they_were_going(
    client: FlaskClient, world: World
) -> None:
    response = client.get("/admin/invoices?status=open")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")
    assert "status%3Dopen" in response.headers["Location"]
    assert client.get("/billing").status_code == 302


def test_anonymous_api_calls_get_401_json(client: FlaskClient, world: World) -> None:
    response = client.get("/api/me")
    assert response.status_code == 401
    assert response.is_json
    assert "Bearer" in response.get_json()["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_admin_logs_in_and_lands_on_the_invoices(client: FlaskClient, world: World) -> None:
    token = csrf_token(client)
    response = client.post(
        "/login", data={"email": ADMIN_EMAIL.upper(), "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/invoices"


def test_a_customer_lands_on_their_billing(client: FlaskClient, world: World) -> None:
    response = client.post(
        "/login",
        data={"email": ACME_EMAIL, "password": PASSWORD, "csrf_token": csrf_token(client)},
    )
    assert response.headers["Location"] == "/billing"


def test_a_wrong_password_and_an_unknown_email_read_the_same(
    client: FlaskClient, world: World
) -> None:
    token = csrf_token(client)
    wrong = client.post(
        "/login", data={"email": ADMIN_EMAIL, "password": "x" * 12, "csrf_token": token}
    )
    unknown = client.post(
        "/login", data={"email": "nobody@x.example", "password": PASSWORD, "csrf_token": token}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong email or password." in wrong.get_data(as_text=True)
    assert "Wrong email or password." in unknown.get_data(as_text=True)


def test_failed_logins_are_throttled_even_with_the_right_password_afterwards(
    client: FlaskClient, world: World
) -> None:
    token = csrf_token(client)
    for _ in range(MAX_FAILURES):
        bad = {"email": ADMIN_EMAIL, "password": "not the password", "csrf_token": token}
        assert client.post("/login", data=bad).status_code == 401
    good = {"email": ADMIN_EMAIL, "password": PASSWORD, "csrf_token": token}
    response = client.post("/login", data=good)
    assert response.status_code == 429
    assert "Too many failed logins" in response.get_data(as_text=True)


def test_a_login_without_the_csrf_token_is_refused(client: FlaskClient, world: World) -> None:
    response = client.post("/login", data={"email": ADMIN_EMAIL, "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/admin/invoices").status_code == 302  # not logged in


def test_a_login_form_missing_a_field_is_a_400_page(client: FlaskClient, world: World) -> None:
    response = client.post("/login", data={"email": ADMIN_EMAIL, "csrf_token": csrf_token(client)})
    assert response.status_code == 400
    assert "password" in response.get_data(as_text=True)


def test_next_only_goes_to_a_path_on_this_site(client: FlaskClient, world: World) -> None:
    token = csrf_token(client)
    form = {"email": ADMIN_EMAIL, "password": PASSWORD, "csrf_token": token}
    response = client.post("/login", data={**form, "next": "//evil.example/x"})
    assert response.headers["Location"] == "/admin/invoices"
    client.post("/logout", data={"csrf_token": csrf_token(client, "/login")})
    token = csrf_token(client)
    response = client.post("/login", data={**form, "csrf_token": token, "next": "/admin/past-due"})
    assert response.headers["Location"] == "/admin/past-due"


def test_the_session_cookie_is_secure_httponly_and_samesite(
    client: FlaskClient, world: World
) -> None:
    response = client.post(
        "/login",
        data={"email": ADMIN_EMAIL, "password": PASSWORD, "csrf_token": csrf_token(client)},
    )
    cookie = next(
        v for k, v in response.headers.items() if k == "Set-Cookie" and "billtrail_session" in v
    )
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_pages_forbid_framing_and_outside_scripts(admin: FlaskClient) -> None:
    response = admin.get("/login")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_a_customer_gets_404_on_admin_pages_and_an_admin_on_customer_pages(
    acme: FlaskClient, admin: FlaskClient
) -> None:
    assert acme.get("/admin/invoices").status_code == 404
    assert admin.get("/billing").status_code == 404


def test_logging_out_needs_the_form_and_ends_the_session(admin: FlaskClient) -> None:
    assert admin.post("/logout").status_code == 400  # no CSRF token: refused
    assert (
        admin.post("/logout", data={"csrf_token": csrf_token(admin, "/login")}).status_code == 302
    )
    assert admin.get("/admin/invoices").status_code == 302


def test_a_disabled_user_is_logged_out_at_once(admin: FlaskClient, ledger: Ledger) -> None:
    assert admin.get("/admin/invoices").status_code != 302
    ledger.disable_user(ADMIN_EMAIL, "left the company", OPERATOR)
    assert admin.get("/admin/invoices").status_code == 302


def test_an_api_token_is_not_a_page_login(app: Flask, world: World) -> None:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {world.tokens[ADMIN_EMAIL]}"}
    assert client.get("/admin/invoices", headers=headers).status_code == 302


@pytest.mark.parametrize("token", ["", "bt_nothing", "bt_0123456789abcdef_" + "x" * 43])
def test_a_bad_bearer_token_is_401(client: FlaskClient, world: World, token: str) -> None:
    response = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_log_in_helper_really_logs_in(app: Flask, world: World) -> None:
    client = log_in(app.test_client(), ADMIN_EMAIL)
    assert client.get("/admin/invoices").status_code != 302


def test_a_good_bearer_token_names_its_user(client: FlaskClient, world: World) -> None:
    headers = {"Authorization": f"Bearer {world.tokens[ACME_EMAIL]}"}
    response = client.get("/api/me", headers=headers)
    assert response.get_json() == {"email": ACME_EMAIL, "role": "customer", "entity_id": "acme"}
