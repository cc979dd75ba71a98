"""The admin's Invoices pages: the list (filters, search, sort, keyset pages, totals
by status, as of a past day), its streamed CSV, and one invoice's detail with the
"why this charge" explanation; bad input is a 400 page, never a 500."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import projections.invoices
from ledger.app import Ledger
from ledger.invoices.domain import Totals
from ledger.sources import Source
from ledger.usage.application import CallRow
from ledger.values import Line
from projections.runner import Runner
from web.admin import invoices as invoices_view

from .conftest import INVOICES, START, TickingClock, World, invoice_snapshot

ENTITY_NAMES = {"acme": "Acme Corp", "globex": "Globex Corporation", "initech": "Initech"}


def expected() -> dict[str, dict[str, Any]]:
    """Every invoice of the world, by number (drafts by Stripe id), built from the
    same snapshots the world recorded, not read back through the app."""
    found: dict[str, dict[str, Any]] = {}
    counters: Counter[str] = Counter()
    for entity_id, month, status in INVOICES:
        counters[entity_id] += 1
        n = counters[entity_id]
        snap = invoice_snapshot(entity_id, n, month, status, 20 * n + 5)
        found[snap.number or snap.stripe_id] = {
            "entity": entity_id,
            "status": status,
            "total": snap.totals.total,
            "issue_date": snap.issue_date,
            "stripe_id": snap.stripe_id,
        }
    return found


EXPECTED = expected()


def listed(page: str) -> list[str]:
    """The invoice references in the list's rows, in order."""
    table = page.split('<table class="invoice-list">', 1)[1].split("</table>", 1)[0]
    return [html.unescape(m) for m in re.findall(r'<a href="/admin/invoices/([^"?]+)', table)]


def next_link(page: str) -> str | None:
    match = re.search(r'<a href="([^"]+)" rel="next">', page)
    return html.unescape(match.group(1)) if match else None


def get(client: FlaskClient, path: str, **params: str) -> str:
    response = client.get(path, query_string=params or None)
    assert response.status_code == 200, response.get_data(as_text=True)[-800:]
    return response.get_data(as_text=True)


def without_tokens(page: str) -> str:
    return re.sub(r'(name="csrf_token" value|name="csrf-token" content)="[^"]*"', r"\1", page)


def alert(page: str) -> str:
    match = re.search(r'<p role="alert">(.*?)</p>', page, re.S)
    assert match, page[-800:]
    return html.unescape(match.group(1))


# The list ---------------------------------------------------------------------------


def test_the_list_shows_every_invoice_with_number_entity_issue_date_total_and_status(
    admin: FlaskClient, world: World
) -> None:
    page = get(admin, "/admin/invoices")
    assert sorted(listed(page)) == sorted(EXPECTED)
    for ref, facts in EXPECTED.items():
        row = page.split(f'<a href="/admin/invoices/{ref}">', 1)[1].split("</tr>", 1)[0]
        assert ENTITY_NAMES[facts["entity"]] in row
        assert f"${facts['total']:,.2f}" in row
        label = facts["status"].replace("_", " ").title()
        assert f'class="status status-{facts["status"].replace("_", "-")}">{label}<' in row
        if facts["issue_date"]:
            assert facts["issue_date"].isoformat() in row


def test_every_form_control_of_the_list_has_a_label(admin: FlaskClient) -> None:
    page = get(admin, "/admin/invoices")
    form = page.split('role="search"', 1)[1].split("</form>", 1)[0]
    ids = re.findall(r'<(?:input|select)[^>]* id="([^"]+)"', form)
    controls = re.findall(r"<(?:input|select)\b", form)
    assert len(ids) == len(controls) == 7
    for control_id in ids:
        assert f'<label for="{control_id}">' in form


