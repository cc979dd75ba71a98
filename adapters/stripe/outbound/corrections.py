"""An admin's corrections of an invoice, as application commands. Each takes a
reason and an actor, is recorded in the ledger (`Correction`) with the facts it acts
on before anything is sent to Stripe, and can be run again after a crash: it
resumes at the first step Stripe has not answered, with the same keys, and a
correction already completed changes nothing.

- `correct_wrong_rate`: revise the rate (when a revision is given), void the wrong
  invoice and regenerate a replacement for the same entity and period from the
  ledger's calls at the rates now in force (invoice items, then finalize); the two
  are linked in the ledger (replaces / replaced by).
- `credit_duplicate_calls`: a credit note for calls counted twice, priced as they
  were invoiced, with the duplicate call ids as its evidence.
- `issue_credit`: a credit (an adjustment in billtrail) as a Stripe credit note.
- `write_off`: mark an open invoice uncollectible.
- `void_invoice`: void an open or uncollectible invoice, replacing it with nothing.

Keys: `billtrail/correction/<correction id>/<step>`; the correction id is derived
from the invoice and the correction's facts, so the same command with the same
arguments is the same correction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeVar, cast
from zoneinfo import ZoneInfo

import stripe
from stripe import RequestOptions
from stripe.params import (
    CreditNoteCreateParams,
    CreditNoteCreateParamsLine,
    InvoiceCreateParams,
    InvoiceFinalizeInvoiceParams,
    InvoiceItemCreateParams,
    InvoiceMarkUncollectibleParams,
    InvoiceVoidInvoiceParams,
)

from adapters.stripe.outbound.catalog import (
    ENTITY_METADATA_KEY,
    KIND_METADATA_KEY,
    ensure_calls_product,
    minor_unit_price,
)
from adapters.stripe.outbound.invoice_pull import (
    EVIDENCE_METADATA_KEY,
    evidence_metadata,
    observe_invoices,
)
from adapters.stripe.outbound.outbox import OutboundError, Outbox
from ledger.errors import LedgerError
from ledger.invoices.domain import Invoice, Status
from ledger.money import Money, line_amount, parse_decimal
from ledger.sources import Source, SourceKind
from ledger.stripe_outbox.domain import Correction, CorrectionKind
from ledger.values import LineKind, Period

P = TypeVar("P")

CORRECTION_METADATA_KEY = "billtrail_correction"
REPLACES_METADATA_KEY = "billtrail_replaces"


class CorrectionRefused(LedgerError):
    """The correction cannot be made as asked (the message says why); nothing was
    sent to Stripe."""


@dataclass(frozen=True)
class RateRevision:
    """The corrected per-call price and the day it applies from."""

    unit_price: Decimal
    effective_from: date


@dataclass(frozen=True)
class CorrectionResult:
    correction_id: str
    kind: str
    invoice: str
    results: dict[str, Any]
    already_done: bool


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _source(correction_id: str, actor: str) -> Source:
    if not actor.strip():
        raise CorrectionRefused("a correction needs an actor")
    return Source(SourceKind.ADMIN, correction_id, actor.strip())


def _key(correction_id: str, step: str) -> str:
    return f"billtrail/correction/{correction_id}/{step}"


def _done(correction: Correction) -> CorrectionResult:
    return CorrectionResult(
        correction.correction_id,
        correction.kind,
        correction.invoice,
        dict(correction.results),
        already_done=True,
    )


def _stripe_status(outbox: Outbox, stripe_id: str) -> str:
    return str(outbox.client.v1.invoices.retrieve(stripe_id).status or "draft")


def _local_midnight(day: date, zone: ZoneInfo) -> int:
    return int(datetime.combine(day, time(0), zone).timestamp())


# Wrong rate ----------------------------------------------------------------------------


def correct_wrong_rate(
    outbox: Outbox,
    invoice_ref: str,
    *,
    reason: str,
    actor: str,
    revision: RateRevision | None = None,
) -> CorrectionResult:
    ledger = outbox.ledger
    invoice = ledger.find_invoice(invoice_ref)
    correction_id = f"wrong-rate/{invoice.stripe_id}"
    outbox = outbox.with_source(_source(correction_id, actor))
    existing = ledger.correction(correction_id)
    if existing is not None and existing.completed:
        return _done(existing)
    if existing is None:
        if invoice.status not in (Status.OPEN, Status.PAST_DUE, Status.UNCOLLECTIBLE):
            raise CorrectionRefused(
                f"invoice {invoice.number or invoice.stripe_id} is {invoice.status.label}; only "
                "an open or uncollectible invoice can be voided and replaced"
                + (" (issue a credit note for a paid one)" if invoice.status is Status.PAID else "")
            )
        if revision is not None:
            rate = ledger.rate(invoice.entity_id)
            ledger.set_rate(
                invoice.entity_id,
                revision.unit_price,
                rate.currency,
                revision.effective_from,
                reason,
                outbox.source,
            )
        details = _replacement_plan(outbox, invoice)
        if revision is not None:
            details["revision"] = {
                "unit_price": revision.unit_price,
                "effective_from": revision.effective_from,
            }
    else:
        details = existing.details
    correction = ledger.open_correction(
        correction_id,
        CorrectionKind.WRONG_RATE,
        invoice.stripe_id,
        invoice.entity_id,
        reason,
        details,
        outbox.source,
    )
    return _replace(outbox, invoice, correction)


def _replacement_plan(outbox: Outbox, invoice: Invoice) -> dict[str, Any]:
    """What the replacement bills: the usage of each usage line's period, counted
    from the ledger's calls and priced at the rate version in force on each day,
    and every other line (fees, adjustments) as it was."""
    ledger = outbox.ledger
    entity = ledger.entity(invoice.entity_id)
    rate = ledger.rate(invoice.entity_id)
    zone = ZoneInfo(entity.timezone)
    items: list[dict[str, Any]] = []
    for line in invoice.lines:
        if line.kind == LineKind.TAX:
            raise CorrectionRefused(
                f"invoice {invoice.number or invoice.stripe_id} has tax lines; "
                "regenerating taxed invoices is not supported"
            )
        if line.kind != LineKind.USAGE:
            period = line.period
            items.append(
                {
                    "kind": line.kind,
                    "description": line.description,
                    "amount": Money(line.amount, invoice.currency).to_minor(),
                    "start": _local_midnight(period.start, zone) if period else None,
                    "end": _local_midnight(period.end, zone) if period else None,
                }
            )
            continue
        period = line.period or invoice.period
        per_version: dict[int, tuple[int, list[date]]] = {}
        for day in period.days():
            version = rate.version_on(day)
            usage = ledger.usage(invoice.entity_id, day)
            if version is None or usage is None or usage.calls == 0:
                continue
            count, days = per_version.get(version.version, (0, []))
            per_version[version.version] = (count + usage.calls, [*days, day])
        for number, (count, days) in sorted(per_version.items()):
            version = rate.versions[number - 1]
            span = Period(min(days), max(days) + timedelta(days=1))
            items.append(
                {
                    "kind": LineKind.USAGE.value,
                    "description": (
                        f"Calls {span} at {version.unit_price} {invoice.currency.upper()} "
                        f"(rate version {version.version})"
                    ),
                    "quantity": count,
                    "unit_amount_decimal": minor_unit_price(version.unit_price, invoice.currency),
                    "version": version.version,
                    "start": _local_midnight(span.start, zone),
                    "end": _local_midnight(span.end, zone),
                }
            )
    stripe_invoice = outbox.client.v1.invoices.retrieve(invoice.stripe_id)
    return {
        "replaces": invoice.stripe_id,
        "number": invoice.number,
        "currency": invoice.currency,
        "collection_method": stripe_invoice.collection_method,
        "days_until_due": (
            _days_until_due(invoice) if stripe_invoice.collection_method == "send_invoice" else None
        ),
        "items": items,
    }


def _days_until_due(invoice: Invoice) -> int:
    if invoice.due_date is not None and invoice.issue_date is not None:
        return max((invoice.due_date - invoice.issue_date).days, 0)
    return 30


def _replace(outbox: Outbox, invoice: Invoice, correction: Correction) -> CorrectionResult:
    ledger = outbox.ledger
    client = outbox.client
    plan = correction.details
    entity = ledger.entity(invoice.entity_id)
    customer = entity.stripe_customer_id
    if customer is None:
        raise CorrectionRefused(f"{entity.entity_id} has no Stripe customer")
    cid = correction.correction_id
    product = (
        ensure_calls_product(outbox)
        if any(item["kind"] == LineKind.USAGE for item in plan["items"])
        else None
    )
    method = cast(Literal["charge_automatically", "send_invoice"], plan["collection_method"])
    replaced_name = plan["number"] or plan["replaces"]
    create: InvoiceCreateParams = {
        "customer": customer,
        "currency": plan["currency"],
        "collection_method": method,
        "auto_advance": False,
        "pending_invoice_items_behavior": "exclude",
        "description": f"Replaces invoice {replaced_name}: {correction.reason}",
        "metadata": {
            ENTITY_METADATA_KEY: invoice.entity_id,
            REPLACES_METADATA_KEY: plan["replaces"],
            CORRECTION_METADATA_KEY: cid,
        },
    }
    if plan["days_until_due"] is not None:
        create["days_until_due"] = int(plan["days_until_due"])
    replacement = outbox.call(
        _key(cid, "invoice"), "invoices.create", create, client.v1.invoices.create
    ).object_id
    if replacement is None:
        raise OutboundError("Stripe answered without the id of the replacement invoice")
    for i, item in enumerate(plan["items"]):
        params = _item_params(item, customer, replacement, plan["currency"], product)
        outbox.call(
            _key(cid, f"item/{i + 1}"),
            "invoice_items.create",
            params,
            client.v1.invoice_items.create,
        )
    _void(outbox, cid, plan["replaces"])

    def finalize(params: InvoiceFinalizeInvoiceParams, options: RequestOptions) -> stripe.Invoice:
        return client.v1.invoices.finalize_invoice(replacement, params, options)

    outbox.call(
        _key(cid, "finalize"),
        "invoices.finalize_invoice",
        InvoiceFinalizeInvoiceParams(auto_advance=method == "charge_automatically"),
        finalize,
        target=replacement,
    )
    observe_invoices(client, ledger, outbox.source, [plan["replaces"], replacement])
    ledger.link_replacement(plan["replaces"], replacement, correction.reason, outbox.source)
    results = {"voided": plan["replaces"], "replacement": replacement}
    ledger.complete_correction(cid, results, outbox.source)
    return CorrectionResult(cid, correction.kind, invoice.stripe_id, results, already_done=False)


def _item_params(
    item: dict[str, Any], customer: str, invoice: str, currency: str, product: str | None
) -> InvoiceItemCreateParams:
    params: InvoiceItemCreateParams = {
        "customer": customer,
        "invoice": invoice,
        "currency": currency,
        "description": str(item["description"]),
        "metadata": {KIND_METADATA_KEY: str(item["kind"])},
    }
    if item.get("start") is not None and item.get("end") is not None:
        params["period"] = {"start": int(item["start"]), "end": int(item["end"])}
    if item["kind"] == LineKind.USAGE:
        assert product is not None
        params["quantity"] = int(item["quantity"])
        params["price_data"] = {
            "currency": currency,
            "product": product,
            "unit_amount_decimal": Decimal(item["unit_amount_decimal"]),
        }
    else:
        params["amount"] = int(item["amount"])
    return params


def _void(outbox: Outbox, correction_id: str, stripe_id: str) -> None:
    client = outbox.client

    def void(params: InvoiceVoidInvoiceParams, options: RequestOptions) -> stripe.Invoice:
        return client.v1.invoices.void_invoice(stripe_id, params, options)

    _transition(
        outbox, _key(correction_id, "void"), "invoices.void_invoice", stripe_id, void, "void"
    )


def _mark_uncollectible(outbox: Outbox, correction_id: str, stripe_id: str) -> None:
    client = outbox.client

    def mark(params: InvoiceMarkUncollectibleParams, options: RequestOptions) -> stripe.Invoice:
        return client.v1.invoices.mark_uncollectible(stripe_id, params, options)

    _transition(
        outbox,
        _key(correction_id, "mark_uncollectible"),
        "invoices.mark_uncollectible",
        stripe_id,
        mark,
        "uncollectible",
    )


def _transition(
    outbox: Outbox,
    key: str,
    operation: str,
    stripe_id: str,
    post: Callable[[P, RequestOptions], stripe.Invoice],
    reached: str,
) -> None:
    """Move invoice `stripe_id` to status `reached` once. Stripe refusing it
    because the invoice is there already (the first answer was lost and the key
    forgotten) counts as done."""
    request = outbox.prepare(key, operation, {}, stripe_id)
    if request.answered:
        return
    obj = outbox.send(
        request, post, done_already=lambda _e: _stripe_status(outbox, stripe_id) == reached
    )
    outbox.answer(request, stripe_id, replayed=obj is None)


# Credit notes ---------------------------------------------------------------------------


def credit_duplicate_calls(
    outbox: Outbox,
    invoice_ref: str,
    call_ids: Sequence[str],
    *,
    reason: str,
    actor: str,
) -> CorrectionResult:
    ledger = outbox.ledger
    invoice = ledger.find_invoice(invoice_ref)
    ids = sorted({c.strip() for c in call_ids if c.strip()})
    if not ids:
        raise CorrectionRefused("name the duplicate calls (their call ids are the evidence)")
    correction_id = f"duplicates/{invoice.stripe_id}/{_digest(*ids)}"
    outbox = outbox.with_source(_source(correction_id, actor))
    existing = ledger.correction(correction_id)
    if existing is not None and existing.completed:
        return _done(existing)
    if existing is None:
        lines = _duplicate_lines(outbox, invoice, ids)
        details = {"call_ids": ids, "lines": lines, **_allocation(outbox, invoice, lines)}
    else:
        details = existing.details
    correction = ledger.open_correction(
        correction_id,
        CorrectionKind.DUPLICATE_CALLS,
        invoice.stripe_id,
        invoice.entity_id,
        reason,
        details,
        outbox.source,
    )
    return _credit(outbox, invoice, correction, stripe_reason="duplicate")


def _duplicate_lines(outbox: Outbox, invoice: Invoice, ids: list[str]) -> list[dict[str, Any]]:
    """The credit, per usage line of the invoice: the duplicates that fall in its
    period, at the unit price that line billed."""
    ledger = outbox.ledger
    zone = ZoneInfo(ledger.entity(invoice.entity_id).timezone)
    usage_lines = [li for li in invoice.lines if li.kind == LineKind.USAGE]
    if not usage_lines:
        raise CorrectionRefused(
            f"invoice {invoice.number or invoice.stripe_id} has no usage line to credit"
        )
    known = ledger.recorded_calls(ids)
    counts: dict[int, int] = {}
    for call_id in ids:
        call = known.get(call_id)
        if call is None:
            raise CorrectionRefused(f"call {call_id} was never counted by the ledger")
        if call.entity_id != invoice.entity_id:
            raise CorrectionRefused(
                f"call {call_id} is {call.entity_id}'s, not {invoice.entity_id}'s"
            )
        day = call.started_at.astimezone(zone).date()
        index = next(
            (i for i, li in enumerate(usage_lines) if day in (li.period or invoice.period)),
            None,
        )
        if index is None:
            raise CorrectionRefused(
                f"call {call_id} ({day}) is not in the period invoice "
                f"{invoice.number or invoice.stripe_id} billed"
            )
        counts[index] = counts.get(index, 0) + 1
    lines = []
    for index, count in sorted(counts.items()):
        line = usage_lines[index]
        if line.unit_amount is None:
            raise CorrectionRefused(f"invoice line {line.line_id} has no unit price to credit at")
        if count > line.quantity:
            raise CorrectionRefused(
                f"{count} duplicates exceed the {line.quantity} calls line {line.line_id} billed"
            )
        amount = line_amount(count, Money(line.unit_amount, invoice.currency))
        lines.append(
            {
                "description": f"{count} duplicate calls ({line.description})",
                "quantity": count,
                "unit_amount_decimal": minor_unit_price(line.unit_amount, invoice.currency),
                "amount": amount.to_minor(),
            }
        )
    return lines


def issue_credit(
    outbox: Outbox,
    invoice_ref: str,
    amount: Decimal | str,
    *,
    reason: str,
    actor: str,
) -> CorrectionResult:
    """A credit decided in billtrail (an adjustment) as a Stripe credit note."""
    ledger = outbox.ledger
    invoice = ledger.find_invoice(invoice_ref)
    credit = Money(parse_decimal(amount, "credit amount"), invoice.currency)
    if credit.amount <= 0:
        raise CorrectionRefused(f"a credit must be positive, not {credit}")
    minor = credit.to_minor()
    correction_id = f"credit/{invoice.stripe_id}/{_digest(str(minor), reason.strip())}"
    outbox = outbox.with_source(_source(correction_id, actor))
    existing = ledger.correction(correction_id)
    if existing is not None and existing.completed:
        return _done(existing)
    if existing is None:
        lines = [{"description": f"Credit: {reason.strip()}", "quantity": 1, "amount": minor}]
        details = {"call_ids": [], "lines": lines, **_allocation(outbox, invoice, lines)}
    else:
        details = existing.details
    correction = ledger.open_correction(
        correction_id,
        CorrectionKind.CREDIT,
        invoice.stripe_id,
        invoice.entity_id,
        reason,
        details,
        outbox.source,
    )
    return _credit(outbox, invoice, correction, stripe_reason="order_change")


def _allocation(outbox: Outbox, invoice: Invoice, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the credit goes: on an open invoice it lowers the amount due; a paid
    one's credit goes to the customer's balance, which the next invoice uses."""
    status = _stripe_status(outbox, invoice.stripe_id)
    if status not in ("open", "paid"):
        raise CorrectionRefused(
            f"invoice {invoice.number or invoice.stripe_id} is {status} in Stripe; only an open "
            "or paid invoice takes a credit note"
        )
    total = sum(int(li["amount"]) for li in lines)
    return {"credit_amount": total if status == "paid" else None}


