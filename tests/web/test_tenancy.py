"""The tenant suite: every route of the portal and the API, enumerated from the app's
URL map (a route added later is covered without touching this file), asked by
a customer of one entity (globex) for the things of another (acme), by nobody, and
posted to without the CSRF token.

Path parameters are filled by name from `fillers` (acme's invoice numbers and
Stripe ids, its entity id). A route with a parameter name not there fails
`test_every_route_parameter_has_a_filler` until one is added, rather than going
untested. Each route's fillers are proven to reach something first: the admin
(or acme's own customer, for /billing) gets a 200 from at least one filled URL,
so globex's 404 on the same URL means "not yours", not "no such page"."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from ledger.app import Ledger

from .conftest import World, csrf_token

OWNER = "acme"  # entity B: whose things are asked for
# What an answer about acme would carry: its name, numbers, Stripe ids, emails.
LEAKS = ("Acme Corp", "ACME-000", "in_acme_", "acme.example", "cn_acme", "CN-acme")

# Reachable without a login, on purpose. Anything else needing none is a leak.
PUBLIC = {"static", "auth.index", "auth.login", "api.openapi", "stripe_webhook.webhook"}
# Exempt from CSRF: no cookies (bearer tokens; the API is read-only) or signed by
# Stripe. Everything else that takes a POST must refuse one without the token.
CSRF_EXEMPT_PREFIXES = ("api.", "stripe_webhook.")
# Query strings a route needs to answer 200 at all (the same for every asker).
NEEDS = {
    "api.calls": {"from": "2026-01-01", "to": "2026-02-01"},
}
# GET routes the world has nothing to show at, with why their 404s still count.
NO_CONTROL = {
    # Needs a correction id; admin-only, so a customer is refused by the role guard.
    "admin.action_result",
}
_ARGUMENT = re.compile(r"<(?:([^:<>]+):)?([^<>]+)>")
SENT_WITHOUT_TOKEN = {"reason": "tenant suite", "confirm": "yes", "email": "x@y.example"}
CSRF_REFUSAL = "expired or was forged"


def fillers(world: World, entity_id: str) -> dict[str, list[str]]:
    """Values of `entity_id`'s things for each path parameter name in use."""
    numbers = world.of(entity_id)
    stripe_ids = [world.stripe_ids[n] for n in numbers]
    return {
        "number": numbers + stripe_ids,
        "ref": numbers + stripe_ids,
        "invoice": numbers + stripe_ids,
        "stripe_id": stripe_ids,
        "invoice_id": stripe_ids,
        "entity_id": [entity_id],
        "entity": [entity_id],
        "action": ["credit", "void", "regenerate", "uncollectible"],
    }


@dataclass(frozen=True)
class Route:
    rule: Rule

    @property
    def endpoint(self) -> str:
        return str(self.rule.endpoint)

    @property
    def is_api(self) -> bool:
        return self.rule.rule.startswith("/api/")

    @property
    def is_public(self) -> bool:
        return self.endpoint in PUBLIC

    def methods(self) -> list[str]:
        return sorted((self.rule.methods or set()) - {"HEAD", "OPTIONS"})

    def urls(self, values: dict[str, list[str]]) -> list[str]:
        """The route's path filled from `values`, one URL per value (parameters
        advance together), with the query string it needs."""
        names = [m.group(2) for m in _ARGUMENT.finditer(self.rule.rule)]
        count = max((len(values[n]) for n in names), default=1)
        query = NEEDS.get(self.endpoint)
        suffix = f"?{urlencode(query)}" if query else ""

        def fill(i: int) -> Callable[[re.Match[str]], str]:
            def value(m: re.Match[str]) -> str:
                choices = values[m.group(2)]
                return quote(choices[i % len(choices)], safe="")

            return value

        return [_ARGUMENT.sub(fill(i), self.rule.rule) + suffix for i in range(count)]

    @property
    def has_parameters(self) -> bool:
        return bool(self.rule.arguments)


def routes(app: Flask) -> list[Route]:
    return [Route(r) for r in sorted(app.url_map.iter_rules(), key=lambda r: r.rule)]


