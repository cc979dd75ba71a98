"""The admin's Past due, Entities, Rates, Calls and Notifications pages, on both
backends with the `world`: what each shows, its chart, its bad inputs (a 400 page
with one sentence, never a 500), unknown entities (404), and who may see them."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree

import pytest
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.app import Ledger
from ledger.notifications.application import Outcome
from ledger.rates.domain import Rate
from ledger.sources import Source
from projections.rates import RateVersionRow
from projections.runner import Runner
from web.admin.catalog import version_views

from .conftest import (
    ADMIN_EMAIL,
    OPERATOR,
    PASSWORD,
    TickingClock,
    World,
    invoice_snapshot,
    screenshot,
)

SVG = "{http://www.w3.org/2000/svg}"
JUNE = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
JANUARY = "entity=acme&from=2026-01-01&to=2026-02-01"


def html(client: FlaskClient, path: str, status: int = 200) -> str:
    response = client.get(path)
    text = response.get_data(as_text=True)
    assert response.status_code == status, text[:800]
    return text


def svgs(page: str) -> list[ElementTree.Element]:
    return [ElementTree.fromstring(m) for m in re.findall(r"<svg.*?</svg>", page, re.S)]


def bars(svg: ElementTree.Element) -> list[ElementTree.Element]:
    return [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "bar"]


def one_sentence_400(client: FlaskClient, path: str) -> str:
    page = html(client, path, 400)
    alert = re.search(r'<p role="alert">(.*?)</p>', page, re.S)
    assert alert is not None
    assert "Traceback" not in page
    return alert.group(1)


# Who may see them -------------------------------------------------------------------

PAGES = [
    "/admin/past-due",
    "/admin/entities",
    "/admin/rates",
    "/admin/calls",
    "/admin/notifications",
    f"/admin/calls.csv?{JANUARY}",
    "/admin/calls.csv?invoice=ACME-0001",
]


@pytest.mark.parametrize("path", PAGES)
def test_a_customer_gets_404_and_an_anonymous_visitor_the_login_page(
    path: str, acme: FlaskClient, client: FlaskClient, world: World
) -> None:
    assert acme.get(path).status_code == 404
    response = client.get(path)
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


# Past due ---------------------------------------------------------------------------


def test_the_past_due_queue_shows_amount_days_overdue_and_the_last_notification(
    admin: FlaskClient, clock: TickingClock
) -> None:
    clock.now = JUNE  # ACME-0002 was due 2026-03-15: 78 days before
    page = html(admin, "/admin/past-due")
    row = re.search(r"<tr>\s*<td><a href=\"/admin/invoices/ACME-0002\">.*?</tr>", page, re.S)
    assert row is not None
    cells = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(0)))
    assert "Acme Corp" in cells
    assert "$54.58" in cells
    assert " 78 " in cells
    assert "email to billing@acme.example (customer): retrying" in cells
    assert "61-90" in page


def test_the_aging_chart_puts_the_invoice_in_its_bucket_with_its_amount_and_count(
    admin: FlaskClient, clock: TickingClock
) -> None:
    clock.now = JUNE
    (chart,) = svgs(html(admin, "/admin/past-due"))
    assert chart.get("role") == "img"
    assert chart.get("aria-label") == "Past-due aging (USD)"
    assert chart.find(f"{SVG}title") is not None
    assert "61-90 days: $54.58 · 1" in (chart.findtext(f"{SVG}desc") or "")
    heights = {
        r.findtext(f"{SVG}title", "").split(":")[0]: float(r.get("height", "")) for r in bars(chart)
    }
    assert heights["61-90 days"] > 0
    assert [h for k, h in heights.items() if k != "61-90 days"] == [0, 0, 0]


def test_an_invoice_paid_since_leaves_the_queue(admin: FlaskClient, ledger: Ledger) -> None:
    paid = invoice_snapshot(
        "acme",
        2,
        2,
        "paid",
        45,
        amount_paid=Decimal("54.58"),
        paid_at=datetime(2026, 5, 1, tzinfo=UTC),
    )
    ledger.observe_invoice(paid, Source("stripe_event", "evt_paid_late"))
    Runner(ledger).catch_up()
    page = html(admin, "/admin/past-due")
    assert "ACME-0002" not in page
    assert "Nothing is past due." in page


# Entities -------------------------------------------------------------------------


def test_entities_lists_every_entity_with_its_contacts_and_links_to_rates_and_calls(
    admin: FlaskClient, ledger: Ledger
) -> None:
    ledger.link_stripe_customer("initech", "cus_initech42", OPERATOR)
    ledger.archive_entity("initech", "left", OPERATOR)
    Runner(ledger).catch_up()
    page = html(admin, "/admin/entities")
    for entity_id, name in (("acme", "Acme Corp"), ("globex", "Globex Corporation")):
        assert f"<code>{entity_id}</code>" in page
        assert name in page
        assert f'href="/admin/rates?entity={entity_id}"' in page
        assert f'href="/admin/calls?entity={entity_id}"' in page
        assert f"billing@{entity_id}.example" in page
    initech = re.search(r"<code>initech</code>.*?</tr>", page, re.S)
    assert initech is not None
    assert "cus_initech42" in initech.group(0)
    assert "Archived" in initech.group(0)


# Rates ----------------------------------------------------------------------------


def lanes(chart: ElementTree.Element) -> dict[str, ElementTree.Element]:
    """The timeline's span bars by lane ("v2 · $0.018")."""
    found = {}
    for rect in chart.iter(f"{SVG}rect"):
        if "span" in (rect.get("class") or ""):
            found[(rect.findtext(f"{SVG}title") or "").split(":")[0]] = rect
    return found