StripeCreditReason = Literal["duplicate", "fraudulent", "order_change", "product_unsatisfactory"]


def _credit(
    outbox: Outbox,
    invoice: Invoice,
    correction: Correction,
    *,
    stripe_reason: StripeCreditReason,
) -> CorrectionResult:
    client = outbox.client
    plan = correction.details
    lines: list[CreditNoteCreateParamsLine] = []
    for line in plan["lines"]:
        entry: CreditNoteCreateParamsLine = {
            "type": "custom_line_item",
            "description": str(line["description"]),
            "quantity": int(line["quantity"]),
        }
        if "unit_amount_decimal" in line:
            entry["unit_amount_decimal"] = Decimal(line["unit_amount_decimal"])
        else:
            entry["unit_amount"] = int(line["amount"])
        lines.append(entry)
    metadata = {CORRECTION_METADATA_KEY: correction.correction_id}
    if plan["call_ids"]:
        try:
            metadata[EVIDENCE_METADATA_KEY] = evidence_metadata(plan["call_ids"])
        except ValueError as exc:
            raise CorrectionRefused(str(exc)) from None
    params: CreditNoteCreateParams = {
        "invoice": invoice.stripe_id,
        "lines": lines,
        "reason": stripe_reason,
        "memo": correction.reason,
        "metadata": metadata,
    }
    if plan.get("credit_amount"):
        params["credit_amount"] = int(plan["credit_amount"])
    note = outbox.call(
        _key(correction.correction_id, "credit_note"),
        "credit_notes.create",
        params,
        client.v1.credit_notes.create,
    ).object_id
    observe_invoices(client, outbox.ledger, outbox.source, [invoice.stripe_id])
    results = {"credit_note": note}
    outbox.ledger.complete_correction(correction.correction_id, results, outbox.source)
    return CorrectionResult(
        correction.correction_id, correction.kind, invoice.stripe_id, results, already_done=False
    )


