"""Calls: an entity's calls for a period, a page at a time, with calls per day as a
chart; and the evidence export.

Periods are written as billing periods are everywhere in billtrail: `from` is the
first day, `to` the day after the last (so an invoice's period links as it is).

Evidence: `/admin/calls.csv?entity=E&from=D&to=D` streams the calls as CSV. With
`&invoice=NUMBER` it answers the evidence for that invoice's dispute as ONE zip:
`calls.csv` (the calls of the invoice's entity and period), `explanation.json`
(the "why this charge" document: the rate in force each day, the usage pushed to
Stripe, the flags) and `README.txt` (what the invoice charged against what the
calls count, and the SHA-256 of calls.csv). A billing admin answering a dispute
forwards one attachment, and its parts are of the same moment and tie to each
other (the count and digest in the README), so no one has to match two downloads
later."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from flask import Response, abort, render_template, request, stream_with_context
from marshmallow import ValidationError, fields, validate, validates_schema

from billtrail.explain_schema import explanation_document
from ledger.errors import NotRecordedYet, UnknownInvoice
from ledger.explain.application import explain
from projections.calls import CallPage, CallRow, calls_of
from projections.entities import list_entities
from projections.invoices import find_invoice
from projections.usage import usage_for_period
from web.admin import blueprint
from web.admin.catalog import ENTITY_ID

# The invoice list's: blank form fields dropped, printable text, CSV cells safe
# from spreadsheet formulas.
from web.charts import calls_chart
from web.csv_export import cell, csv_pages
from web.services import services
from web.validation import PRINTABLE, QueryArgs, load

PAGE = 100  # calls per page on screen
CSV_PAGE = 5000  # calls per read while streaming
MAX_DAYS = 366
CSV_HEADER = ("call_id", "entity_id", "day", "started_at", "duration_seconds", "source")

Cursor = tuple[date, datetime, str]


class CursorField(fields.Field[Cursor]):
    """The position after the last call of a page, as the page's link carries it."""

    def _serialize(self, value: Cursor | None, attr: str | None, obj: Any, **kw: Any) -> Any:
        if value is None:
            return None
        raw = f"{value[0].isoformat()}|{value[1].isoformat()}|{value[2]}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kw: Any) -> Cursor:
        try:
            text = base64.urlsafe_b64decode(str(value) + "=" * (-len(str(value)) % 4)).decode()
            day, started, call_id = text.split("|", 2)
            at = datetime.fromisoformat(started)
            if at.tzinfo is None:
                raise ValueError(started)
            return date.fromisoformat(day), at, call_id
        except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
            raise ValidationError("is not a page of this list") from exc


