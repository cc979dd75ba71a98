"""An admin's actions on an invoice: issue a credit, void, void and regenerate at a
corrected rate, mark uncollectible. Each is a correction of the Stripe adapter
(`adapters.stripe.outbound.corrections`): recorded in the ledger with its reason
and actor (the admin's email), sent to Stripe once, and what Stripe then reports
recorded in the ledger.

Every action takes two POSTs: the first (no `confirm`) restates what will happen
and asks; the second (`confirm=yes`, the same fields) does it. After it, the result
page shows the invoice as the ledger has it: the adapter records what Stripe
answered at once; when it has not (yet), the page says it is waiting for Stripe.
A refusal (by the ledger's rules or by Stripe) or Stripe not answering is a flash
message on the invoice; the correction can be run again and resumes where it
stopped, with the same idempotency keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import stripe
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from marshmallow import Schema, fields, pre_load, validate

from adapters.stripe.outbound.corrections import (
    CorrectionResult,
    RateRevision,
    correct_wrong_rate,
    issue_credit,
    void_invoice,
    write_off,
)
from adapters.stripe.outbound.outbox import OutboundError, Outbox
from ledger.app import Ledger
from ledger.errors import LedgerError
from ledger.invoices.domain import CreditNote, Invoice
from ledger.sources import Source, SourceKind
from ledger.stripe_outbox.domain import Correction, CorrectionKind
from projections.invoices import InvoiceRow
from web.admin import blueprint
from web.formatting import money
from web.receipts import visible_invoice
from web.services import services
from web.validation import load

MAX_AMOUNT = Decimal("1000000")


class ActionForm(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))
    confirm = fields.String(load_default="", validate=validate.OneOf(["", "yes"]))

    @pre_load
    def strip(self, data: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}


class CreditForm(ActionForm):
    amount = fields.Decimal(
        required=True,
        validate=validate.Range(min=Decimal(0), max=MAX_AMOUNT, min_inclusive=False),
    )


class RegenerateForm(ActionForm):
    unit_price = fields.Decimal(
        required=True,
        validate=validate.Range(min=Decimal(0), max=MAX_AMOUNT, min_inclusive=False),
    )
    effective_from = fields.Date(required=True)


@dataclass(frozen=True)
class Action:
    name: str
    label: str  # the button: "Void invoice"
    schema: type[ActionForm]
    run: Callable[[Outbox, str, dict[str, Any], str], CorrectionResult]
    restate: Callable[[InvoiceRow, dict[str, Any]], str]


def _credit(outbox: Outbox, ref: str, form: dict[str, Any], actor: str) -> CorrectionResult:
    return issue_credit(outbox, ref, form["amount"], reason=form["reason"], actor=actor)


def _void(outbox: Outbox, ref: str, form: dict[str, Any], actor: str) -> CorrectionResult:
    return void_invoice(outbox, ref, reason=form["reason"], actor=actor)


def _regenerate(outbox: Outbox, ref: str, form: dict[str, Any], actor: str) -> CorrectionResult:
    revision = RateRevision(form["unit_price"], form["effective_from"])
    return correct_wrong_rate(outbox, ref, reason=form["reason"], actor=actor, revision=revision)


def _uncollectible(outbox: Outbox, ref: str, form: dict[str, Any], actor: str) -> CorrectionResult:
    return write_off(outbox, ref, reason=form["reason"], actor=actor)


def _name(row: InvoiceRow) -> str:
    return row.number or row.stripe_id


ACTIONS = {
    a.name: a
    for a in (
        Action(
            "credit",
            "Issue credit",
            CreditForm,
            _credit,
            lambda row, f: (
                f"Issue a credit note of {money(f['amount'], row.currency)} on invoice "
                f"{_name(row)} ({row.entity_name}) in Stripe. On an open invoice it lowers "
                "the amount due; on a paid one it goes to the customer's balance."
            ),
        ),
        Action(
            "void",
            "Void invoice",
            ActionForm,
            _void,
            lambda row, f: (
                f"Void invoice {_name(row)} ({row.entity_name}, "
                f"{money(row.total, row.currency)}) in Stripe. Nothing will be owed on it "
                "and nothing replaces it. This cannot be undone."
            ),
        ),
        Action(
            "regenerate",
            "Void and regenerate",
            RegenerateForm,
            _regenerate,
            lambda row, f: (
                f"Revise {row.entity_name}'s price per call to "
                f"{money(f['unit_price'], row.currency)} from {f['effective_from']}, void "
                f"invoice {_name(row)} in Stripe, and issue a replacement for the same period "
                "from the recorded calls at the rates then in force."
            ),
        ),
        Action(
            "uncollectible",
            "Mark uncollectible",
            ActionForm,
            _uncollectible,
            lambda row, f: (
                f"Mark invoice {_name(row)} ({row.entity_name}, "
                f"{money(row.total, row.currency)}) uncollectible in Stripe: written off, "
                "though Stripe still accepts a payment of it."
            ),
        ),
    )
}

# The fields each form carries from the first POST to the confirming one.
FIELDS = {name: [f for f in a.schema().fields if f != "confirm"] for name, a in ACTIONS.items()}


@blueprint.context_processor
def action_context() -> dict[str, Any]:
    return {"stripe_configured": services().stripe is not None, "invoice_url": invoice_url}


@blueprint.post("/invoices/<number>/actions/<action>")
def invoice_action(number: str, action: str) -> Any:
    chosen = ACTIONS.get(action)
    if chosen is None:
        abort(404, description=f"No action {action}.")
    form = load(chosen.schema(), request.form)
    row = visible_invoice(number)
    client = services().stripe
    if client is None:
        abort(503, description="Stripe is not configured: invoice actions need STRIPE_API_KEY.")
    if form["confirm"] != "yes":
        return render_template(
            "admin/confirm_action.html",
            action=chosen,
            row=row,
            what=chosen.restate(row, form),
            values={f: form[f] for f in FIELDS[action]},
        )
    actor = current_user.email
    outbox = Outbox(services().ledger, client, Source(SourceKind.ADMIN, f"web/{action}", actor))
    try:
        result = chosen.run(outbox, row.stripe_id, form, actor)
    except (LedgerError, OutboundError, stripe.StripeError) as exc:
        flash(f"{chosen.label} on {_name(row)} was not done: {_why(exc)}", "error")
        return redirect(invoice_url(number))
    done = "was already done" if result.already_done else "is done"
    flash(f"{chosen.label} on {_name(row)} {done}.")
    return redirect(url_for("admin.action_result", number=number, correction=result.correction_id))


def invoice_url(ref: str) -> str:
    """The invoice's detail page, by its stable address (the page is another
    module's; its endpoint name is not this module's business)."""
    return f"{url_for('admin.invoices')}/{quote(ref, safe='')}"


def _why(exc: Exception) -> str:
    if isinstance(exc, stripe.StripeError):
        return f"Stripe answered: {exc.user_message or exc}. Nothing more was sent; try again."
    return str(exc)


class ResultArgs(Schema):
    correction = fields.String(required=True, validate=validate.Length(min=1, max=300))


@dataclass(frozen=True)
class Outcome:
    """A correction and what the ledger has recorded of Stripe's answer."""

    correction: Correction
    invoice: Invoice
    replacement: Invoice | None
    credit_note: CreditNote | None

    @property
    def expected(self) -> str | None:
        return {
            CorrectionKind.VOID: "void",
            CorrectionKind.WRONG_RATE: "void",
            CorrectionKind.WRITE_OFF: "uncollectible",
        }.get(CorrectionKind(self.correction.kind))

    @property
    def waiting(self) -> bool:
        """Stripe's answer is not in the ledger yet (the correction is unfinished,
        or the event that records it has not arrived)."""
        kind = self.correction.kind
        return (
            not self.correction.completed
            or (self.expected is not None and self.invoice.status.value != self.expected)
            or (kind == CorrectionKind.WRONG_RATE and self.replacement is None)
            or (kind == CorrectionKind.CREDIT and self.credit_note is None)
        )


def outcome_of(ledger: Ledger, correction_id: str, stripe_id: str) -> Outcome | None:
    correction = ledger.correction(correction_id)
    if correction is None or correction.invoice != stripe_id:
        return None
    invoice = ledger.invoice(stripe_id)
    replacement = None
    if (replacement_id := correction.results.get("replacement")) is not None:
        try:
            replacement = ledger.invoice(replacement_id)
        except LedgerError:
            replacement = None  # not recorded yet
    note = invoice.credit_notes.get(correction.results.get("credit_note", ""))
    return Outcome(correction, invoice, replacement, note)


@blueprint.get("/invoices/<number>/actions/result")
def action_result(number: str) -> str:
    args = load(ResultArgs(), request.args)
    row = visible_invoice(number)
    outcome = outcome_of(services().ledger, args["correction"], row.stripe_id)
    if outcome is None:
        abort(404, description=f"No correction {args['correction']} of invoice {number}.")
    return render_template("admin/confirm_action.html", row=row, outcome=outcome)
