"""An admin in a real browser: logs in through the form, searches, filters and pages
the invoice list, opens an invoice, reads why it was charged what it was, and
downloads its receipt. Screenshots of the list and the detail go to var/screenshots/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from .conftest import ADMIN_EMAIL, PASSWORD, World, screenshot


def listed(page: Any) -> list[str]:
    cells = page.locator("table.invoice-list tbody tr td:first-child a")
    return [text.strip() for text in cells.all_inner_texts()]


@pytest.mark.browser
def test_an_admin_searches_filters_pages_and_reads_why_an_invoice_charged_what_it_did(
    page: Any, app: Flask, world: World, tmp_path: Path
) -> None:
    app.config["BILLTRAIL_ADMIN_PAGE_SIZE"] = 3
    # A script or style the CSP blocks shows up as a console error; a missing
    # resource as a failed response (the browser's own favicon.ico aside).
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    page.goto("/login")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Invoices", exact=True).click()
    page.wait_for_url("**/admin/invoices")
    assert page.get_by_role("heading", name="Invoices").is_visible()

    # Page through everything: three pages of at most three, each invoice once.
    pages = [listed(page)]
    while page.get_by_role("link", name="Next page").count():
        page.get_by_role("link", name="Next page").click()
        page.wait_for_load_state()
        pages.append(listed(page))
    seen = [ref for rows in pages for ref in rows]
    assert len(seen) == len(set(seen)) == len(world.invoices) + 1  # and the draft
    assert set(world.invoices) <= set(seen)
    page.get_by_role("link", name="Previous page").click()
    page.wait_for_url("**before=**")
    assert listed(page) == pages[-2]

    # Search by part of an entity's name, then narrow it with a status.
    page.get_by_role("link", name="First page").click()
    page.get_by_label("Search number or entity").fill("globex")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**q=globex**")
    assert sorted(listed(page)) == sorted(world.of("globex"))
    page.get_by_label("Status", exact=True).select_option(label="Uncollectible")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**status=uncollectible**")
    assert listed(page) == world.by_status["uncollectible"]
    # The totals by status arrive after the list.
    totals = page.locator("#invoice-totals li[data-status]")
    totals.first.wait_for()
    assert totals.count() == 1
    assert "1 invoice" in totals.inner_text()
    assert "$54.97" in totals.inner_text()

    # An entity and an issue-date range, sorted by total.
    page.get_by_role("link", name="Clear").click()
    page.get_by_label("Entity", exact=True).select_option("acme")
    page.get_by_label("Issued from").fill("2026-02-15")
    page.get_by_label("Sort by").select_option(label="Total, largest first")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**entity=acme**")
    assert listed(page) == ["ACME-0003", "ACME-0002"]
    page.locator("#invoice-totals li[data-status]").first.wait_for()
    screenshot(page, "admin-invoices")

    # Open one and read why it charged what it did.
    page.get_by_role("link", name="ACME-0002", exact=True).click()
    page.wait_for_url("**/admin/invoices/ACME-0002")
    assert page.get_by_role("heading", name="Invoice ACME-0002").is_visible()
    assert page.get_by_role("heading", name="Why this charge").is_visible()
    flags = page.locator("ul.flags li")
    assert "USAGE_VS_CALLS_THEN" in flags.all_inner_texts()[0]
    assert "bills 45 calls" in flags.all_inner_texts()[0]
    assert "45 more billed than counted" in page.locator("#usage-difference").inner_text()
    screenshot(page, "admin-invoice-detail")

    with page.expect_download() as info:
        page.get_by_role("link", name="Download receipt (PDF)").click()
    download = info.value
    assert [url for url in failed if not url.endswith("/favicon.ico")] == []
    assert [e for e in errors if "404" not in e] == []
    saved = tmp_path / "receipt.pdf"
    download.save_as(saved)
    assert saved.read_bytes().startswith(b"%PDF")
    assert "ACME-0002" in download.suggested_filename