def event_count(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def ask(client: FlaskClient, method: str, url: str, **kwargs: Any) -> tuple[int, str, Any]:
    """(status, body, headers); an exception in the app is an answer too (a 500)."""
    try:
        response = client.open(url, method=method, **kwargs)
    except Exception as exc:  # any crash is a finding, reported with its route
        return 500, f"raised {type(exc).__name__}: {exc}", {}
    # PDFs and CSVs too: bytes read leniently, only searched for markers.
    body = response.get_data().decode("utf-8", "replace")
    return response.status_code, body, response.headers


@pytest.fixture
def asker(app: Flask, world: World, login: Callable[..., FlaskClient]) -> FlaskClient:
    """The customer of globex, logged in."""
    from .conftest import GLOBEX_EMAIL

    return login(app.test_client(), GLOBEX_EMAIL)


@pytest.fixture
def owner(app: Flask, world: World, login: Callable[..., FlaskClient]) -> FlaskClient:
    """The customer of acme, logged in."""
    from .conftest import ACME_EMAIL

    return login(app.test_client(), ACME_EMAIL)


def _report(failures: list[str]) -> str:
    return "\n".join(failures)


def test_every_route_parameter_has_a_filler(app: Flask, world: World) -> None:
    known = fillers(world, OWNER)
    missing = [
        f"{route.rule.rule}: <{name}>"
        for route in routes(app)
        if not route.is_public
        for name in sorted(route.rule.arguments)
        if name not in known
    ]
    assert missing == [], "add these parameter names to `fillers`:\n" + _report(missing)


def test_the_fillers_reach_every_route_for_someone_allowed(
    app: Flask, world: World, admin: FlaskClient, owner: FlaskClient
) -> None:
    """The control: acme's things, asked for by someone who may see them, exist at
    every GET route with parameters (else a 404 for globex would prove nothing)."""
    values = fillers(world, OWNER)
    failures = []
    for route in routes(app):
        if route.is_public or not route.has_parameters or "GET" not in route.methods():
            continue
        if route.endpoint in NO_CONTROL:
            continue
        allowed = [owner] if route.endpoint.startswith("billing.") else [admin]
        if route.is_api:
            allowed = [admin, owner]
        for client in allowed:
            answers = [ask(client, "GET", url)[0] for url in route.urls(values)]
            if 200 not in answers:
                failures.append(f"{route.rule.rule}: no filled URL answers 200 ({answers})")
    assert failures == [], _report(failures)


def test_a_customer_gets_404_for_anything_of_another_entity(
    app: Flask, world: World, asker: FlaskClient, ledger: Ledger
) -> None:
    values = fillers(world, OWNER)
    before = event_count(ledger)
    failures = []
    for route in routes(app):
        if route.is_public:
            continue
        for method in route.methods():
            data = {"csrf_token": csrf_token(asker)} if method == "POST" else None
            if route.has_parameters:
                for url in route.urls(values):
                    status, body, _ = ask(asker, method, url, data=data)
                    if status != 404:
                        failures.append(f"{method} {url}: {status} {body[:120]!r}")
                continue
            # No parameter to aim with: ask for the other entity by query string,
            # and whatever the answer, nothing of acme may be in it.
            url = f"{route.rule.rule}?{urlencode({'entity': OWNER, 'entity_id': OWNER})}"
            status, body, _ = ask(asker, method, url, data=data)
            leaked = [marker for marker in LEAKS if marker.lower() in body.lower()]
            if status >= 500 or leaked:
                failures.append(f"{method} {url}: {status}, shows {leaked}")
    assert failures == [], "routes that leaked:\n" + _report(failures)
    assert event_count(ledger) == before


def test_a_customers_token_reaches_only_its_own_api_and_no_page(
    app: Flask, world: World, ledger: Ledger
) -> None:
    """The same, with globex's bearer token and no session: the API answers 404
    for acme's things, and a page does not take a token at all (login page)."""
    from .conftest import GLOBEX_EMAIL

    bearer = {"Authorization": f"Bearer {world.tokens[GLOBEX_EMAIL]}"}
    client = app.test_client()
    values = fillers(world, OWNER)
    before = event_count(ledger)
    failures = []
    for route in routes(app):
        if route.is_public or "GET" not in route.methods():
            continue
        for url in route.urls(values):
            status, body, headers = ask(client, "GET", url, headers=bearer)
            if route.is_api and route.has_parameters:
                ok = status == 404
            elif route.is_api:
                ok = status in (200, 404) and not [m for m in LEAKS if m.lower() in body.lower()]
            else:
                ok = status == 302 and headers.get("Location", "").startswith("/login")
            if not ok:
                failures.append(f"GET {url}: {status} {body[:120]!r}")
    assert failures == [], "routes that leaked to a token:\n" + _report(failures)
    assert event_count(ledger) == before


def test_the_api_list_filtered_on_another_entity_is_a_404(asker: FlaskClient, world: World) -> None:
    # The documented choice: an explicit filter on another entity is a 404, not
    # an empty list (which would still answer "that entity exists, with nothing").
    response = asker.get(f"/api/invoices?entity={OWNER}")
    assert response.status_code == 404
    assert response.is_json


def test_nobody_logged_in_gets_the_login_page_or_a_401(
    app: Flask, world: World, client: FlaskClient
) -> None:
    values = fillers(world, OWNER)
    failures = []
    for route in routes(app):
        if route.is_public:
            continue
        for method in route.methods():
            data = {"csrf_token": csrf_token(client)} if method == "POST" else None
            for url in route.urls(values):
                status, body, headers = ask(client, method, url, data=data)
                if route.is_api:
                    ok = status == 401 and body.lstrip().startswith("{")
                else:
                    ok = status == 302 and headers.get("Location", "").startswith("/login")
                if not ok:
                    failures.append(f"{method} {url}: {status} {body[:120]!r}")
    assert failures == [], "routes open to anyone:\n" + _report(failures)


def test_the_public_routes_are_only_the_ones_meant(app: Flask) -> None:
    """A new route is behind a login unless it is added to PUBLIC here, on purpose."""
    endpoints = {route.endpoint for route in routes(app)}
    assert endpoints >= PUBLIC


def test_the_api_takes_no_posts_because_it_is_exempt_from_csrf(app: Flask) -> None:
    # /api/ accepts a session cookie as well as a token and is CSRF-exempt: a
    # state-changing method there would be forgeable from another site.
    writable = [
        f"{route.rule.rule} {route.methods()}"
        for route in routes(app)
        if route.is_api and set(route.methods()) - {"GET"}
    ]
    assert writable == []


@pytest.fixture
def by_role(
    client: FlaskClient, admin: FlaskClient, owner: FlaskClient
) -> Callable[[Route], FlaskClient]:
    """The client a route's form is meant for: admin pages by the admin, billing
    by acme's customer, the rest (login, logout) by the admin."""

    def pick(route: Route) -> FlaskClient:
        if route.endpoint.startswith("billing."):
            return owner
        if route.endpoint == "auth.login":
            return client
        return admin

    return pick


def test_every_form_post_without_the_csrf_token_is_a_400_and_records_nothing(
    app: Flask, world: World, ledger: Ledger, by_role: Callable[[Route], FlaskClient]
) -> None:
    values = fillers(world, OWNER)
    posts = [
        route
        for route in routes(app)
        if "POST" in route.methods() and not route.endpoint.startswith(CSRF_EXEMPT_PREFIXES)
    ]
    assert {"auth.login", "auth.logout"} <= {route.endpoint for route in posts}
    failures = []
    for route in posts:
        client = by_role(route)
        for url in route.urls(values):
            before = event_count(ledger)
            status, body, _ = ask(client, "POST", url, data=SENT_WITHOUT_TOKEN)
            if status != 400 or CSRF_REFUSAL not in body:
                failures.append(f"POST {url}: {status} {body[:120]!r}")
            if event_count(ledger) != before:
                failures.append(f"POST {url}: recorded {event_count(ledger) - before} event(s)")
    assert failures == [], "forms that took a forged post:\n" + _report(failures)