def test_with_many_entities_the_entity_filter_takes_an_id(
    admin: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    offered = get(admin, "/admin/invoices", entity="globex")
    assert '<option value="globex" selected>Globex Corporation (globex)</option>' in offered
    monkeypatch.setattr(projections.invoices, "ENTITY_CHOICES", 2)
    page = get(admin, "/admin/invoices", entity="globex")
    assert '<select id="f-entity"' not in page
    assert '<input id="f-entity" name="entity" value="globex"' in page
    assert sorted(listed(page)) == ["GLOBEX-0001", "GLOBEX-0002", "GLOBEX-0003"]


@pytest.mark.parametrize("status", ["open", "paid", "past_due", "uncollectible", "void", "draft"])
def test_a_status_filter_lists_only_invoices_in_that_status(
    admin: FlaskClient, status: str
) -> None:
    refs = listed(get(admin, "/admin/invoices", status=status))
    assert sorted(refs) == sorted(r for r, f in EXPECTED.items() if f["status"] == status)


def test_an_entity_filter_lists_only_that_entitys_invoices(admin: FlaskClient) -> None:
    for entity_id in ENTITY_NAMES:
        refs = listed(get(admin, "/admin/invoices", entity=entity_id))
        assert refs
        assert sorted(refs) == sorted(r for r, f in EXPECTED.items() if f["entity"] == entity_id)
    assert listed(get(admin, "/admin/invoices", entity="nobody")) == []


def test_an_issue_date_range_includes_both_ends(admin: FlaskClient) -> None:
    refs = listed(get(admin, "/admin/invoices", **{"from": "2026-02-01", "to": "2026-03-01"}))
    assert sorted(refs) == sorted(
        r
        for r, f in EXPECTED.items()
        if f["issue_date"] and date(2026, 2, 1) <= f["issue_date"] <= date(2026, 3, 1)
    )
    assert set(listed(get(admin, "/admin/invoices", **{"from": "2026-04-01"}))) == {
        "ACME-0003",
        "GLOBEX-0003",
    }


def test_filters_combine(admin: FlaskClient) -> None:
    refs = listed(
        get(admin, "/admin/invoices", entity="acme", status="open", **{"from": "2026-02-01"})
    )
    assert refs == ["ACME-0003"]
    refs = listed(get(admin, "/admin/invoices", q="globex", to="2026-03-01", status="void"))
    assert refs == ["GLOBEX-0001"]
    assert listed(get(admin, "/admin/invoices", entity="acme", status="void")) == []


@pytest.mark.parametrize(
    ("q", "refs"),
    [
        ("ACME-0002", {"ACME-0002"}),
        ("0003", {"ACME-0003", "GLOBEX-0003"}),
        ("glob", {"GLOBEX-0001", "GLOBEX-0002", "GLOBEX-0003"}),  # part of a name
        ("corporation", {"GLOBEX-0001", "GLOBEX-0002", "GLOBEX-0003"}),  # any case
        ("acme corp", {"ACME-0001", "ACME-0002", "ACME-0003"}),
        ("no such thing", set()),
        ("100%_", set()),  # LIKE wildcards are text, not patterns
    ],
)
def test_search_finds_part_of_a_number_or_of_an_entity_name(
    admin: FlaskClient, q: str, refs: set[str]
) -> None:
    page = get(admin, "/admin/invoices", q=q)
    assert set(listed(page)) == refs
    assert f'name="q" value="{html.escape(q)}"' in page


@pytest.mark.parametrize(
    ("sort", "key", "reverse"),
    [
        ("date_desc", "issue_date", True),
        ("date_asc", "issue_date", False),
        ("total_desc", "total", True),
        ("total_asc", "total", False),
    ],
)
def test_sort_orders_by_issue_date_or_total_either_way(
    admin: FlaskClient, sort: str, key: str, reverse: bool
) -> None:
    refs = listed(get(admin, "/admin/invoices", sort=sort, status="open"))
    refs += listed(get(admin, "/admin/invoices", sort=sort, status="paid"))
    for status in ("open", "paid"):
        values = [EXPECTED[r][key] for r in refs if EXPECTED[r]["status"] == status]
        assert values == sorted(values, reverse=reverse)
    totals = [EXPECTED[r]["total"] for r in listed(get(admin, "/admin/invoices", sort=sort))]
    if key == "total":
        assert totals == sorted(totals, reverse=reverse)


def prev_link(page: str) -> str | None:
    match = re.search(r'<a href="([^"]+)" rel="prev">', page)
    return html.unescape(match.group(1)) if match else None


@pytest.mark.parametrize("sort", ["date_desc", "date_asc", "total_desc", "total_asc"])
def test_paging_through_every_page_and_back_lists_each_invoice_exactly_once(
    app: Flask, admin: FlaskClient, sort: str
) -> None:
    app.config["BILLTRAIL_ADMIN_PAGE_SIZE"] = 3
    forward: list[list[str]] = []
    url: str | None = f"/admin/invoices?sort={sort}"
    while url is not None:
        page = get(admin, url)
        forward.append(listed(page))
        url = next_link(page)
        if url:
            assert "sort=" + sort in url
            assert "after=" in url
    assert [len(rows) for rows in forward] == [3, 3, 2]
    seen = [ref for rows in forward for ref in rows]
    assert len(seen) == len(set(seen)) == len(EXPECTED)
    backward = [listed(page)]
    url = prev_link(page)
    while url is not None:
        assert "before=" in url
        page = get(admin, url)
        backward.append(listed(page))
        url = prev_link(page)
    assert backward == forward[::-1]
    assert next_link(page) == next_link(get(admin, f"/admin/invoices?sort={sort}"))
    app.config["BILLTRAIL_ADMIN_PAGE_SIZE"] = 50
    unpaged = listed(get(admin, "/admin/invoices", sort=sort))
    assert seen == unpaged


def test_pages_keep_their_filters(app: Flask, admin: FlaskClient) -> None:
    app.config["BILLTRAIL_ADMIN_PAGE_SIZE"] = 1
    first = get(admin, "/admin/invoices", entity="acme", q="acme")
    link = next_link(first)
    assert link
    assert "entity=acme" in link
    assert "q=acme" in link
    second = get(admin, link)
    assert listed(second)[0].startswith("ACME-")
    assert listed(second) != listed(first)
    assert 'rel="first"' in second
    assert 'rel="first"' not in first


def totals(page: str) -> dict[str, tuple[int, str]]:
    found = re.findall(
        r'<li data-status="([a-z_]+)">.*?<span class="count">(\d+) invoices?</span> '
        r'<strong class="amount">([^<]+)</strong>',
        page,
    )
    return {status: (int(count), amount) for status, count, amount in found}


def sums(refs: list[str]) -> dict[str, tuple[int, str]]:
    by: dict[str, list[Decimal]] = {}
    for ref in refs:
        by.setdefault(EXPECTED[ref]["status"], []).append(EXPECTED[ref]["total"])
    return {s: (len(v), f"${sum(v, Decimal(0)):,.2f}") for s, v in by.items()}


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"entity": "acme"},
        {"q": "glob"},
        {"from": "2026-03-01"},
        {"status": "paid"},
        {"entity": "acme", "to": "2026-03-01", "sort": "total_asc"},
    ],
)
def test_totals_by_status_count_and_add_up_the_whole_filtered_set(
    app: Flask, admin: FlaskClient, params: dict[str, str]
) -> None:
    app.config["BILLTRAIL_ADMIN_PAGE_SIZE"] = 2  # the totals are of every page
    page = get(admin, "/admin/invoices", **params)
    link = re.search(r'<a id="totals-link" href="([^"]+)"', page)
    assert link
    # The same page either way (bar the CSRF tokens, signed with the current second).
    linked = get(admin, html.unescape(link.group(1)))
    assert without_tokens(linked) == without_tokens(get(admin, "/admin/invoice-totals", **params))
    app.config["BILLTRAIL_ADMIN_PAGE_SIZE"] = 50
    everything = listed(get(admin, "/admin/invoices", **params))
    assert totals(get(admin, "/admin/invoice-totals", **params)) == sums(everything)


