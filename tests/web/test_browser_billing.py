"""A customer in a real browser: logs in through the form, sees its invoices,
downloads a receipt, and is answered 404 for another entity's invoice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import ACME_EMAIL, PASSWORD, World, screenshot
from .test_receipts import after, pdf_text


@pytest.mark.browser
def test_a_customer_sees_its_billing_downloads_a_receipt_and_cannot_see_others(
    page: Any, world: World, tmp_path: Path
) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(ACME_EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/billing")
    assert page.get_by_role("heading", name="Your Billing").is_visible()
    rows = page.locator("table.invoices tbody tr")
    assert rows.count() == len(world.of("acme"))
    assert sorted(rows.locator("td:first-child").all_inner_texts()) == sorted(world.of("acme"))
    assert "GLOBEX" not in page.content()
    screenshot(page, "billing")

    page.get_by_role("link", name="ACME-0001", exact=True).click()
    page.wait_for_url("**/billing/invoices/ACME-0001")
    assert page.get_by_role("heading", name="Invoice ACME-0001").is_visible()
    with page.expect_download() as info:
        page.get_by_role("link", name="Download receipt (PDF)").click()
    download = info.value
    assert download.suggested_filename == "receipt-ACME-0001.pdf"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert after(pdf_text(saved.read_bytes()), "Total") == "$54.32"

    response = page.goto("/billing/invoices/GLOBEX-0003")
    assert response is not None
    assert response.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()
    response = page.goto(f"/billing/invoices/{world.stripe_ids['GLOBEX-0003']}/receipt.pdf")
    assert response is not None
    assert response.status == 404
