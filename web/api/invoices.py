"""/api/invoices: the list (the admin list's filters, keyset pages), one invoice
with its lines and status history, and its explanation."""

from __future__ import annotations

from flask import Response, abort, request

from billtrail.explain_schema import ExplanationSchema
from ledger.errors import NotFound
from ledger.explain.application import explain
from projections.invoice_history import invoice_status_history
from projections.invoice_lines import invoice_lines
from projections.invoices import (
    InvalidQuery,
    InvoiceQuery,
    InvoiceRow,
    find_invoice,
    list_invoices,
)
from web.api import answer, blueprint, shown, visible_entity
from web.api.schemas import (
    SORTS,
    ExplanationQuery,
    InvoiceDetailOut,
    InvoiceListQuery,
    InvoicePageOut,
    InvoicePath,
)
from web.api.spec import operation
from web.services import services
from web.validation import load


@blueprint.get("/invoices")
@operation(InvoicePageOut, query=InvoiceListQuery, errors=(404,))
def invoices() -> Response:
    """Invoices, filtered and sorted, a page at a time.
    A customer sees its own entity's; `entity` naming another entity is a 404."""
    args = load(InvoiceListQuery(), request.args)
    sort, descending = SORTS[args["sort"]]
    query = InvoiceQuery(
        entity_id=visible_entity(args["entity"]),
        status=args["status"],
        issued_from=args["from_"],
        issued_to=args["to"],
        search=args["q"],
        as_of=args["as_of"],
        sort=sort,
        descending=descending,
    )
    try:
        page = list_invoices(services().store, query, limit=args["limit"], after=args["after"])
    except InvalidQuery as exc:
        abort(400, description=f"after: {exc}")
    # A customer's page leaves drafts out (it may come out short; the cursor
    # still continues after the last row read).
    rows = [row for row in page.rows if shown(row)]
    return answer(InvoicePageOut(), {"invoices": rows, "next_cursor": page.next_cursor})


def _invoice(ref: str) -> InvoiceRow:
    found = find_invoice(services().store, ref)
    if found is None or not shown(found):
        abort(404, description=f"no invoice {ref!r}")
    return found


@blueprint.get("/invoices/<number>")
@operation(InvoiceDetailOut, path=InvoicePath, errors=(404,))
def invoice(number: str) -> Response:
    """One invoice (by number or Stripe id) with its lines and status history."""
    row = _invoice(load(InvoicePath(), {"number": number})["number"])
    store = services().store
    return answer(
        InvoiceDetailOut(),
        {
            "invoice": row,
            "lines": invoice_lines(store, row.stripe_id),
            "history": invoice_status_history(store, row.stripe_id),
        },
    )


@blueprint.get("/invoices/<number>/explanation")
@operation(ExplanationSchema, path=InvoicePath, query=ExplanationQuery, errors=(404,))
def explanation(number: str) -> Response:
    """Why the invoice says what it says, as the ledger knew it (`as_of`).
    The document of `billtrail explain --json`."""
    row = _invoice(load(InvoicePath(), {"number": number})["number"])
    as_of = load(ExplanationQuery(), request.args)["as_of"]
    try:
        x = explain(services().ledger, row.stripe_id, as_of)
    except NotFound as exc:
        abort(404, description=str(exc))
    return answer(ExplanationSchema(), x)