def test_rates_show_every_version_in_valid_and_recorded_time(
    admin: FlaskClient, ledger: Ledger, clock: TickingClock
) -> None:
    clock.now = JUNE
    # In June: February's price corrected (recorded late), then the correction itself
    # corrected for the same day (so the first correction was never in force).
    ledger.set_rate("globex", Decimal("0.018"), "usd", date(2026, 2, 1), "correction", OPERATOR)
    ledger.set_rate("globex", Decimal("0.019"), "usd", date(2026, 2, 1), "typo", OPERATOR)
    Runner(ledger).catch_up()
    page = html(admin, "/admin/rates?entity=globex")
    (chart,) = svgs(page)
    assert chart.get("role") == "img"
    assert chart.get("aria-label") == "Rate history of globex"
    spans = lanes(chart)
    assert set(spans) == {"v1 · $0.02", "v2 · $0.018", "v3 · $0.019"}
    assert (spans["v1 · $0.02"].get("data-start"), spans["v1 · $0.02"].get("data-end")) == (
        "2026-01-01",
        "2026-02-01",
    )
    assert "span-superseded" in (spans["v2 · $0.018"].get("class") or "")
    assert spans["v3 · $0.019"].get("data-end") == ""  # still in force
    late = [p for p in chart.iter(f"{SVG}path") if p.get("class") == "recorded-late"]
    assert [p.get("data-recorded") for p in late] == ["2026-06-01", "2026-06-01"]
    table = page[page.index("<table") :]
    assert table.count("recorded later") == 2
    assert "superseded" in table
    assert "until 2026-02-01" in table


def test_rates_without_an_entity_show_each_entitys_timeline(admin: FlaskClient) -> None:
    page = html(admin, "/admin/rates")
    assert [c.get("aria-label") for c in svgs(page)] == [
        "Rate history of acme",
        "Rate history of globex",
        "Rate history of initech",
    ]
    acme = lanes(svgs(page)[0])
    assert acme["v1 · $0.012"].get("data-end") == "2026-04-01"
    assert acme["v2 · $0.01"].get("data-start") == "2026-04-01"


def test_rates_of_an_unknown_entity_is_404_and_a_malformed_one_400(admin: FlaskClient) -> None:
    assert admin.get("/admin/rates?entity=nobody").status_code == 404
    assert "entity" in one_sentence_400(admin, "/admin/rates?entity=Not%20An%20Id")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 60)), min_size=1, max_size=6),
    st.integers(0, 80),
)
def test_the_version_shown_in_force_on_a_day_is_the_one_the_rate_applies(
    versions: list[tuple[int, int]], day_n: int
) -> None:
    base = date(2026, 1, 1)
    rows = [
        RateVersionRow(
            n + 1,
            Decimal(n + 1),
            base + timedelta(days=valid),
            JUNE + timedelta(days=recorded),
            "r",
            "s",
            None,
        )
        for n, (valid, recorded) in enumerate(versions)
    ]
    day = base + timedelta(days=day_n)
    shown = [
        x.row.version
        for x in version_views(rows)
        if not x.superseded and x.row.effective_from <= day and (x.until is None or day < x.until)
    ]
    applied = Rate.version_on(SimpleNamespace(versions=rows), day)  # type: ignore[arg-type]
    assert shown == ([applied.version] if applied else [])


# Calls ----------------------------------------------------------------------------


