"""The receipt PDF of any invoice, for admins."""

from __future__ import annotations

from werkzeug.wrappers import Response

from web.admin import blueprint
from web.receipts import receipt_download, visible_invoice


@blueprint.get("/invoices/<number>/receipt.pdf")
def receipt(number: str) -> Response:
    return receipt_download(visible_invoice(number))
