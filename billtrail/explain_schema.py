"""The JSON document of an explanation (`billtrail explain --json`, the invoice
page's "why this charge", the API): a marshmallow schema over
`ledger.explain.domain.Explanation`. Stable: fields are only ever added; a change
that removes or retypes one bumps `schema_version`.

Conventions: amounts and unit prices are decimal strings in major units of the
invoice's currency (`"12.50"`, `"0.0125"`), never floats; days are ISO dates
(`"2026-01-31"`); instants are ISO 8601 with their UTC offset. A period's
`*_end` is exclusive, as everywhere in billtrail (the last day billed is the day
before). Counts of calls are integers.

The document:

- `schema_version` (1), `as_of` (the instant the answer is as of),
  `issued_at` (when the ledger recorded the invoice as issued; null for a draft),
  `ok` (nothing flagged), `net_total` (total less credit notes in force).
- `invoice`: `number`, `stripe_id`, `entity_id`, `period_start`, `period_end`,
  `status`, `currency`, `issue_date`, `due_date`, `subtotal`, `tax`, `total`,
  `credited`, `amount_paid`, `replaces`, `replaced_by`.
- `entity` as recorded at issue: `entity_id`, `name`, `kind`, `timezone`,
  `stripe_customer_id`, `archived`.
- `days`, one per local day of the period: `date`, `calls` (as of), `calls_at_issue`,
  `late_calls`, `duplicates`, `pushed`, `pushed_at_issue`, `rate` and
  `rate_recorded_at` (the version in force that day as known as of), `rate_version`,
  `rate_at_issue`, `rate_corrected_after_issue`.
- `rates`: each rate version named by a day: `version`, `unit_price`, `currency`,
  `effective_from`, `recorded_at`, `reason`, `source`, `recorded_after_issue`.
- `usage_pushed`: `date`, `quantity`, `identifier`, `kind` (report or correction),
  `reported_at`, `source`, `after_issue`.
- `lines`: `line_id`, `kind` (usage, fee, adjustment, tax), `description`,
  `quantity`, `unit_amount` (null without a unit price), `amount`,
  `computed_amount` (quantity x unit price rounded as Stripe rounds),
  `arithmetic_ok`, `price_id`, `period_start`, `period_end`; usage lines also
  `calls_at_issue`, `calls`, `pushed_at_issue`, `contracted_amount`.
- `fees`: the contracted fixed fees in force in the period.
- `credit_notes`: `credit_note_id`, `number`, `amount`, `reason`, `memo`,
  `evidence`, `recorded_at`, `voided`.
- `timeline`: `event`, `status` (after it), `recorded_at`, `effective_at`,
  `detail`, `source`.
- `flags`: `code` (see ledger.explain.domain.FlagCode), `message` (a plain
  sentence), `line_id`, `days`.
- `source` objects: `kind`, `id`, `actor`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from marshmallow import Schema, ValidationError, fields

from ledger.explain.domain import Explanation

SCHEMA_VERSION = 1


class DecimalString(fields.Field[Decimal]):
    """A Decimal as a plain decimal string ("0.0125", never "1.25E-2")."""

    def _serialize(self, value: Decimal | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else format(value, "f")

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if not isinstance(value, str):
            raise ValidationError("a decimal string is required")
        try:
            parsed = Decimal(value)
        except InvalidOperation as exc:
            raise ValidationError(f"not a decimal number: {value!r}") from exc
        if not parsed.is_finite():
            raise ValidationError(f"not a finite number: {value!r}")
        return parsed


class SourceSchema(Schema):
    kind = fields.String(required=True)
    id = fields.String(required=True)
    actor = fields.String(allow_none=True)


class InvoiceSchema(Schema):
    number = fields.String(allow_none=True)
    stripe_id = fields.String(required=True)
    entity_id = fields.String(required=True)
    period_start = fields.Date(attribute="period.start", required=True)
    period_end = fields.Date(attribute="period.end", required=True)
    status = fields.String(required=True)
    currency = fields.String(required=True)
    issue_date = fields.Date(allow_none=True)
    due_date = fields.Date(allow_none=True)
    subtotal = DecimalString(required=True)
    tax = DecimalString(required=True)
    total = DecimalString(required=True)
    credited = DecimalString(required=True)
    amount_paid = DecimalString(required=True)
    replaces = fields.String(allow_none=True)
    replaced_by = fields.String(allow_none=True)


class EntitySchema(Schema):
    entity_id = fields.String(required=True)
    name = fields.String(required=True)
    kind = fields.String(required=True)
    timezone = fields.String(required=True)
    stripe_customer_id = fields.String(allow_none=True)
    archived = fields.Boolean(required=True)


class DaySchema(Schema):
    date = fields.Date(attribute="day", required=True)
    calls = fields.Integer(required=True)
    calls_at_issue = fields.Integer(required=True)
    late_calls = fields.Integer(required=True)
    duplicates = fields.Integer(required=True)
    pushed = fields.Integer(required=True)
    pushed_at_issue = fields.Integer(required=True)
    rate = DecimalString(attribute="rate.unit_price", allow_none=True, dump_default=None)
    rate_version = fields.Integer(attribute="rate.version", allow_none=True, dump_default=None)
    rate_recorded_at = fields.AwareDateTime(
        attribute="rate.recorded_at", allow_none=True, dump_default=None
    )
    rate_at_issue = DecimalString(
        attribute="rate_at_issue.unit_price", allow_none=True, dump_default=None
    )
    rate_corrected_after_issue = fields.Boolean(required=True)


class RateSchema(Schema):
    version = fields.Integer(required=True)
    unit_price = DecimalString(required=True)
    currency = fields.String(required=True)
    effective_from = fields.Date(required=True)
    recorded_at = fields.AwareDateTime(required=True)
    reason = fields.String(required=True)
    source = fields.Nested(SourceSchema, required=True)
    recorded_after_issue = fields.Boolean(required=True)


class PushSchema(Schema):
    date = fields.Date(attribute="day", required=True)
    quantity = fields.Integer(required=True)
    identifier = fields.String(required=True)
    kind = fields.String(required=True)
    reported_at = fields.AwareDateTime(required=True)
    source = fields.Nested(SourceSchema, required=True)
    after_issue = fields.Boolean(required=True)


class LineSchema(Schema):
    line_id = fields.String(required=True)
    kind = fields.String(required=True)
    description = fields.String(required=True)
    quantity = DecimalString(required=True)
    unit_amount = DecimalString(allow_none=True)
    amount = DecimalString(required=True)
    computed_amount = DecimalString(allow_none=True)
    arithmetic_ok = fields.Boolean(required=True)
    price_id = fields.String(allow_none=True)
    period_start = fields.Date(attribute="period.start", allow_none=True, dump_default=None)
    period_end = fields.Date(attribute="period.end", allow_none=True, dump_default=None)
    calls_at_issue = fields.Integer(allow_none=True)
    calls = fields.Integer(allow_none=True)
    pushed_at_issue = fields.Integer(allow_none=True)
    contracted_amount = DecimalString(allow_none=True)


class FeeSchema(Schema):
    fee_id = fields.String(required=True)
    kind = fields.String(required=True)
    description = fields.String(required=True)
    amount = DecimalString(required=True)
    effective_from = fields.Date(required=True)
    effective_until = fields.Date(allow_none=True)
    recorded_at = fields.AwareDateTime(required=True)
    source = fields.Nested(SourceSchema, required=True)


class CreditNoteSchema(Schema):
    credit_note_id = fields.String(required=True)
    number = fields.String(required=True)
    amount = DecimalString(required=True)
    reason = fields.String(required=True)
    memo = fields.String(required=True)
    evidence = fields.List(fields.String(), required=True)
    recorded_at = fields.AwareDateTime(required=True)
    voided = fields.Boolean(required=True)


class TimelineSchema(Schema):
    event = fields.String(required=True)
    status = fields.String(required=True)
    recorded_at = fields.AwareDateTime(required=True)
    effective_at = fields.AwareDateTime(allow_none=True)
    detail = fields.String(required=True)
    source = fields.Nested(SourceSchema, required=True)


class FlagSchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    line_id = fields.String(allow_none=True)
    days = fields.List(fields.Date(), required=True)


class ExplanationSchema(Schema):
    """Dumps an `Explanation`; loads (validates) the document it dumps."""

    schema_version = fields.Constant(SCHEMA_VERSION)
    as_of = fields.AwareDateTime(required=True)
    issued_at = fields.AwareDateTime(allow_none=True)
    ok = fields.Boolean(required=True)
    net_total = DecimalString(attribute="invoice.net_total", required=True)
    invoice = fields.Nested(InvoiceSchema, required=True)
    entity = fields.Nested(EntitySchema, required=True)
    days = fields.List(fields.Nested(DaySchema), required=True)
    rates = fields.List(fields.Nested(RateSchema), required=True)
    usage_pushed = fields.List(fields.Nested(PushSchema), required=True)
    lines = fields.List(fields.Nested(LineSchema), required=True)
    fees = fields.List(fields.Nested(FeeSchema), required=True)
    credit_notes = fields.List(fields.Nested(CreditNoteSchema), required=True)
    timeline = fields.List(fields.Nested(TimelineSchema), required=True)
    flags = fields.List(fields.Nested(FlagSchema), required=True)


def explanation_document(x: Explanation) -> dict[str, Any]:
    """The JSON-ready document of an explanation."""
    document: dict[str, Any] = ExplanationSchema().dump(x)
    return document
