""" "Your Billing": a customer sees its own invoices (number, issue date, total,
status, receipt) and their details, and nothing of anyone else's: another
entity's invoice answers 404 on every route, by number, by Stripe id or by any
odd reference."""

from __future__ import annotations

import html
import re

import pytest
from flask.testing import FlaskClient

from .conftest import World
from .test_receipts import after, pdf_text

ROUTES = ("/billing/invoices/{}", "/billing/invoices/{}/receipt.pdf")


def test_a_customer_sees_its_invoices_and_no_one_elses(acme: FlaskClient, world: World) -> None:
    response = acme.get("/billing")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for number in world.of("acme"):
        assert f'href="/billing/invoices/{number}"' in page
        assert f'href="/billing/invoices/{number}/receipt.pdf"' in page
    for number in [*world.of("globex"), *world.of("initech")]:
        assert number not in page
    # ACME-0001: issued 2026-02-01, $54.32, paid.
    assert "2026-02-01" in page
    assert "$54.32" in page
    assert '<span class="status status-paid">Paid</span>' in page
    assert '<span class="status status-past-due">Past Due</span>' in page


def test_the_list_filters_by_status(acme: FlaskClient, world: World) -> None:
    page = acme.get("/billing?status=past_due").get_data(as_text=True)
    assert "ACME-0002" in page
    assert "ACME-0001" not in page
    assert "ACME-0003" not in page
    assert "No invoices with status Void yet." in acme.get("/billing?status=void").get_data(
        as_text=True
    )


@pytest.mark.parametrize(
    "query", ["status=draft", "status=nope", "after=not-a-cursor", "after=" + "x" * 300]
)
def test_bad_list_parameters_are_a_400_page(acme: FlaskClient, world: World, query: str) -> None:
    response = acme.get(f"/billing?{query}")
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert "Bad request" in response.get_data(as_text=True)


def test_a_customer_reads_its_invoice(acme: FlaskClient, world: World) -> None:
    response = acme.get("/billing/invoices/ACME-0001")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Invoice ACME-0001" in page
    assert "Calls handled" in page
    assert "Monthly platform fee" in page
    assert "Sales tax 8%" in page
    assert "$54.32 on 2026-02-05" in page
    assert "Credit note CN-acme-1" in page
    assert "Due</dt><dd>2026-02-15" in page
    assert 'href="/billing/invoices/ACME-0001/receipt.pdf"' in page
    # The past-due one owes its total.
    past_due = acme.get("/billing/invoices/ACME-0002").get_data(as_text=True)
    assert "Not paid" in past_due
    assert "Balance due" in past_due


def test_a_customer_downloads_its_receipt(acme: FlaskClient, world: World) -> None:
    response = acme.get("/billing/invoices/ACME-0001/receipt.pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert after(pdf_text(response.data), "Total") == "$54.32"


def test_a_customer_gets_404_for_another_entitys_invoice(
    acme: FlaskClient, globex: FlaskClient, world: World
) -> None:
    for number, entity_id in world.invoices.items():
        for route in ROUTES:
            for ref in (number, world.stripe_ids[number]):
                mine = acme.get(route.format(ref)).status_code
                theirs = globex.get(route.format(ref)).status_code
                assert (mine, theirs) == (
                    200 if entity_id == "acme" else 404,
                    200 if entity_id == "globex" else 404,
                ), (route, ref)


def test_the_404_says_nothing_about_what_exists(acme: FlaskClient, world: World) -> None:
    theirs = acme.get("/billing/invoices/GLOBEX-0001")
    missing = acme.get("/billing/invoices/GLOBEX-9999")
    assert theirs.status_code == missing.status_code == 404
    assert "Globex" not in theirs.get_data(as_text=True)
    assert theirs.get_data(as_text=True).replace("0001", "9999") == missing.get_data(as_text=True)


@pytest.mark.parametrize(
    "ref", ["INITECH-0002", "in_initech_2", "..", "%2e%2e", "a%20b", "x" * 300, "ACME-0001'--", "-"]
)
def test_drafts_and_odd_references_are_404_on_every_route(
    acme: FlaskClient, world: World, ref: str
) -> None:
    for route in ROUTES:
        response = acme.get(route.format(ref))
        assert response.status_code == 404, route
        assert response.mimetype == "text/html"


def test_only_customers_reach_your_billing(
    client: FlaskClient, admin: FlaskClient, world: World
) -> None:
    for path in ("/billing", *(r.format("ACME-0001") for r in ROUTES)):
        anonymous = client.get(path)
        assert anonymous.status_code == 302
        assert anonymous.headers["Location"].startswith("/login?next=")
        assert admin.get(path).status_code == 404


def test_a_customer_never_reaches_the_admin_pages(acme: FlaskClient, world: World) -> None:
    assert acme.get("/admin/invoices/ACME-0001/receipt.pdf").status_code == 404
    assert acme.get("/admin/invoices").status_code == 404


def test_older_invoices_are_a_page_away(
    acme: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("web.billing.PAGE_SIZE", 2)
    first = acme.get("/billing").get_data(as_text=True)
    link = re.search(r'href="(/billing\?after=[^"]+)" rel="next"', first)
    assert link is not None
    second = acme.get(html.unescape(link.group(1))).get_data(as_text=True)
    assert ["ACME-0003" in first, "ACME-0002" in first, "ACME-0001" in first] == [True, True, False]
    assert "ACME-0001" in second
    assert "ACME-0003" not in second
    assert 'rel="next"' not in second