def test_the_list_loads_its_totals_after_it_shows(admin: FlaskClient) -> None:
    page = get(admin, "/admin/invoices", entity="acme")
    assert 'data-status="' not in page  # not added up while the list waits
    assert '<script src="/static/invoices.js" defer></script>' in page
    script = admin.get("/static/invoices.js")
    assert "totals-link" in script.get_data(as_text=True)
    script.close()
    standalone = get(admin, "/admin/invoice-totals", entity="acme")
    assert 'id="invoice-totals"' in standalone
    assert "(filtered)" in standalone
    assert "(filtered)" not in get(admin, "/admin/invoice-totals", sort="total_asc")


def test_as_of_lists_the_invoices_issued_by_then_with_the_status_they_had_that_day(
    admin: FlaskClient,
) -> None:
    page = get(admin, "/admin/invoices", as_of="2026-02-04")
    statuses = dict(
        re.findall(r'/admin/invoices/([^"?]+)\?as_of=2026-02-04">.*?status-([a-z-]+)"', page, re.S)
    )
    # Paid on Feb 5 (so open on the 4th), voided Feb 3; the March invoices did not exist.
    assert statuses == {
        "ACME-0001": "open",
        "INITECH-0001": "open",
        "GLOBEX-0001": "void",
        "in_initech_2": "draft",
    }
    assert "as of 2026-02-04" in page
    then = totals(get(admin, "/admin/invoice-totals", as_of="2026-02-04"))
    assert then == {"open": (2, "$108.73"), "void": (1, "$54.54"), "draft": (1, "$54.73")}
    combined = listed(get(admin, "/admin/invoices", as_of="2026-02-04", status="open"))
    assert sorted(combined) == ["ACME-0001", "INITECH-0001"]
    later = listed(get(admin, "/admin/invoices", as_of="2026-03-25", status="past_due"))
    assert later == ["ACME-0002"]
    assert listed(get(admin, "/admin/invoices", as_of="2025-12-31")) == []