def test_calls_without_an_entity_offer_the_choice(admin: FlaskClient) -> None:
    page = html(admin, "/admin/calls")
    assert "Choose an entity to see its calls." in page
    assert '<option value="globex">' in page
    assert svgs(page) == []


def test_calls_per_day_chart_has_a_bar_per_day_summing_to_the_calls_listed(
    admin: FlaskClient,
) -> None:
    page = html(admin, f"/admin/calls?{JANUARY}")
    (chart,) = svgs(page)
    assert chart.get("aria-label") == "Calls per day of acme"
    days = bars(chart)
    assert len(days) == 31
    assert sum(int(b.get("data-value", "")) for b in days) == 60
    assert page.count("<code>call-acme-") == 60
    assert "60</strong> calls" in page
    assert "Next page" not in page


def test_calls_page_through_the_period_in_time_order(
    admin: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import web.admin.calls

    monkeypatch.setattr(web.admin.calls, "PAGE", 25)
    seen: list[str] = []
    path: str | None = f"/admin/calls?{JANUARY}"
    while path is not None:
        page = html(admin, path)
        seen += re.findall(r"<code>(call-acme-\d+)</code>", page)
        more = re.search(r'<a rel="next" href="([^"]+)"', page)
        path = more.group(1).replace("&amp;", "&") if more else None
    assert seen == [f"call-acme-{i}" for i in range(1, 61)]


@pytest.mark.parametrize(
    "query",
    [
        "entity=acme&from=2026-13-01",
        "entity=acme&from=2026-02-01&to=2026-02-01",
        "entity=acme&from=2026-01-01&to=2027-06-01",
        "entity=acme&after=not-a-cursor",
        "entity=Not%20An%20Id",
        "entity=acme&to=2025-12-01",  # before the default start (this month)
        # A cursor from February's pages, asked of January.
        "entity=acme&from=2026-01-01&to=2026-02-01&after=MjAyNi0wMi0wMnwyMDI2LTAyLTAyVDEwOjAwOjAwKzAwOjAwfGM",
    ],
)
def test_calls_refuse_bad_parameters_with_one_sentence(admin: FlaskClient, query: str) -> None:
    sentence = one_sentence_400(admin, f"/admin/calls?{query}")
    assert sentence.split(":")[0] in ("from", "to", "after", "entity")
    assert admin.get(f"/admin/calls.csv?{query}").status_code == 400


def test_calls_of_an_unknown_entity_is_404(admin: FlaskClient) -> None:
    assert admin.get("/admin/calls?entity=nobody").status_code == 404


def test_the_calls_csv_streams_every_call_of_the_period(admin: FlaskClient) -> None:
    response = admin.get(f"/admin/calls.csv?{JANUARY}")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "calls-acme-2026-01-01-2026-02-01.csv" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["call_id", "entity_id", "day", "started_at", "duration_seconds", "source"]
    assert [r[0] for r in rows[1:]] == [f"call-acme-{i}" for i in range(1, 61)]
    assert rows[1][3] == "2026-01-01T16:00:00Z"
    assert "entity" in one_sentence_400(admin, "/admin/calls.csv?from=2026-01-01")


def test_the_evidence_for_an_invoice_is_one_zip_of_its_calls_and_its_explanation(
    admin: FlaskClient,
) -> None:
    response = admin.get("/admin/calls.csv?entity=acme&invoice=ACME-0001")
    assert response.status_code == 200
    assert response.mimetype == "application/zip"
    assert "evidence-ACME-0001.zip" in response.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(response.get_data())) as zf:
        assert sorted(zf.namelist()) == ["README.txt", "calls.csv", "explanation.json"]
        calls = zf.read("calls.csv")
        explanation = json.loads(zf.read("explanation.json"))
        readme = zf.read("README.txt").decode()
    assert explanation["invoice"]["number"] == "ACME-0001"
    assert (explanation["invoice"]["period_start"], explanation["invoice"]["period_end"]) == (
        "2026-01-01",
        "2026-02-01",
    )
    assert len(calls.decode().splitlines()) == 61
    assert hashlib.sha256(calls).hexdigest() in readme
    assert "60 calls recorded" in readme
    assert "Usage charged: 25 calls" in readme


def test_evidence_for_an_unknown_invoice_or_another_entitys_is_404(admin: FlaskClient) -> None:
    assert admin.get("/admin/calls.csv?invoice=NOPE-0001").status_code == 404
    assert admin.get("/admin/calls.csv?entity=globex&invoice=ACME-0001").status_code == 404


# Notifications --------------------------------------------------------------------