# Status changes ------------------------------------------------------------------------


def write_off(outbox: Outbox, invoice_ref: str, *, reason: str, actor: str) -> CorrectionResult:
    """Mark an open invoice uncollectible in Stripe (Stripe keeps it payable)."""
    return _status_correction(
        outbox,
        invoice_ref,
        kind=CorrectionKind.WRITE_OFF,
        allowed=(Status.OPEN, Status.PAST_DUE),
        refusal="only an open invoice can be written off",
        send=_mark_uncollectible,
        result="written_off",
        reason=reason,
        actor=actor,
    )


def void_invoice(outbox: Outbox, invoice_ref: str, *, reason: str, actor: str) -> CorrectionResult:
    """Void an open or uncollectible invoice in Stripe: nothing is owed on it any
    more, and nothing replaces it (`correct_wrong_rate` voids and replaces)."""
    return _status_correction(
        outbox,
        invoice_ref,
        kind=CorrectionKind.VOID,
        allowed=(Status.OPEN, Status.PAST_DUE, Status.UNCOLLECTIBLE),
        refusal="only an open or uncollectible invoice can be voided"
        " (issue a credit note for a paid one)",
        send=_void,
        result="voided",
        reason=reason,
        actor=actor,
    )


def _status_correction(
    outbox: Outbox,
    invoice_ref: str,
    *,
    kind: CorrectionKind,
    allowed: tuple[Status, ...],
    refusal: str,
    send: Callable[[Outbox, str, str], None],
    result: str,
    reason: str,
    actor: str,
) -> CorrectionResult:
    """Move an invoice to a status in Stripe as a correction: recorded, sent once
    (`send`), then what Stripe reports recorded in the ledger."""
    ledger = outbox.ledger
    invoice = ledger.find_invoice(invoice_ref)
    correction_id = f"{kind.value.replace('_', '-')}/{invoice.stripe_id}"
    outbox = outbox.with_source(_source(correction_id, actor))
    existing = ledger.correction(correction_id)
    if existing is not None and existing.completed:
        return _done(existing)
    if existing is None and invoice.status not in allowed:
        raise CorrectionRefused(
            f"invoice {invoice.number or invoice.stripe_id} is {invoice.status.label}; {refusal}"
        )
    correction = ledger.open_correction(
        correction_id, kind, invoice.stripe_id, invoice.entity_id, reason, {}, outbox.source
    )
    send(outbox, correction_id, invoice.stripe_id)
    observe_invoices(outbox.client, ledger, outbox.source, [invoice.stripe_id])
    results = {result: invoice.stripe_id}
    ledger.complete_correction(correction_id, results, outbox.source)
    return CorrectionResult(
        correction_id, correction.kind, invoice.stripe_id, results, already_done=False
    )
