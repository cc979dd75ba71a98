"""The API's request and response schemas. Requests are loaded through them
(`web.validation.load`), responses dumped through them, and /api/openapi.json is
generated from them, so the document cannot drift from what the views do.

Amounts are decimal strings (`"12.50"`), never floats; days are ISO dates. Names
end in `Query`, `Path` or `Out` so none collides with the explanation document's
schemas (`billtrail.explain_schema`) in the document's components."""

from __future__ import annotations

from datetime import date
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from billtrail.explain_schema import DecimalString, EntitySchema
from projections.invoices import STATUSES
from web.validation import QueryArgs

# The admin list's sort values (newest first by default): sort -> (column, descending).
SORTS = {
    "date_desc": ("date", True),
    "date_asc": ("date", False),
    "total_desc": ("total", True),
    "total_asc": ("total", False),
}


def _no_control_characters(value: str) -> None:
    # A NUL or other control character is never part of an id, a number or a
    # search, and PostgreSQL refuses NUL in text: refused here as bad input.
    # (web.validation.PRINTABLE's regex would land in the OpenAPI document as a
    # `pattern` in Python's dialect.)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError("must not contain control characters")


def _text(max_length: int, **kwargs: Any) -> fields.String:
    return fields.String(
        validate=[validate.Length(min=1, max=max_length), _no_control_characters], **kwargs
    )


def _ordered_days(data: dict[str, Any], start: str, end: str, strict: bool) -> None:
    first, last = data.get(start), data.get(end)
    if not (isinstance(first, date) and isinstance(last, date)):
        return
    if last < first or (strict and last == first):
        word = "after" if strict else "on or after"
        raise ValidationError(f"must be {word} from", field_name="to")


# Requests -----------------------------------------------------------------------


class InvoiceListQuery(QueryArgs):
    q = _text(200, load_default=None, metadata={"description": "Text in the number or name."})
    entity = _text(200, load_default=None, metadata={"description": "An entity id."})
    status = fields.String(validate=validate.OneOf(STATUSES), load_default=None)
    from_ = fields.Date(
        data_key="from", load_default=None, metadata={"description": "Issued on or after."}
    )
    to = fields.Date(load_default=None, metadata={"description": "Issued on or before."})
    sort = fields.String(
        validate=validate.OneOf(list(SORTS)),
        load_default="date_desc",
    )
    after = _text(
        200, load_default=None, metadata={"description": "The previous page's next_cursor."}
    )
    as_of = fields.Date(
        load_default=None, metadata={"description": "The list as it stood on this day."}
    )
    limit = fields.Integer(validate=validate.Range(min=1, max=1000), load_default=50)

    @validates_schema
    def dates_in_order(self, data: dict[str, Any], **kwargs: Any) -> None:
        _ordered_days(data, "from_", "to", strict=False)


class InvoicePath(Schema):
    number = _text(200, required=True, metadata={"description": "Number or Stripe id."})


class ExplanationQuery(QueryArgs):
    as_of = fields.AwareDateTime(
        load_default=None,
        metadata={"description": "As the ledger knew it then (ISO 8601 with offset)."},
    )


class EntityPath(Schema):
    entity_id = _text(200, required=True)


class CallsQuery(QueryArgs):
    from_ = fields.Date(data_key="from", required=True, metadata={"description": "First day."})
    to = fields.Date(
        required=True,
        metadata={"description": "The day after the last (exclusive, like a period's end)."},
    )
    after = _text(
        300, load_default=None, metadata={"description": "The previous page's next_cursor."}
    )
    limit = fields.Integer(validate=validate.Range(min=1, max=1000), load_default=500)

    @validates_schema
    def dates_in_order(self, data: dict[str, Any], **kwargs: Any) -> None:
        _ordered_days(data, "from_", "to", strict=True)


# Responses ----------------------------------------------------------------------


class ErrorOut(Schema):
    error = fields.String(required=True)


class MeOut(Schema):
    email = fields.String(required=True)
    role = fields.String(required=True)
    entity_id = fields.String(allow_none=True)


class InvoiceRowOut(Schema):
    number = fields.String(allow_none=True)
    stripe_id = fields.String(required=True)
    entity_id = fields.String(required=True)
    entity_name = fields.String(required=True)
    issue_date = fields.Date(allow_none=True)
    due_date = fields.Date(allow_none=True)
    total = DecimalString(required=True)
    currency = fields.String(required=True)
    status = fields.String(required=True)


class InvoicePageOut(Schema):
    invoices = fields.List(fields.Nested(InvoiceRowOut), required=True)
    next_cursor = fields.String(
        allow_none=True, metadata={"description": "Pass as `after` for the next page."}
    )


class InvoiceLineOut(Schema):
    line_id = fields.String(required=True)
    kind = fields.String(required=True)
    description = fields.String(required=True)
    quantity = DecimalString(required=True)
    unit_amount = DecimalString(allow_none=True)
    amount = DecimalString(required=True)
    price_id = fields.String(allow_none=True)
    period_start = fields.Date(allow_none=True)
    period_end = fields.Date(allow_none=True)


class StatusSpanOut(Schema):
    status = fields.String(required=True)
    valid_from = fields.Date(required=True)
    valid_to = fields.Date(allow_none=True)
    recorded_at = fields.AwareDateTime(required=True)
    source = fields.String(required=True)


class InvoiceDetailOut(Schema):
    invoice = fields.Nested(InvoiceRowOut, required=True)
    lines = fields.List(fields.Nested(InvoiceLineOut), required=True)
    history = fields.List(fields.Nested(StatusSpanOut), required=True)


class EntityOut(EntitySchema):
    """An entity as the explanation shows it, with its contacts and registration."""

    emails = fields.List(fields.String(), required=True)
    registered_at = fields.AwareDateTime(required=True)


class EntityListOut(Schema):
    entities = fields.List(fields.Nested(EntityOut), required=True)


class CallOut(Schema):
    call_id = fields.String(required=True)
    day = fields.Date(required=True)
    started_at = fields.AwareDateTime(required=True)
    duration_seconds = fields.Integer(required=True)
    source = fields.String(required=True)


class CallPageOut(Schema):
    entity_id = fields.String(required=True)
    calls = fields.List(fields.Nested(CallOut), required=True)
    next_cursor = fields.String(
        allow_none=True, metadata={"description": "Pass as `after` for the next page."}
    )


class DocumentOut(Schema):
    openapi = fields.String(required=True)
    info = fields.Dict(required=True)
    paths = fields.Dict(required=True)
    components = fields.Dict(required=True)