class CallsArgs(QueryArgs):
    entity = fields.String(validate=ENTITY_ID)
    from_ = fields.Date(data_key="from")
    to = fields.Date()
    after = CursorField()
    invoice = fields.String(validate=[validate.Length(max=100), PRINTABLE])

    @validates_schema
    def period(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        start, end = data.get("from_"), data.get("to")
        if start is not None and end is not None:
            if start >= end:
                raise ValidationError(
                    "from must be before to (to is the day after the last)", "from"
                )
            if (end - start).days > MAX_DAYS:
                raise ValidationError(f"a period is at most {MAX_DAYS} days", "to")


def period_of(args: Mapping[str, Any], today: date) -> tuple[date, date]:
    """The period asked for; by default the month of `today` (a missing end: a
    month after the start). A 400 when the defaults make it empty, or the page
    cursor is not of a day in it (it would read calls outside the period)."""
    start = args.get("from_") or today.replace(day=1)
    end = args.get("to")
    if end is None:
        try:
            following = date(start.year + start.month // 12, start.month % 12 + 1, 1)
            end = following if start.day == 1 else start + timedelta(days=31)
        except (ValueError, OverflowError):  # the default end would be after 9999-12-31
            abort(400, description=f"to: give the day after the last (from {start}).")
    if start >= end:
        abort(400, description=f"to: must be after from ({start}); to is the day after the last.")
    after = args.get("after")
    if after is not None and not start <= after[0] < end:
        abort(400, description="after: is not a page of this period.")
    return start, end


@blueprint.get("/calls")
def calls() -> str:
    args = load(CallsArgs(), request.args)
    s = services()
    entities = list_entities(s.store)
    start, end = period_of(args, s.clock().date())
    if "entity" not in args:
        return render_template(
            "admin/calls.html", entities=entities, entity=None, start=start, end=end
        )
    entity = next((e for e in entities if e.entity_id == args["entity"]), None)
    if entity is None:
        abort(404, description=f"No entity {args['entity']}.")
    page = calls_of(s.store, entity.entity_id, start, end, limit=PAGE, after=args.get("after"))
    usage = usage_for_period(s.store, entity.entity_id, start, end)
    chart = calls_chart({d.day: d.calls for d in usage.days}, start, end, entity.entity_id)
    cursor = CursorField().serialize("c", {"c": page.next_cursor})
    return render_template(
        "admin/calls.html",
        entities=entities,
        entity=entity,
        start=start,
        end=end,
        page=page,
        usage=usage,
        chart=chart,
        next_cursor=cursor,
        first=args.get("after") is None,
    )


def _csv_row(c: CallRow) -> tuple[str, ...]:
    started = c.started_at.isoformat().replace("+00:00", "Z")
    return (
        cell(c.call_id),
        c.entity_id,
        c.day.isoformat(),
        started,
        str(c.duration_seconds),
        cell(c.source),
    )


class _Sink(io.RawIOBase):
    """Where the zip writes, emptied as the response streams (never seekable, so
    zipfile writes sizes after each entry instead of going back)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.chunks.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def _evidence(chunks: Iterator[str], document: dict[str, Any]) -> Iterator[bytes]:
    sink = _Sink()
    digest, count = hashlib.sha256(), -1  # the header is not a call
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("calls.csv", "w") as out:
            for chunk in chunks:
                data = chunk.encode()
                digest.update(data)
                count += chunk.count("\n")
                out.write(data)
                yield sink.take()
        zf.writestr("explanation.json", json.dumps(document, indent=2, sort_keys=True))
        zf.writestr("README.txt", _readme(document, count, digest.hexdigest()))
    yield sink.take()


def _readme(x: dict[str, Any], calls: int, sha256: str) -> str:
    invoice = x["invoice"]
    usage = [line for line in x["lines"] if line["kind"] == "usage"]
    charged = ", ".join(f"{line['quantity']} calls = {line['amount']}" for line in usage) or "none"
    flags = "".join(f"\n  - {f['code']}: {f['message']}" for f in x["flags"]) or " none"
    return (
        f"Evidence for invoice {invoice['number']} ({invoice['stripe_id']})\n"
        f"Entity: {invoice['entity_id']}\n"
        f"Period: {invoice['period_start']} up to (not including) {invoice['period_end']}\n"
        f"Total: {invoice['total']} {invoice['currency'].upper()}, status {invoice['status']}\n"
        f"Usage charged: {charged}\n"
        f"calls.csv: {calls} calls recorded for the period now, SHA-256 {sha256}\n"
        f"explanation.json: why each charge, as of {x['as_of']} (schema {x['schema_version']})\n"
        f"Flags:{flags}\n"
    )


@blueprint.get("/calls.csv")
def calls_csv() -> Response:
    args = load(CallsArgs(), request.args)
    s = services()
    if "invoice" in args:
        return _invoice_evidence(args)
    if "entity" not in args:
        abort(400, description="entity: the calls of which entity (?entity=ID).")
    start, end = period_of(args, s.clock().date())

    def read(after: Cursor | None) -> CallPage:
        return calls_of(s.store, args["entity"], start, end, limit=CSV_PAGE, after=after)

    name = f"calls-{args['entity']}-{start}-{end}.csv"
    return Response(
        stream_with_context(csv_pages(CSV_HEADER, read(args.get("after")), read, _csv_row)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _invoice_evidence(args: Mapping[str, Any]) -> Response:
    s = services()
    row = find_invoice(s.store, args["invoice"])
    if row is None or args.get("entity", row.entity_id) != row.entity_id:
        abort(404, description=f"No invoice {args['invoice']} of that entity.")
    try:
        document = explanation_document(explain(s.ledger, row.stripe_id))
    except (NotRecordedYet, UnknownInvoice) as exc:
        abort(404, description=str(exc))
    invoice = document["invoice"]
    start, end = (
        date.fromisoformat(invoice["period_start"]),
        date.fromisoformat(invoice["period_end"]),
    )

    def read(after: Cursor | None) -> CallPage:
        return calls_of(s.store, row.entity_id, start, end, limit=CSV_PAGE, after=after)

    name = f"evidence-{row.number or row.stripe_id}.zip"
    return Response(
        stream_with_context(_evidence(csv_pages(CSV_HEADER, read(None), read, _csv_row), document)),
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
