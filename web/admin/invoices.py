"""The admin's Invoices: the list (search, filters, sort, keyset pages, totals by
status, "as of" a past day), its CSV export (streamed page by page), and one
invoice's detail with the "why this charge" explanation.

`as_of` means two things, both "as it stood then": on the list, each invoice's
status on that day (valid time, from the status history; numbers, dates, totals
and entity names are today's, and invoices issued after the day are left out); on
the detail, the explanation as the ledger had recorded it by the end of that day
(or at that instant), while the lines, reconciliation and status timeline are the
read models' current rows."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from flask import Response, abort, current_app, render_template, request
from marshmallow import ValidationError, fields, validate, validates_schema

from billtrail.explain_schema import explanation_document
from ledger.errors import NotRecordedYet, UnknownInvoice
from ledger.explain.application import explain
from projections.invoices import (
    STATUSES,
    InvalidQuery,
    InvoicePage,
    InvoiceQuery,
    InvoiceRow,
    invoice_detail,
    invoice_listing,
    list_invoices,
    totals_by_status,
)
from web.admin import blueprint
from web.csv_export import cell, csv_pages
from web.formatting import status_badge
from web.services import services
from web.validation import PRINTABLE, QueryArgs, load

PAGE_SIZE = 50  # rows per page; the app's BILLTRAIL_ADMIN_PAGE_SIZE overrides it
CSV_PAGE = 500
# sort parameter -> (InvoiceQuery.sort, descending)
SORTS = {
    "date_desc": ("date", True),
    "date_asc": ("date", False),
    "total_desc": ("total", True),
    "total_asc": ("total", False),
}
LINE_KINDS = {"usage": "Usage", "fee": "Fixed fee", "adjustment": "Adjustment", "tax": "Tax"}
LINK_PARAMS = ("q", "entity", "status", "from", "to", "sort", "as_of")
# Each status's badge, made once rather than per row of every page.
BADGES = {status: status_badge(status) for status in STATUSES}


class ListArgs(QueryArgs):
    q = fields.String(validate=[validate.Length(max=100), PRINTABLE])
    entity = fields.String(validate=[validate.Length(max=100), PRINTABLE])
    status = fields.String(validate=validate.OneOf(STATUSES))
    from_ = fields.Date(data_key="from")
    to = fields.Date()
    sort = fields.String(load_default="date_desc", validate=validate.OneOf(list(SORTS)))
    after = fields.String(validate=[validate.Length(max=200), PRINTABLE])
    before = fields.String(validate=[validate.Length(max=200), PRINTABLE])
    as_of = fields.Date()

    @validates_schema
    def dates_in_order(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if "from_" in data and "to" in data and data["from_"] > data["to"]:
            raise ValidationError("must not be after to", "from")


class Instant(fields.Field[datetime]):
    """A day (meaning its end, in UTC) or an ISO date and time with its offset."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        problem = "must be a date (YYYY-MM-DD) or a date and time with its UTC offset"
        if not isinstance(value, str):
            raise ValidationError(problem)
        try:
            return datetime.combine(date.fromisoformat(value), time.max, UTC)
        except ValueError:
            pass
        try:
            at = datetime.fromisoformat(value)
            if at.tzinfo is None:
                raise ValidationError(problem)
            return at.astimezone(UTC)
        except (ValueError, OverflowError) as exc:
            raise ValidationError(problem) from exc


class DetailArgs(QueryArgs):
    as_of = Instant()


def _query(args: Mapping[str, Any]) -> InvoiceQuery:
    sort, descending = SORTS[args["sort"]]
    return InvoiceQuery(
        entity_id=args.get("entity"),
        status=args.get("status"),
        issued_from=args.get("from_"),
        issued_to=args.get("to"),
        search=args.get("q"),
        as_of=args.get("as_of"),
        sort=sort,
        descending=descending,
    )


def _link_filters() -> dict[str, str]:
    # A page's links keep its filters (not its cursor) as they were typed.
    return {k: v for k, v in request.args.items() if k in LINK_PARAMS and v.strip()}


@blueprint.get("/invoices")
def invoices() -> str:
    args = load(ListArgs(), request.args)
    size = int(current_app.config.get("BILLTRAIL_ADMIN_PAGE_SIZE", PAGE_SIZE))
    try:
        listing = invoice_listing(
            services().store,
            _query(args),
            limit=size,
            after=args.get("after"),
            before=args.get("before"),
        )
    except InvalidQuery as exc:
        abort(400, description=str(exc))
    return render_template(
        "admin/invoices.html",
        listing=listing,
        args=args,
        filters=_link_filters(),
        badges=BADGES,
    )


@blueprint.get("/invoice-totals")
def invoice_totals() -> str:
    """The totals by status of the list's filtered set: a page of its own, which the
    list loads after it shows (web/static/invoices.js) so a broad filter's totals
    never hold up the list."""
    args = load(ListArgs(), request.args)
    totals = totals_by_status(services().store, _query(args))
    return render_template("admin/_invoice_totals.html", totals=totals, filters=_link_filters())


CSV_HEADER = (
    "number",
    "stripe_id",
    "entity_id",
    "entity_name",
    "issue_date",
    "due_date",
    "total",
    "currency",
    "status",
)


def _csv_row(r: InvoiceRow) -> tuple[str, ...]:
    return (
        cell(r.number),
        r.stripe_id,
        cell(r.entity_id),
        cell(r.entity_name),
        r.issue_date.isoformat() if r.issue_date else "",
        r.due_date.isoformat() if r.due_date else "",
        format(r.total, "f"),
        r.currency,
        r.status,
    )


@blueprint.get("/invoices.csv")
def invoices_csv() -> Response:
    args = load(ListArgs(), request.args)
    store, query = services().store, _query(args)
    try:
        # The first page is read before the response starts, so a bad cursor is a 400.
        first = list_invoices(store, query, limit=CSV_PAGE, after=args.get("after"))
    except InvalidQuery as exc:
        abort(400, description=str(exc))

    def read(after: str) -> InvoicePage:
        return list_invoices(store, query, limit=CSV_PAGE, after=after)

    return Response(
        csv_pages(CSV_HEADER, first, read, _csv_row),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="invoices.csv"'},
    )


@blueprint.get("/invoices/<ref>")
def invoice(ref: str) -> str:
    args = load(DetailArgs(), request.args)
    s = services()
    detail = invoice_detail(s.store, ref)
    if detail is None:
        abort(404, description=f"No invoice {ref}.")
    try:
        explanation = explain(s.ledger, detail.row.stripe_id, args.get("as_of"))
    except (NotRecordedYet, UnknownInvoice) as exc:
        abort(404, description=str(exc))
    return render_template(
        "admin/invoice.html",
        detail=detail,
        x=explanation_document(explanation),
        as_of=args.get("as_of"),
        stripe_url=f"{s.settings.stripe_dashboard}/invoices/{detail.row.stripe_id}",
        kinds=LINE_KINDS,
        D=Decimal,  # the explanation's amounts are decimal strings
    )