# Bad input --------------------------------------------------------------------------


BAD_FILTERS = [
    ("status=bogus", "status"),
    ("status=Paid", "status"),
    ("from=2026-13-01", "from"),
    ("to=yesterday", "to"),
    ("from=2026-03-01&to=2026-02-01", "from: must not be after to"),
    ("sort=name", "sort"),
    ("as_of=2026-02-30", "as_of"),
    ("q=%00", "q"),
    ("q=" + "x" * 101, "q"),
]
BAD_PAGE_BEFORE = [  # the list's "previous page" (the CSV is all pages from `after` on)
    ("after=ZGF0ZXwyMDI2LTAxLTAxfDE&before=ZGF0ZXwyMDI2LTAxLTAxfDE", "not both"),
    ("before=nope", "cursor"),
]
BAD_CURSORS = [
    ("after=not-a-cursor", "cursor"),
    ("sort=total_asc&after=ZGF0ZXwyMDI2LTAxLTAxfDE", "cursor"),  # a date cursor
    ("after=dG90YWx8OTk5OTk5OTk5OTk5OTk5OTk5OTk5fDE&sort=total_desc", "cursor"),  # > 64 bits
]


@pytest.mark.parametrize(
    ("path", "query", "said"),
    [
        *(
            (path, query, said)
            for path in ("/admin/invoices", "/admin/invoices.csv")
            for query, said in BAD_FILTERS + BAD_CURSORS
        ),
        *(("/admin/invoices", query, said) for query, said in BAD_PAGE_BEFORE),
        *(("/admin/invoice-totals", query, said) for query, said in BAD_FILTERS),
    ],
)
def test_a_bad_parameter_is_a_400_page_saying_what_is_wrong(
    admin: FlaskClient, path: str, query: str, said: str
) -> None:
    response = admin.get(f"{path}?{query}")
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    message = alert(response.get_data(as_text=True))
    assert said in message
    assert "\n" not in message.strip()


_PARAM = st.sampled_from(
    ["q", "entity", "status", "from", "to", "sort", "after", "as_of", "limit", "x"]
)
_VALUE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["open", "past_due", "date_asc", "total_desc", "2026-02-01", "9999-12-31"]),
    st.dates().map(date.isoformat),
    st.binary(max_size=30).map(lambda b: base64.urlsafe_b64encode(b).decode()),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(params=st.lists(st.tuples(_PARAM, _VALUE), max_size=6), raw=st.text(max_size=30))
def test_no_query_string_makes_the_list_fail(
    admin: FlaskClient, params: list[tuple[str, str]], raw: str
) -> None:
    for query in (urlencode(params), quote(raw, safe="=&")):
        for path in ("/admin/invoices", "/admin/invoices.csv", "/admin/invoice-totals"):
            response = admin.get(f"{path}?{query}")
            assert response.status_code in (200, 400), (query, response.status_code)
            response.get_data()  # the whole CSV streams without an error too


