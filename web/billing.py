""" "Your Billing": a customer's own invoices and receipts.

Every view is customer-only (the guard on the blueprint) and scoped to the
customer's entity through `visible_invoice`: another entity's invoice, a draft or
a reference that names nothing all answer the same 404."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from flask_login import current_user
from marshmallow import Schema, fields, validate
from werkzeug.wrappers import Response

from ledger.users.domain import Role
from projections.invoices import STATUSES, InvalidQuery, InvoiceQuery, list_invoices
from web.auth import guard
from web.receipts import Receipt, receipt_download, visible_invoice
from web.services import services
from web.validation import load

blueprint = Blueprint("billing", __name__, url_prefix="/billing")
guard(blueprint, Role.CUSTOMER)

PAGE_SIZE = 25
CUSTOMER_STATUSES = [s for s in STATUSES if s != "draft"]


class ListSchema(Schema):
    status = fields.String(load_default=None, validate=validate.OneOf(CUSTOMER_STATUSES))
    after = fields.String(load_default=None, validate=validate.Length(min=1, max=200))


@blueprint.get("")
def home() -> str:
    args = load(ListSchema(), request.args)
    query = InvoiceQuery(entity_id=current_user.entity_id, status=args["status"])
    try:
        page = list_invoices(services().store, query, limit=PAGE_SIZE, after=args["after"])
    except InvalidQuery as exc:
        abort(400, description=str(exc))
    return render_template(
        "billing/home.html", page=page, status=args["status"], statuses=CUSTOMER_STATUSES
    )


@blueprint.get("/invoices/<number>")
def invoice(number: str) -> str:
    row = visible_invoice(number, current_user.entity_id)
    receipt = Receipt.of(services().ledger, row.stripe_id)
    return render_template("billing/invoice.html", row=row, receipt=receipt)


@blueprint.get("/invoices/<number>/receipt.pdf")
def receipt(number: str) -> Response:
    return receipt_download(visible_invoice(number, current_user.entity_id))
