"""The JSON API: invoices (the admin list's filters, keyset pages), one invoice,
its explanation, entities and calls, for an admin and for a customer (bearer token
or session), and its OpenAPI document generated from the views' schemas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient

from billtrail.explain_schema import ExplanationSchema
from ledger.app import Ledger
from ledger.sources import Source
from projections.runner import Runner
from web.api.spec import undocumented

from .conftest import ACME_EMAIL, ADMIN_EMAIL, World, invoice_snapshot

Get = Callable[..., tuple[int, Any]]


def _getter(client: FlaskClient, token: str | None) -> Get:
    def get(path: str, **params: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"{path}?{urlencode(params)}" if params else path
        response = client.get(url, headers=headers)
        assert response.is_json, response.get_data(as_text=True)[:300]
        return response.status_code, response.get_json()

    return get


@pytest.fixture
def as_admin(client: FlaskClient, world: World) -> Get:
    return _getter(client, world.tokens[ADMIN_EMAIL])


@pytest.fixture
def as_acme(client: FlaskClient, world: World) -> Get:
    return _getter(client, world.tokens[ACME_EMAIL])


def numbers(body: dict[str, Any]) -> list[str | None]:
    return [row["number"] for row in body["invoices"]]


def walk(get: Get, path: str, key: str, **params: Any) -> list[Any]:
    """Every row of a paged list, following next_cursor."""
    rows: list[Any] = []
    after: str | None = None
    for _ in range(100):
        status, body = get(path, **params, **({"after": after} if after else {}))
        assert status == 200, body
        rows += body[key]
        after = body["next_cursor"]
        if after is None:
            return rows
    raise AssertionError("the pages never ended")


# Invoices ---------------------------------------------------------------------------


def test_an_admin_lists_every_invoice_newest_first(as_admin: Get, world: World) -> None:
    status, body = as_admin("/api/invoices")
    assert status == 200
    listed = [n for n in numbers(body) if n]
    assert sorted(listed) == sorted(world.invoices)
    assert None in numbers(body)  # initech's draft: admins see drafts
    days = [row["issue_date"] for row in body["invoices"] if row["issue_date"]]
    assert days == sorted(days, reverse=True)
    assert body["next_cursor"] is None


def test_the_list_filters_combine(as_admin: Get, world: World) -> None:
    assert numbers(as_admin("/api/invoices", status="open")[1]) == ["GLOBEX-0003", "ACME-0003"]
    assert numbers(as_admin("/api/invoices", entity="acme", status="past_due")[1]) == ["ACME-0002"]
    assert set(numbers(as_admin("/api/invoices", q="globex corp")[1])) == set(world.of("globex"))
    assert numbers(as_admin("/api/invoices", q="ACME-0001")[1]) == ["ACME-0001"]
    dated = as_admin("/api/invoices", entity="acme", **{"from": "2026-03-01", "to": "2026-04-01"})
    assert numbers(dated[1]) == ["ACME-0003", "ACME-0002"]


def test_an_admin_list_url_with_its_empty_fields_means_the_same_here(as_admin: Get) -> None:
    # The admin list's form sends every field; empty ones mean "no filter".
    blank = {"q": "", "entity": " ", "status": "", "from": "", "to": "", "as_of": ""}
    status, body = as_admin("/api/invoices", **blank, sort="date_desc")
    assert status == 200
    assert body == as_admin("/api/invoices")[1]
    assert as_admin("/api/invoices", status="", entity="acme")[1]["invoices"]


def test_the_list_sorts_by_total_either_way(as_admin: Get) -> None:
    up = as_admin("/api/invoices", sort="total_asc")[1]["invoices"]
    totals = [float(row["total"]) for row in up]
    assert totals == sorted(totals)
    down = as_admin("/api/invoices", sort="total_desc")[1]["invoices"]
    assert [row["stripe_id"] for row in down] == [row["stripe_id"] for row in reversed(up)]


@pytest.mark.parametrize("sort", ["date_desc", "date_asc", "total_desc", "total_asc"])
def test_keyset_pages_cover_the_list_once(as_admin: Get, sort: str) -> None:
    whole = as_admin("/api/invoices", sort=sort, limit=1000)[1]["invoices"]
    paged = walk(as_admin, "/api/invoices", "invoices", sort=sort, limit=3)
    assert paged == whole
    assert len(whole) == 8


def test_a_cursor_from_another_sort_or_forged_is_a_400(as_admin: Get) -> None:
    cursor = as_admin("/api/invoices", limit=2)[1]["next_cursor"]
    status, body = as_admin("/api/invoices", limit=2, sort="total_asc", after=cursor)
    assert status == 400
    assert body["error"].startswith("after:")
    assert as_admin("/api/invoices", after="not-a-cursor")[0] == 400


def test_the_list_as_of_a_day_shows_the_statuses_then(as_admin: Get) -> None:
    body = as_admin("/api/invoices", as_of="2026-02-03")[1]
    then = {row["number"]: row["status"] for row in body["invoices"]}
    # ACME-0001 was issued on Feb 1 and paid on Feb 5; GLOBEX-0001 voided on Feb 3.
    assert then["ACME-0001"] == "open"
    assert then["GLOBEX-0001"] == "void"
    assert "ACME-0002" not in then  # issued in March


def test_a_customer_lists_only_its_own_invoices(as_acme: Get, world: World) -> None:
    status, body = as_acme("/api/invoices")
    assert status == 200
    assert sorted(map(str, numbers(body))) == sorted(world.of("acme"))
    assert {row["entity_id"] for row in body["invoices"]} == {"acme"}
    mine = as_acme("/api/invoices", entity="acme")[1]
    assert sorted(map(str, numbers(mine))) == sorted(world.of("acme"))


def test_a_customer_never_sees_a_draft(as_acme: Get, as_admin: Get, ledger: Ledger) -> None:
    ledger.observe_invoice(invoice_snapshot("acme", 9, 5, "draft", 10), Source("sync_run", "d9"))
    Runner(ledger).catch_up()
    assert as_admin("/api/invoices/in_acme_9")[0] == 200
    assert as_acme("/api/invoices/in_acme_9")[0] == 404
    assert as_acme("/api/invoices/in_acme_9/explanation")[0] == 404
    for params in ({}, {"status": "draft"}):
        rows = as_acme("/api/invoices", **params)[1]["invoices"]
        assert "in_acme_9" not in [row["stripe_id"] for row in rows]


def test_a_customer_filtering_on_another_entity_gets_404(as_acme: Get) -> None:
    for other in ("globex", "no-such-entity"):
        status, body = as_acme("/api/invoices", entity=other)
        assert status == 404
        assert "globex" not in str(body) or other == "globex"


def test_a_customer_searching_another_entitys_name_finds_nothing(as_acme: Get) -> None:
    assert as_acme("/api/invoices", q="Globex")[1]["invoices"] == []
    assert as_acme("/api/invoices", q="GLOBEX-0001")[1]["invoices"] == []


def test_an_invoice_reads_with_its_lines_and_status_history(as_admin: Get, world: World) -> None:
    status, body = as_admin("/api/invoices/ACME-0001")
    assert status == 200
    assert body["invoice"]["number"] == "ACME-0001"
    assert body["invoice"]["status"] == "paid"
    assert [line["kind"] for line in body["lines"]] == ["usage", "fee", "tax"]
    assert [span["status"] for span in body["history"]] == ["draft", "open", "paid"]
    by_stripe_id = as_admin(f"/api/invoices/{world.stripe_ids['ACME-0001']}")
    assert by_stripe_id == (200, body)


def test_an_unknown_invoice_is_a_json_404(as_admin: Get) -> None:
    status, body = as_admin("/api/invoices/NOPE-0001")
    assert status == 404
    assert "NOPE-0001" in body["error"]


def test_a_customer_gets_404_for_another_entitys_invoice(as_acme: Get, world: World) -> None:
    assert as_acme("/api/invoices/ACME-0001")[0] == 200
    for number in world.of("globex"):
        for path in (f"/api/invoices/{number}", f"/api/invoices/{number}/explanation"):
            assert as_acme(path)[0] == 404, path
        assert as_acme(f"/api/invoices/{world.stripe_ids[number]}")[0] == 404


def test_the_explanation_is_the_explain_document(as_admin: Get) -> None:
    status, body = as_admin("/api/invoices/ACME-0001/explanation")
    assert status == 200
    assert ExplanationSchema().validate(body) == {}
    assert body["invoice"]["number"] == "ACME-0001"
    assert [note["number"] for note in body["credit_notes"]] == ["CN-acme-1"]
    assert [line["kind"] for line in body["lines"]] == ["usage", "fee", "tax"]


def test_the_explanation_as_of_before_the_invoice_was_recorded_is_a_404(as_admin: Get) -> None:
    status, body = as_admin("/api/invoices/ACME-0001/explanation", as_of="2025-12-01T00:00:00Z")
    assert status == 404
    assert "first recorded" in body["error"]
    assert as_admin("/api/invoices/ACME-0001/explanation", as_of="2026-02-01")[0] == 400


# Entities and calls --------------------------------------------------------------


def test_an_admin_sees_every_entity_a_customer_its_own(as_admin: Get, as_acme: Get) -> None:
    admin_view = as_admin("/api/entities")[1]["entities"]
    assert [e["entity_id"] for e in admin_view] == ["acme", "globex", "initech"]
    assert [e["entity_id"] for e in as_acme("/api/entities")[1]["entities"]] == ["acme"]
    assert as_acme("/api/entities/acme") == (200, admin_view[0])
    assert as_acme("/api/entities/globex")[0] == 404
    assert as_admin("/api/entities/nope")[0] == 404


def test_calls_page_through_a_period_in_time_order(as_admin: Get) -> None:
    period = {"from": "2026-01-01", "to": "2026-02-01"}
    whole = as_admin("/api/entities/acme/calls", **period, limit=1000)[1]["calls"]
    assert len(whole) == 60
    starts = [c["started_at"] for c in whole]
    assert starts == sorted(starts)
    assert walk(as_admin, "/api/entities/acme/calls", "calls", **period, limit=7) == whole
    # Calls start 09:00 Jan 1 plus 7h each: two on Jan 1, three on Jan 2.
    early = as_admin("/api/entities/acme/calls", **{"from": "2026-01-01", "to": "2026-01-03"})
    assert [c["day"] for c in early[1]["calls"]] == ["2026-01-01"] * 2 + ["2026-01-02"] * 3


def test_a_calls_cursor_outside_the_period_is_a_400(as_admin: Get) -> None:
    january = {"from": "2026-01-01", "to": "2026-02-01"}
    cursor = as_admin("/api/entities/acme/calls", **january, limit=50)[1]["next_cursor"]
    assert cursor is not None
    later = {"from": "2026-01-01", "to": "2026-01-05"}
    status, body = as_admin("/api/entities/acme/calls", **later, after=cursor)
    assert status == 400
    assert body["error"].startswith("after:")


def test_a_customer_reads_its_calls_but_not_another_entitys(as_acme: Get) -> None:
    period = {"from": "2026-01-01", "to": "2026-02-01"}
    assert as_acme("/api/entities/acme/calls", **period)[0] == 200
    assert as_acme("/api/entities/globex/calls", **period)[0] == 404


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/invoices", {"status": "late"}, "status"),
        ("/api/invoices", {"from": "2026-13-01"}, "from"),
        ("/api/invoices", {"from": "2026-03-01", "to": "2026-02-01"}, "to"),
        ("/api/invoices", {"sort": "amount"}, "sort"),
        ("/api/invoices", {"limit": "0"}, "limit"),
        ("/api/invoices", {"limit": "ten"}, "limit"),
        ("/api/invoices", {"q": "a\x00b"}, "q"),
        ("/api/entities/acme/calls", {}, "from"),
        ("/api/entities/acme/calls", {"from": "2026-01-02", "to": "2026-01-02"}, "to"),
        ("/api/invoices/ACME-0001/explanation", {"as_of": "yesterday"}, "as_of"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(
    as_admin: Get, path: str, params: dict[str, str], field: str
) -> None:
    status, body = as_admin(path, **params)
    assert status == 400
    assert body["error"].startswith(f"{field}:"), body


# Logins -----------------------------------------------------------------------------


def test_a_logged_in_session_reaches_the_api_without_a_token(acme: FlaskClient) -> None:
    assert acme.get("/api/me").get_json() == {
        "email": ACME_EMAIL,
        "role": "customer",
        "entity_id": "acme",
    }


def test_a_wrong_token_is_a_401(client: FlaskClient, world: World) -> None:
    response = client.get("/api/invoices", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.is_json


# The OpenAPI document --------------------------------------------------------------


def test_the_openapi_document_is_public_and_covers_every_api_route(
    app: Flask, client: FlaskClient
) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    assert undocumented(app) == []
    api_rules = {
        rule.rule.replace("<", "{").replace(">", "}")
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("api.")
    }
    assert set(document["paths"]) == api_rules


def test_the_document_lists_each_views_parameters_and_answers(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").get_json()
    listing = document["paths"]["/api/invoices"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    want = {"q", "entity", "status", "from", "to", "sort", "after", "as_of", "limit"}
    assert names == want
    status = next(p for p in listing["parameters"] if p["name"] == "status")
    assert "past_due" in status["schema"]["enum"]
    assert set(listing["responses"]) == {"200", "400", "401", "404"}
    schemas = document["components"]["schemas"]
    ok = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/InvoicePageOut"}
    assert schemas["InvoiceRowOut"]["properties"]["total"] == {
        "type": "string",
        "format": "decimal",
    }
    calls = document["paths"]["/api/entities/{entity_id}/calls"]["get"]
    required = {p["name"] for p in calls["parameters"] if p.get("required")}
    assert required == {"entity_id", "from", "to"}
    explanation = document["paths"]["/api/invoices/{number}/explanation"]["get"]
    assert "Explanation" in str(explanation["responses"]["200"])
    assert document["paths"]["/api/openapi.json"]["get"]["security"] == []
    assert listing["security"] == [{"bearer": []}]


def test_every_reference_in_the_document_resolves(client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").get_json()
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)
    assert refs
    for ref in refs:
        assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"]
