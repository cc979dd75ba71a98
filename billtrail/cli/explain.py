"""`billtrail explain INVOICE [--as-of TIMESTAMP] [--json]`: why the customer was
charged what, from ledger events alone, as the ledger knew it at an instant.

Exit 0 when nothing is flagged, 1 when something is, 2 for a bad INVOICE or
--as-of. The text is a statement a billing admin can hand to a customer; --json
prints the document of billtrail.explain_schema (the invoice page's and the API's)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta

import click

from billtrail.cli import EXIT_PROBLEM, cli, user_errors
from billtrail.cli.ledger_commands import emit_json, open_ledger, parse_instant
from billtrail.explain_schema import explanation_document
from ledger.errors import LedgerError
from ledger.explain.application import explain
from ledger.explain.domain import (
    DayFacts,
    Explanation,
    LineFacts,
    RateFacts,
    calls,
    money,
    number_text,
    unit,
)
from ledger.sources import Source


@cli.command("explain")
@click.argument("invoice")
@click.option(
    "--as-of",
    "as_of",
    default=None,
    help="answer as the ledger knew it at this instant (ISO 8601; a bare date is its end, UTC)",
)
@click.option("--json", "as_json", is_flag=True, help="last line: the explanation as JSON")
@user_errors(LedgerError)
def explain_command(invoice: str, as_of: str | None, as_json: bool) -> None:
    """Explain INVOICE (its number or Stripe id): the entity, each day's calls and
    rate, the usage pushed, each line's arithmetic, the timeline, and every
    mismatch flagged (exit 1 when there is one)."""
    at = parse_instant(as_of, "--as-of") if as_of else None
    with open_ledger() as (_, app):
        x = explain(app, invoice, at)
    if as_json:
        emit_json(explanation_document(x))
    else:
        for line in statement(x):
            click.echo(line)
    if not x.ok:
        sys.exit(EXIT_PROBLEM)


# The statement ----------------------------------------------------------------------


def statement(x: Explanation) -> Iterator[str]:
    inv, cur = x.invoice, x.invoice.currency
    name = inv.number or f"draft {inv.stripe_id}"
    yield f"Invoice {name} ({inv.stripe_id}) for {x.entity.name}"
    yield f"As recorded at {_instant(x.as_of)}" + (
        f"; issued and recorded at {_instant(x.issued_at)}" if x.issued_at else "; not issued then"
    )
    yield ""
    customer = (
        f", Stripe customer {x.entity.stripe_customer_id}" if x.entity.stripe_customer_id else ""
    )
    yield f"Billed to   {x.entity.name} ({x.entity.kind} {x.entity.entity_id}{customer})"
    yield f"Period      {inv.period} (days in {x.entity.timezone})"
    dates = []
    if inv.issue_date:
        dates.append(f"issued {inv.issue_date}")
    if inv.due_date:
        dates.append(f"due {inv.due_date}")
    yield f"Status      {inv.status.replace('_', ' ')}" + (f", {', '.join(dates)}" if dates else "")
    if inv.replaces:
        yield f"Replaces    {inv.replaces}"
    if inv.replaced_by:
        yield f"Replaced by {inv.replaced_by}"
    yield ""
    yield from _days(x)
    yield from _rates(x)
    yield from _pushes(x)
    yield ""
    yield "Lines"
    for line in x.lines:
        yield "  " + _line(line, cur)
    yield f"  {'Subtotal':<44}{money(inv.subtotal, cur):>18}"
    yield f"  {'Tax':<44}{money(inv.tax, cur):>18}"
    yield f"  {'Total':<44}{money(inv.total, cur):>18}"
    for note in x.credit_notes:
        state = " (voided)" if note.voided else ""
        why = f": {note.reason}" if note.reason else ""
        label = f"Credit note {note.number}{why}{state}"
        yield f"  {label:<44}{money(-note.amount, cur):>18}"
    if x.credit_notes:
        yield f"  {'Total after credit notes':<44}{money(inv.net_total, cur):>18}"
    if inv.amount_paid:
        yield f"  {'Paid':<44}{money(inv.amount_paid, cur):>18}"
    if x.fees:
        yield ""
        yield "Fixed fees contracted for the period"
        for fee in x.fees:
            until = f" until {fee.effective_until}" if fee.effective_until else ""
            yield (
                f"  {fee.description} ({fee.kind}): {money(fee.amount, cur)} from "
                f"{fee.effective_from}{until}, recorded {_instant(fee.recorded_at)} "
                f"{_by(fee.source)}"
            )
    yield ""
    yield "Timeline"
    for t in x.timeline:
        status = t.status.replace("_", " ")
        when = f" (in Stripe {_instant(t.effective_at)})" if t.effective_at else ""
        yield f"  {_instant(t.recorded_at)}  {status:<13} {t.detail}{when}  [{_by(t.source)}]"
    yield ""
    if x.ok:
        yield "No mismatch found: every line is explained by the ledger."
        return
    yield f"Flagged: {len(x.flags)} mismatch" + ("es" if len(x.flags) != 1 else "")
    for flag in x.flags:
        yield f"  {flag.code}: {flag.message}"


def _line(line: LineFacts, cur: str) -> str:
    label = f"{line.description} ({line.kind})"
    if line.unit_amount is None:
        return f"{label:<44}{money(line.amount, cur):>18}"
    mark = "ok" if line.arithmetic_ok else f"should be {money(line.computed_amount, cur)}"
    text = (
        f"{label:<44}{money(line.amount, cur):>18}  = {number_text(line.quantity)} x "
        f"{unit(line.unit_amount, cur)} ({mark})"
    )
    if line.kind == "usage" and line.calls_at_issue is not None:
        text += f"; {calls(line.calls_at_issue)} recorded at issue"
        if line.calls != line.calls_at_issue:
            text += f", {calls(line.calls or 0)} now"
    return text


def _days(x: Explanation) -> Iterator[str]:
    cur = x.invoice.currency
    yield "Calls and rate per day (runs of identical days shown once)"
    yield f"  {'Day':<26}{'Calls':>9}{'Late':>7}{'Dupl.':>7}{'Pushed':>9}  Rate per call"
    for run in _runs(x.days):
        d = run[0]
        label = str(d.day) if len(run) == 1 else f"{run[0].day} to {run[-1].day} (each)"
        rate = (
            f"{unit(d.rate.unit_price, cur)} (v{d.rate.version})"
            if d.rate
            else "no rate contracted"
        )
        if d.rate_corrected_after_issue:
            was = unit(d.rate_at_issue.unit_price, cur) if d.rate_at_issue else "none"
            rate += f", corrected after issue (was {was})"
        counts = f"{d.calls:>9,}{d.late_calls:>7,}{d.duplicates:>7,}{d.pushed:>9,}"
        yield f"  {label:<26}{counts}  {rate}"
    total = sum(d.calls for d in x.days)
    yield (
        f"  {'Total':<26}{total:>9,}{sum(d.late_calls for d in x.days):>7,}"
        f"{sum(d.duplicates for d in x.days):>7,}{sum(d.pushed for d in x.days):>9,}"
    )


def _runs(days: Sequence[DayFacts]) -> Iterator[list[DayFacts]]:
    """Consecutive days alike in everything shown, as one run."""

    def key(d: DayFacts) -> tuple[object, ...]:
        return (d.calls, d.late_calls, d.duplicates, d.pushed, d.rate, d.rate_at_issue)

    run: list[DayFacts] = []
    for d in days:
        if run and (key(run[-1]) != key(d) or run[-1].day + timedelta(days=1) != d.day):
            yield run
            run = []
        run.append(d)
    if run:
        yield run


def _rates(x: Explanation) -> Iterator[str]:
    if not x.rates:
        return
    yield ""
    yield "Rate versions"
    for rate in x.rates:
        yield "  " + _rate(rate, x.invoice.currency)


def _rate(rate: RateFacts, cur: str) -> str:
    why = f': "{rate.reason}"' if rate.reason else ""
    later = " (recorded after the invoice was issued)" if rate.recorded_after_issue else ""
    return (
        f"v{rate.version}: {unit(rate.unit_price, cur)} per call from {rate.effective_from}, "
        f"recorded {_instant(rate.recorded_at)} {_by(rate.source)}{why}{later}"
    )


def _pushes(x: Explanation) -> Iterator[str]:
    yield ""
    if not x.usage_pushed:
        yield "Usage reported to Stripe: none"
        return
    yield "Usage reported to Stripe"
    for p in x.usage_pushed:
        later = " (after issue)" if p.after_issue else ""
        yield (
            f"  {p.day}  {p.quantity:>9,}  {p.kind:<10} {p.identifier}  "
            f"at {_instant(p.reported_at)}{later}"
        )


def _by(source: Source) -> str:
    return f"by {source.actor} ({source.key})" if source.actor else f"from {source.key}"


def _instant(at: datetime | date | None) -> str:
    if isinstance(at, datetime):
        return at.isoformat(timespec="seconds")
    return "" if at is None else at.isoformat()
