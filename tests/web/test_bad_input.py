"""The API's bad-input suite: every operation of /api/openapi.json fed values
generated from its own parameter list (hypothesis): a malformed value answers a
4xx JSON `{"error": ...}` naming the parameter, never a 500, and nothing is
recorded. Because the strategies come from the document, a parameter or route
added later is fed bad values too."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from ledger.app import Ledger
from web.validation import PRINTABLE

from .conftest import ACME_EMAIL, ADMIN_EMAIL, World

# Fixtures (the world) are built once per test and only read by the examples.
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Real things to aim path parameters at, so query parameters get validated too.
REAL = {"number": ["ACME-0001", "in_globex_2"], "entity_id": ["acme", "globex"]}
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
CONTROL = st.sampled_from(["\x00", "\x01", "\n", "\t", "\x1f", "\x7f"])
BAD_DATES = st.one_of(
    st.sampled_from(["2026-13-01", "2026-02-30", "yesterday", "2026/01/01", "01-01-2026", "0"]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Nd"]), max_size=12),
)
BAD_INSTANTS = st.one_of(
    BAD_DATES,
    st.sampled_from(["2026-01-01", "2026-01-01T10:00:00", "2026-01-01T25:00:00Z"]),
)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Parameter:
    name: str
    where: str  # "path" or "query"
    required: bool
    schema: dict[str, Any]

    def bad(self) -> st.SearchStrategy[str]:
        """Values this parameter must refuse with a 400."""
        s = self.schema
        options: list[st.SearchStrategy[str]] = []
        if "enum" in s:
            options.append(ANY_TEXT.filter(lambda v: v not in s["enum"]))
        if s.get("type") == "integer":
            options.append(ANY_TEXT.filter(lambda v: not _is_int(v)))
            low, high = s.get("minimum"), s.get("maximum")
            if low is not None:
                options.append(st.integers(max_value=low - 1).map(str))
            if high is not None:
                options.append(st.integers(min_value=high + 1).map(str))
        if s.get("format") == "date":
            options.append(BAD_DATES)
        if s.get("format") == "date-time":
            options.append(BAD_INSTANTS)
        if s.get("type") == "string" and "format" not in s and "enum" not in s:
            # Control characters are refused by every text parameter.
            options.append(st.tuples(ANY_TEXT, CONTROL, ANY_TEXT).map("".join))
            if "maxLength" in s:
                options.append(st.just("x" * (s["maxLength"] + 1)))
        if not options:
            return st.nothing()
        # A blank value means "not given" (as on the admin list's form).
        return st.one_of(options).filter(lambda v: bool(v.strip()))

    def good(self) -> st.SearchStrategy[str]:
        """Plausible values (which may still find nothing)."""
        s = self.schema
        if self.where == "path":
            return st.one_of(st.sampled_from(REAL[self.name]), ANY_TEXT.filter(bool))
        if "enum" in s:
            return st.sampled_from(s["enum"])
        if s.get("type") == "integer":
            return st.integers(s.get("minimum", 0), s.get("maximum", 10**6)).map(str)
        if s.get("format") == "date":
            return st.dates().map(lambda d: d.isoformat())
        if s.get("format") == "date-time":
            return st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
        return st.text(
            st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]),
            min_size=s.get("minLength", 0),
            max_size=s.get("maxLength", 40),
        )


@dataclass(frozen=True)
class Operation:
    path: str
    parameters: tuple[Parameter, ...]

    def url(self, values: dict[str, str]) -> str:
        path = re.sub(r"\{([^}]+)\}", lambda m: quote(values[m.group(1)], safe=""), self.path)
        query = {
            p.name: values[p.name]
            for p in self.parameters
            if p.where == "query" and p.name in values
        }
        return f"{path}?{urlencode(query)}" if query else path


def operations(document: dict[str, Any]) -> list[Operation]:
    found = []
    for path, methods in sorted(document["paths"].items()):
        for method, op in methods.items():
            assert method == "get", f"{path}: {method} (the suite feeds GETs; extend it)"
            params = tuple(
                Parameter(p["name"], p["in"], bool(p.get("required")), p.get("schema", {}))
                for p in op.get("parameters", [])
            )
            found.append(Operation(path, params))
    return found


@st.composite
def requests(draw: st.DrawFn, ops: list[Operation]) -> tuple[Operation, dict[str, str], set[str]]:
    """An operation, its parameter values, and the names given a malformed value."""
    op = draw(st.sampled_from(ops))
    values: dict[str, str] = {}
    spoiled: set[str] = set()
    for p in op.parameters:
        bad = p.bad()
        choice = draw(st.sampled_from(["good", "bad", "omit"]))
        if choice == "omit" and not p.required:
            continue
        if choice == "bad" and not bad.is_empty:
            values[p.name] = draw(bad)
            spoiled.add(p.name)
        else:
            values[p.name] = draw(p.good())
    return op, values, spoiled


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.get_json()
    return found


def _token(world: World, email: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.tokens[email]}"}


@pytest.mark.parametrize("email", [ADMIN_EMAIL, ACME_EMAIL])
def test_every_api_operation_refuses_malformed_values_with_a_json_400(
    app: Flask, world: World, ledger: Ledger, document: dict[str, Any], email: str
) -> None:
    ops = operations(document)
    assert {op.path for op in ops} >= {"/api/invoices", "/api/entities/{entity_id}/calls"}
    headers = _token(world, email)
    before = ledger.recorder.max_notification_id()
    client = app.test_client()

    @EXAMPLES
    @given(requests(ops))
    def feed(request: tuple[Operation, dict[str, str], set[str]]) -> None:
        op, values, spoiled = request
        response = client.get(op.url(values), headers=headers)
        status = response.status_code
        if status == 308:
            # Werkzeug's routing merges a path's double slashes ('/' quoted in an
            # id decodes to one) by redirecting to the merged path: no answer yet.
            assert urlsplit(response.headers["Location"]).path.startswith("/api/")
            return
        assert response.is_json, (status, response.get_data()[:200])
        body = response.get_json()
        assert 200 <= status < 500, (status, body)
        if status >= 400:
            assert isinstance(body["error"], str), body
            assert body["error"], body
        missing = {p.name for p in op.parameters if p.required and p.name not in values}
        path_params = {p.name for p in op.parameters if p.where == "path"}
        if (spoiled or missing) - path_params:
            # A real thing's bad query: 400 naming a parameter. Aimed at nothing
            # (or someone else's), the 404 may come first.
            assert status in (400, 404), (status, body, values)
            if status == 400:
                named = body["error"].split(":")[0]
                assert named in values or named in missing, (body, values)
        elif spoiled:
            assert status in (400, 404), (status, body, values)
        assert ledger.recorder.max_notification_id() == before

    feed()


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_writing_to_any_api_route_is_a_json_405_that_records_nothing(
    admin: FlaskClient, ledger: Ledger, document: dict[str, Any], method: str
) -> None:
    before = ledger.recorder.max_notification_id()
    for op in operations(document):
        values = {p.name: REAL.get(p.name, ["x"])[0] for p in op.parameters}
        response = admin.open(op.url(values), method=method, json={"status": "void"})
        assert response.status_code == 405, op.path
        assert "error" in response.get_json()
    assert ledger.recorder.max_notification_id() == before


@EXAMPLES
@given(token=ANY_TEXT.filter(lambda t: not {"\r", "\n"} & set(t)))  # HTTP carries neither
def test_a_malformed_bearer_token_is_a_json_401(client: FlaskClient, token: str) -> None:
    response = client.get("/api/invoices", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.get_json()["error"]


def test_a_bad_query_to_a_real_invoice_names_the_parameter(
    admin: FlaskClient, world: World
) -> None:
    response = admin.get("/api/invoices/ACME-0001/explanation?as_of=2026-02-01T10:00:00")
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("as_of:")


# The portal's pages -----------------------------------------------------------------

# The query parameters the pages take (the admin list's, the calls page's, ...);
# a page ignores the ones it does not take.
PAGE_PARAMS = ("q", "entity", "status", "from", "to", "sort", "after", "as_of", "limit", "page")
GARBAGE = st.one_of(
    ANY_TEXT,
    BAD_DATES,
    st.integers().map(str),
    st.just("x" * 5000),
    # Well-formed, at the calendar's edges: an answer or a 400, never an overflow.
    st.sampled_from(["0001-01-01", "9999-12-31"]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)
PAGE_PATHS = {
    "number": ["ACME-0001", "in_acme_1"],
    "ref": ["ACME-0001", "in_acme_1"],
    "entity_id": ["acme"],
    "action": ["credit", "void"],
}


def page_routes(app: Flask) -> list[tuple[str, str]]:
    """(rule, blueprint) of every GET page behind a login."""
    return sorted(
        (rule.rule, rule.endpoint.split(".")[0])
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] in ("admin", "billing") and "GET" in (rule.methods or set())
    )


def test_every_page_fed_garbage_in_its_query_answers_below_500(
    app: Flask, world: World, ledger: Ledger, admin: FlaskClient, acme: FlaskClient
) -> None:
    routes = page_routes(app)
    assert routes
    before = ledger.recorder.max_notification_id()

    @EXAMPLES
    @given(
        route=st.sampled_from(routes),
        params=st.dictionaries(st.sampled_from(PAGE_PARAMS), GARBAGE, min_size=1),
        data=st.data(),
    )
    def feed(route: tuple[str, str], params: dict[str, str], data: st.DataObject) -> None:
        rule, blueprint = route
        path = re.sub(
            r"<(?:[^:<>]+:)?([^<>]+)>",
            lambda m: quote(data.draw(st.sampled_from(PAGE_PATHS[m.group(1)])), safe=""),
            rule,
        )
        client = acme if blueprint == "billing" else admin
        response = client.get(f"{path}?{urlencode(params)}")
        body = response.get_data()
        assert response.status_code < 500, (path, params, body[:300])
        if response.status_code == 400:
            assert b"<html" in body.lower(), body[:300]
        assert ledger.recorder.max_notification_id() == before

    feed()


@pytest.mark.parametrize("text", ["abc\n", "a\x00b", "\tx", "x\x7f"])
def test_printable_refuses_any_control_character_even_a_final_newline(text: str) -> None:
    # The pages' PRINTABLE was `^...$`, and `$` matches before a final newline.
    with pytest.raises(ValidationError):
        PRINTABLE(text)
    assert PRINTABLE("Acme Corp \u00e9\u6f22") == "Acme Corp \u00e9\u6f22"


@pytest.mark.parametrize("start", ["9999-12-01", "9999-12-15"])
def test_admin_calls_from_the_calendars_last_month_without_an_end_is_a_400(
    admin: FlaskClient, start: str
) -> None:
    # The default end (the next month, or 31 days on) was computed past 9999-12-31:
    # a ValueError or OverflowError, a 500. Found by the page fuzz above.
    response = admin.get(f"/admin/calls?entity=acme&from={start}")
    assert response.status_code == 400
    assert "to:" in response.get_data(as_text=True)
    assert admin.get(f"/admin/calls?entity=acme&from={start}&to=9999-12-31").status_code == 200
