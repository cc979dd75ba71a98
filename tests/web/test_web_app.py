"""The portal as gunicorn builds it (`bootstrap.web_app`), on a database whose read
models no process has made yet."""

from __future__ import annotations

from billtrail import bootstrap
from billtrail.settings import Settings
from web import services

from .conftest import ADMIN_EMAIL, OPERATOR, PASSWORD, log_in


def test_the_portal_lists_no_invoices_rather_than_failing_before_the_projections_first_run(
    settings: Settings,
) -> None:
    # On PostgreSQL `billtrail projections run` is a process of its own; the portal
    # may start first.
    web = bootstrap.web_app(settings)
    web.testing = True
    try:
        ledger = web.extensions[services.KEY].ledger
        ledger.add_user(ADMIN_EMAIL, "admin", PASSWORD, OPERATOR)
        token = ledger.issue_api_token(ADMIN_EMAIL, "tests", OPERATOR)

        api = web.test_client().get("/api/invoices", headers={"Authorization": f"Bearer {token}"})
        page = log_in(web.test_client(), ADMIN_EMAIL).get("/admin/invoices")

        assert api.status_code == 200, api.get_data(as_text=True)
        assert api.get_json()["invoices"] == []
        assert page.status_code == 200
        assert "No invoices match these filters." in page.get_data(as_text=True)
    finally:
        bootstrap.close_web_app(web)