# Roles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/admin/invoices",
        "/admin/invoices.csv",
        "/admin/invoice-totals",
        "/admin/invoices/ACME-0001",
    ],
)
def test_only_an_admin_reaches_the_invoice_pages(
    acme: FlaskClient, client: FlaskClient, path: str
) -> None:
    assert acme.get(path).status_code == 404
    response = client.get(path)
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


# CSV --------------------------------------------------------------------------------


def rows_of(response: Any) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def test_the_csv_export_is_the_filtered_list_with_a_header_and_exact_totals(
    admin: FlaskClient,
) -> None:
    response = admin.get("/admin/invoices.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    assert text.splitlines()[0] == ",".join(invoices_view.CSV_HEADER)
    rows = rows_of(response)
    assert [r["number"] or r["stripe_id"] for r in rows] == listed(get(admin, "/admin/invoices"))
    for row in rows:
        facts = EXPECTED[row["number"] or row["stripe_id"]]
        assert row["total"] == str(facts["total"])  # Decimal text, e.g. "54.32"
        assert row["status"] == facts["status"]
        assert row["entity_name"] == ENTITY_NAMES[facts["entity"]]
        assert row["issue_date"] == (facts["issue_date"].isoformat() if facts["issue_date"] else "")
    filtered = rows_of(admin.get("/admin/invoices.csv?entity=globex&sort=total_asc"))
    assert [r["number"] for r in filtered] == listed(
        get(admin, "/admin/invoices", entity="globex", sort="total_asc")
    )
    as_of = rows_of(admin.get("/admin/invoices.csv?as_of=2026-02-04&status=open"))
    assert sorted(r["number"] for r in as_of) == ["ACME-0001", "INITECH-0001"]
    assert {r["status"] for r in as_of} == {"open"}


def test_the_csv_is_streamed_a_page_of_the_read_model_at_a_time(
    admin: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(invoices_view, "CSV_PAGE", 3)
    reads: list[str | None] = []
    real = invoices_view.list_invoices

    def counting(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs.get("after"))
        return real(*args, **kwargs)

    monkeypatch.setattr(invoices_view, "list_invoices", counting)
    response = admin.get("/admin/invoices.csv")
    assert response.is_streamed
    assert reads == [None]  # only the first page is read before the body is sent
    rows = rows_of(response)
    assert len(reads) == 3
    assert reads[0] is None
    assert None not in reads[1:]
    assert len(rows) == len({r["stripe_id"] for r in rows}) == len(EXPECTED)


def test_a_csv_cell_a_spreadsheet_would_run_is_written_as_text(
    ledger: Ledger, admin: FlaskClient
) -> None:
    ledger.rename_entity("initech", "=HYPERLINK(1)", Source("cli", "t", actor="operator"))
    Runner(ledger).catch_up()
    rows = rows_of(admin.get("/admin/invoices.csv?entity=initech"))
    assert {r["entity_name"] for r in rows} == {"'=HYPERLINK(1)"}


# The detail -------------------------------------------------------------------------


def test_the_detail_shows_the_facts_lines_reconciliation_timeline_and_links(
    admin: FlaskClient, world: World
) -> None:
    page = get(admin, "/admin/invoices/ACME-0001")
    assert "<h1>Invoice ACME-0001" in page
    assert "status-paid" in page
    assert "Acme Corp" in page
    assert "2026-01-01 to 2026-02-01" in page
    for kind, description, amount in [
        ("Usage", "Calls handled", "$0.30"),
        ("Fixed fee", "Monthly platform fee", "$50.00"),
        ("Tax", "Sales tax 8%", "$4.02"),
    ]:
        assert re.search(
            rf'<tr class="line-\w+"><td>{kind}</td><td>{re.escape(description)}</td>.*?'
            rf"{re.escape(amount)}</td></tr>",
            page,
        ), kind
    # 60 calls were recorded for January; the usage line bills 25.
    assert '<dd id="calls-counted">60</dd>' in page
    assert '<dd id="quantity-billed">25</dd>' in page
    assert re.search(r'id="usage-difference" class="flag">\s*35 fewer billed than counted', page)
    timeline = page.split('class="status-timeline"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r"status-([a-z-]+)\"", timeline) == ["draft", "open", "paid"]
    assert "<td>2026-02-05</td>" in timeline
    assert "evt_acme_1_p" in timeline
    assert 'href="/admin/invoices/ACME-0001/receipt.pdf"' in page
    assert 'href="https://dashboard.stripe.com/test/invoices/in_acme_1"' in page


def test_an_invoice_whose_usage_matches_its_calls_shows_no_difference(
    ledger: Ledger, admin: FlaskClient
) -> None:
    # INITECH-0001 bills 25 calls for January and initech made none: record them.
    calls = [
        CallRow(i, f"call-initech-{i}", "initech", START + timedelta(hours=i), 60)
        for i in range(25)
    ]
    ledger.record_calls(calls, Source("import_file", "initech.csv"))
    Runner(ledger).catch_up()
    page = get(admin, "/admin/invoices/INITECH-0001")
    assert '<dd id="calls-counted">25</dd>' in page
    assert re.search(r'id="usage-difference" class="ok">\s*None', page)


def test_the_detail_renders_the_explanation_with_its_flags(admin: FlaskClient) -> None:
    page = get(admin, "/admin/invoices/ACME-0001")
    why = page.split('id="why-heading"', 1)[1]
    codes = re.findall(r'<code class="flag-code">([A-Z_]+)</code>', why)
    assert "USAGE_VS_CALLS_THEN" in codes
    flag = why.split("USAGE_VS_CALLS_THEN</code>", 1)[1].split("</li>", 1)[0]
    assert "bills 25 calls" in html.unescape(flag)
    assert "60 calls" in flag
    assert "line il_acme_1_u" in flag
    assert "CN-acme-1" in why
    assert "$53.32" in why
    assert "v1" in why
    assert "0.012 USD" in why
    assert "contract" in why
    assert "issued as ACME-0001" in why


def test_a_line_whose_amount_is_not_quantity_times_price_is_flagged(
    ledger: Ledger, admin: FlaskClient
) -> None:
    # Plant one: an adjustment line billing 3 x $2.00 as $7.00.
    snap = invoice_snapshot("initech", 3, 3, "open", 0)
    wrong = Line(
        "il_initech_3_a", "adjustment", "Support hours", Decimal(3), Decimal(2), Decimal(7)
    )
    lines = [*snap.lines, wrong]
    totals = Totals(snap.totals.subtotal + 7, snap.totals.tax, snap.totals.total + 7)
    ledger.observe_invoice(
        replace(snap, lines=lines, totals=totals), Source("stripe_event", "evt_p")
    )
    Runner(ledger).catch_up()
    page = get(admin, "/admin/invoices/INITECH-0003")
    assert '<tr class="line-adjustment"><td>Adjustment</td><td>Support hours</td>' in page
    why = page.split('id="why-heading"', 1)[1]
    flag = why.split("AMOUNT_ARITHMETIC</code>", 1)[1].split("</li>", 1)[0]
    assert "Support hours" in html.unescape(flag)
    assert "line il_initech_3_a" in flag
    assert re.search(r'<td class="num flag">\$6\.00 \(differs\)</td>', why)
    assert re.search(r'id="usage-difference" class="ok">', page)  # 0 calls, 0 billed


def test_the_detail_is_found_by_stripe_id_and_unknown_invoices_are_404(
    admin: FlaskClient,
) -> None:
    assert "<h1>Invoice ACME-0002" in get(admin, "/admin/invoices/in_acme_2")
    draft = get(admin, "/admin/invoices/in_initech_2")
    assert "<h1>Invoice in_initech_2" in draft
    assert "status-draft" in draft
    for ref in ("ACME-9999", "in_nobody", "acme-0001", "ACME-0001%00", "%01"):
        response = admin.get(f"/admin/invoices/{ref}")
        assert response.status_code == 404
        assert "No invoice" in alert(response.get_data(as_text=True))


def test_the_detail_as_of_explains_the_invoice_as_the_ledger_knew_it_then(
    ledger: Ledger, clock: TickingClock, admin: FlaskClient
) -> None:
    # Two months on, calls for January arrive late.
    clock.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    late = [CallRow(1, "call-acme-late-1", "acme", datetime(2026, 1, 20, tzinfo=UTC), 40)]
    ledger.record_calls(late, Source("import_file", "late.csv"))
    Runner(ledger).catch_up()

    def codes(page: str) -> list[str]:
        return re.findall(r'<code class="flag-code">([A-Z_]+)</code>', page)

    now = get(admin, "/admin/invoices/ACME-0001")
    assert "USAGE_VS_CALLS_NOW" in codes(now)
    assert '<dd id="calls-counted">61</dd>' in now
    for as_of in ("2026-01-01", "2026-02-28T23:00:00+00:00", "2026-03-01T12:00:00+05:00"):
        then = get(admin, "/admin/invoices/ACME-0001", as_of=as_of)
        assert "USAGE_VS_CALLS_NOW" not in codes(then), as_of
        assert "USAGE_VS_CALLS_THEN" in codes(then)
        assert f'value="{as_of}"' in then
    assert "2026-01-01T23:59:59.999999+00:00" in get(
        admin, "/admin/invoices/ACME-0001", as_of="2026-01-01"
    )


def test_the_detail_as_of_marks_the_statuses_recorded_after_it(
    ledger: Ledger, clock: TickingClock, admin: FlaskClient
) -> None:
    clock.now = datetime(2026, 5, 1, tzinfo=UTC)
    ledger.mark_past_due("in_acme_3", date(2026, 4, 20), Source("scheduler_run", "sweep-late"))
    Runner(ledger).catch_up()
    now = get(admin, "/admin/invoices/ACME-0003")
    assert 'class="later"' not in now
    assert "as-of-note" not in now
    then = get(admin, "/admin/invoices/ACME-0003", as_of="2026-04-25")
    later = re.findall(r'<tr class="later">\s*<td><span class="status status-([a-z-]+)"', then)
    assert later == ["past-due"]
    assert 'id="as-of-note"' in then
    # The explanation as of then still has it open; the page's badge is today's.
    why = then.split('id="why-heading"', 1)[1]
    assert 'Status then: <span class="status status-open">' in why
    assert 'Status then: <span class="status status-past-due">' in now


def test_the_list_as_of_links_to_the_detail_as_of_the_same_day(admin: FlaskClient) -> None:
    page = get(admin, "/admin/invoices", as_of="2026-02-04")
    assert 'href="/admin/invoices/ACME-0001?as_of=2026-02-04"' in page


@pytest.mark.parametrize(
    ("as_of", "status", "said"),
    [
        ("2025-12-31", 404, "first recorded"),
        ("yesterday", 400, "as_of"),
        ("2026-02-01T10:00:00", 400, "offset"),
        ("0001-01-01T00:00:00+14:00", 400, "as_of"),
    ],
)
def test_a_detail_as_of_before_the_invoice_or_not_a_time_is_refused(
    admin: FlaskClient, as_of: str, status: int, said: str
) -> None:
    response = admin.get("/admin/invoices/ACME-0001", query_string={"as_of": as_of})
    assert response.status_code == status
    assert said in alert(response.get_data(as_text=True))


def test_the_detail_has_a_place_for_the_admin_actions(app: Flask, admin: FlaskClient) -> None:
    assert app.jinja_env.loader is not None
    source = app.jinja_env.loader.get_source(app.jinja_env, "admin/invoice.html")[0]
    assert '{% include "admin/_actions.html" ignore missing %}' in source
    assert get(admin, "/admin/invoices/ACME-0003")


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# A "/" is the router's business (another route or a redirect), not the view's.
@given(
    ref=st.text(st.characters(blacklist_characters="/"), min_size=1, max_size=30),
    as_of=st.text(max_size=30),
)
def test_no_reference_or_as_of_makes_the_detail_fail(
    admin: FlaskClient, ref: str, as_of: str
) -> None:
    response = admin.get(f"/admin/invoices/{quote(ref, safe='')}", query_string={"as_of": as_of})
    assert response.status_code in (200, 400, 404), (ref, as_of, response.status_code)
    good = admin.get("/admin/invoices/ACME-0001", query_string={"as_of": as_of})
    assert good.status_code in (200, 400, 404), (as_of, good.status_code)
