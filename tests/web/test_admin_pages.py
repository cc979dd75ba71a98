"""The admin's Past due, Entities, Rates, Calls and Notifications pages, on both
backends with the `world`: what each shows, its chart, its bad inputs (a 400 page
with one sentence, never a 500), unknown entities (404), and who may see them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from xml.etree import ElementTree

import pytest
from flask.testing import FlaskClient

from ledger.app import Ledger
from ledger.sources import Source
from projections.runner import Runner

from .conftest import TickingClock, World, invoice_snapshot

SVG = "{http://www.w3.org/2000/svg}"
JUNE = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


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

PAGES = ["/admin/past-due"]


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