def notification_rows(page: str) -> list[str]:
    body = page[page.index("<tbody>") : page.index("</tbody>")]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", r)).strip() for r in rows]


def test_notifications_show_each_notice_with_its_delivery_state(admin: FlaskClient) -> None:
    rows = notification_rows(html(admin, "/admin/notifications"))
    assert len(rows) == 2
    customer = next(r for r in rows if "billing@acme.example" in r)
    staff = next(r for r in rows if "admin@billtrail.example" in r)
    assert "ACME-0002 (acme) past due customer email" in customer
    assert "retrying" in customer
    assert "451 4.2.1 mailbox busy" in customer
    assert "admin email" in staff
    assert "sent" in staff
    assert "250 2.0.0 queued" in staff


def test_notifications_filter_by_status_and_failed(
    admin: FlaskClient, ledger: Ledger, clock: TickingClock
) -> None:
    assert [r for r in notification_rows(html(admin, "/admin/notifications?status=sent"))] == [
        r for r in notification_rows(html(admin, "/admin/notifications")) if " sent " in r
    ]
    (failing,) = notification_rows(html(admin, "/admin/notifications?failed=true&status="))
    assert "retrying" in failing
    # The retry fails for good: still listed as failed, now given up with the reason.
    clock.now = JUNE
    pending = ledger.notification_outbox().due(clock())
    (due,) = pending
    claimed = ledger.begin_delivery(due.notification_id, OPERATOR)
    assert claimed is not None
    ledger.record_delivery(
        due.notification_id,
        claimed.attempts,
        Outcome(False, "550 5.1.1 no such user", True),
        OPERATOR,
    )
    Runner(ledger).catch_up()
    (gave_up,) = notification_rows(html(admin, "/admin/notifications?failed=true"))
    assert "gave up" in gave_up
    assert "550 5.1.1 no such user" in gave_up
    assert " 2 " in gave_up  # attempts
    assert notification_rows(html(admin, "/admin/notifications?status=retrying")) == [
        "No notifications match."
    ]


def test_notifications_page_back_to_older_notices(
    admin: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import web.admin.notifications

    monkeypatch.setattr(web.admin.notifications, "PAGE", 1)
    first = html(admin, "/admin/notifications")
    older = re.search(r'<a rel="next" href="([^"]+)"', first)
    assert older is not None
    second = html(admin, older.group(1).replace("&amp;", "&"))
    assert "billing@acme.example" in notification_rows(first)[0]
    assert "admin@billtrail.example" in notification_rows(second)[0]
    assert 'rel="next"' not in second


@pytest.mark.parametrize("query", ["status=lost", "failed=maybe", "before=0", "before=abc"])
def test_notifications_refuse_bad_filters_with_one_sentence(admin: FlaskClient, query: str) -> None:
    assert one_sentence_400(admin, f"/admin/notifications?{query}").split(":")[0] in (
        "status",
        "failed",
        "before",
    )


# In a real browser ----------------------------------------------------------------


@pytest.mark.browser
def test_an_admin_reads_the_past_due_queue_and_the_rate_timeline_in_a_browser(
    page: Any, ledger: Ledger, clock: TickingClock
) -> None:
    clock.now = JUNE
    ledger.set_rate("globex", Decimal("0.018"), "usd", date(2026, 2, 1), "correction", OPERATOR)
    Runner(ledger).catch_up()
    refused: list[str] = []  # the CSP refuses inline styles and scripts: none may be needed
    page.on("console", lambda m: refused.append(m.text) if "Refused" in m.text else None)
    page.goto("/login")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/**")

    page.get_by_role("link", name="Past due").click()
    page.wait_for_url("**/admin/past-due")
    chart = page.get_by_role("img", name="Past-due aging (USD)")
    assert chart.is_visible()
    assert chart.bounding_box()["width"] > 300
    row = page.locator("table.past-due-queue tbody tr").first
    assert row.locator("td").nth(4).inner_text() == "78"
    assert row.get_by_role("link", name="ACME-0002").get_attribute("href") == (
        "/admin/invoices/ACME-0002"
    )
    screenshot(page, "admin-past-due")

    page.get_by_role("link", name="Rates").click()
    page.wait_for_url("**/admin/rates")
    timeline = page.get_by_role("img", name="Rate history of globex")
    assert timeline.is_visible()
    assert timeline.locator("text.late").text_content() == "recorded later"
    assert page.get_by_role("table", name="Versions of the rate of globex, in the order recorded")
    screenshot(page, "admin-rates")
    assert refused == []
