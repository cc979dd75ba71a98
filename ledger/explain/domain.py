"""Why a customer was charged what: the explanation of one invoice, reconstructed
from ledger facts, and the checks that flag every mismatch.

Two instants matter:

- *as of* (`Explanation.as_of`): what the ledger knew then is the whole world
  of the explanation (recorded time). Default: now.
- *at issue* (`Explanation.issued_at`): when the ledger recorded the invoice as
  issued (its `Issued` event), or the as-of instant for an invoice still a draft
  then. "Known at issue" is what Stripe could have billed; the difference between
  at issue and as of is what the ledger learnt later: late calls, rate corrections.

Every flag is a mismatch, and explain's exit code is 1 when there is any: a late
call or a rate corrected after issue is a difference between what was billed and
what is known now, which is exactly what a dispute is about. What is information
and not a mismatch is shown, not flagged: credit notes that reconcile, contracted
fixed fees, pushes after issue that the calls justify.

This module is pure: `build_explanation` takes aggregates already rebuilt at the
two instants (see ledger.explain.application) and reads nothing else."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from ledger.entities.domain import BillableEntity
from ledger.invoices.domain import Invoice, Status
from ledger.money import Money, exponent, line_amount
from ledger.rates.domain import FixedFee, Rate, RateVersion
from ledger.sources import Source
from ledger.usage.domain import Usage
from ledger.values import Line, LineKind, Period


class FlagCode(StrEnum):
    """What a flag is about. Stable: the portal, the API and scripts match on them."""

    USAGE_VS_CALLS_THEN = "USAGE_VS_CALLS_THEN"
    """A usage line's quantity is not the calls recorded for its days at issue."""
    USAGE_VS_CALLS_NOW = "USAGE_VS_CALLS_NOW"
    """Calls for a usage line's days were recorded after issue (late calls)."""
    USAGE_VS_PUSHED = "USAGE_VS_PUSHED"
    """A usage line's quantity is not the usage reported to Stripe by issue."""
    DUPLICATE_PUSH = "DUPLICATE_PUSH"
    """More usage was reported to Stripe for a day than calls are recorded for it."""
    RATE_MISMATCH = "RATE_MISMATCH"
    """A usage line's unit price is not the rate contracted (at issue) for its days."""
    RATE_MISSING = "RATE_MISSING"
    """A usage line bills calls of days for which no rate was contracted at issue."""
    RATE_CORRECTED_AFTER_ISSUE = "RATE_CORRECTED_AFTER_ISSUE"
    """The rate of some of the period's days was changed after the invoice was issued."""
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    """The invoice is not in the currency of the contracted rate."""
    AMOUNT_ARITHMETIC = "AMOUNT_ARITHMETIC"
    """A line's amount is not quantity x unit price, rounded to the minor unit."""
    TOTAL_MISMATCH = "TOTAL_MISMATCH"
    """Subtotal, tax and total do not add up from the lines."""
    CREDITS_EXCEED_TOTAL = "CREDITS_EXCEED_TOTAL"
    """The credit notes in force credit more than the invoice's total."""


@dataclass(frozen=True)
class Flag:
    code: FlagCode
    message: str
    line_id: str | None = None
    days: tuple[date, ...] = ()


@dataclass(frozen=True)
class EntityFacts:
    """The billable entity as recorded when the invoice was issued."""

    entity_id: str
    name: str
    kind: str
    timezone: str
    stripe_customer_id: str | None
    archived: bool


@dataclass(frozen=True)
class RateFacts:
    """One rate version: its price (valid from `effective_from`), and who recorded
    it, when (`recorded_at`, recorded time) and why."""

    version: int
    unit_price: Decimal
    currency: str
    effective_from: date
    recorded_at: datetime
    reason: str
    source: Source
    recorded_after_issue: bool


@dataclass(frozen=True)
class DayFacts:
    """One local day of the period. Counts are as recorded as of, `*_at_issue` as
    recorded at issue; `late_calls` arrived in between."""

    day: date
    calls: int
    calls_at_issue: int
    duplicates: int
    pushed: int
    pushed_at_issue: int
    rate: RateFacts | None
    rate_at_issue: RateFacts | None

    @property
    def late_calls(self) -> int:
        return self.calls - self.calls_at_issue

    @property
    def rate_corrected_after_issue(self) -> bool:
        return _price(self.rate) != _price(self.rate_at_issue)


@dataclass(frozen=True)
class PushFacts:
    """One push of a day's usage to Stripe (a meter event)."""

    day: date
    quantity: int
    identifier: str
    kind: str
    reported_at: datetime
    source: Source
    after_issue: bool


@dataclass(frozen=True)
class LineFacts:
    """An invoice line as billed, with what the ledger computes for it.
    `computed_amount`: quantity x unit price rounded as Stripe rounds (None without
    a unit price). Usage lines also carry their days and the calls, pushes and
    contracted amount (calls at issue x the rate of each day at issue) of those days."""

    line_id: str
    kind: str
    description: str
    quantity: Decimal
    unit_amount: Decimal | None
    amount: Decimal
    price_id: str | None
    period: Period | None
    computed_amount: Decimal | None
    days: tuple[date, ...] = ()
    calls_at_issue: int | None = None
    calls: int | None = None
    pushed_at_issue: int | None = None
    contracted_amount: Decimal | None = None

    @property
    def arithmetic_ok(self) -> bool:
        return self.computed_amount is None or self.computed_amount == self.amount


@dataclass(frozen=True)
class FeeFacts:
    """A fixed fee of the contract in force during the period (as recorded at issue)."""

    fee_id: str
    kind: str
    description: str
    amount: Decimal
    effective_from: date
    effective_until: date | None
    recorded_at: datetime
    source: Source


@dataclass(frozen=True)
class CreditNoteFacts:
    credit_note_id: str
    number: str
    amount: Decimal
    reason: str
    memo: str
    evidence: tuple[str, ...]
    recorded_at: datetime
    voided: bool


@dataclass(frozen=True)
class TimelineEntry:
    """One event of the invoice's life: what happened (`event`), the status after
    it, when the ledger recorded it, when it happened in Stripe (`effective_at`,
    when Stripe says), a plain detail, and where it came from."""

    event: str
    status: str
    recorded_at: datetime
    effective_at: datetime | None
    detail: str
    source: Source


@dataclass(frozen=True)
class InvoiceFacts:
    stripe_id: str
    number: str | None
    entity_id: str
    currency: str
    period: Period
    status: str
    issue_date: date | None
    due_date: date | None
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    credited: Decimal
    amount_paid: Decimal
    replaces: str | None
    replaced_by: str | None

    @property
    def net_total(self) -> Decimal:
        """The total less the credit notes in force."""
        return self.total - self.credited


@dataclass(frozen=True)
class Explanation:
    as_of: datetime
    issued_at: datetime | None
    invoice: InvoiceFacts
    entity: EntityFacts
    days: tuple[DayFacts, ...]
    usage_pushed: tuple[PushFacts, ...]
    lines: tuple[LineFacts, ...]
    fees: tuple[FeeFacts, ...]
    credit_notes: tuple[CreditNoteFacts, ...]
    timeline: tuple[TimelineEntry, ...]
    flags: tuple[Flag, ...]

    @property
    def ok(self) -> bool:
        """Nothing flagged."""
        return not self.flags

    @property
    def codes(self) -> set[FlagCode]:
        return {f.code for f in self.flags}

    @property
    def rates(self) -> tuple[RateFacts, ...]:
        """Every rate version a day of the period names, at issue or as of."""
        found: dict[int, RateFacts] = {}
        for d in self.days:
            for rate in (d.rate_at_issue, d.rate):
                if rate is not None:
                    found.setdefault(rate.version, rate)
        return tuple(found[v] for v in sorted(found))


# Building ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DayUsage:
    """A day's Usage aggregate at issue and as of (None: nothing recorded yet)."""

    day: date
    at_issue: Usage | None
    as_of: Usage | None


def build_explanation(
    *,
    as_of: datetime,
    invoice: Invoice,
    invoice_events: Sequence[Any],
    entity: BillableEntity,
    usage: Sequence[DayUsage],
    rate_at_issue: Rate | None,
    rate_as_of: Rate | None,
) -> Explanation:
    """The explanation of `invoice` (as recorded as of `as_of`), from the other
    aggregates rebuilt at issue and as of. `invoice_events`: its events recorded
    by `as_of`, oldest first (for the timeline and the instant of issue)."""
    issued_at = next((e.timestamp for e in invoice_events if isinstance(e, Invoice.Issued)), None)
    currency = invoice.currency
    days = tuple(
        DayFacts(
            day=u.day,
            calls=u.as_of.calls if u.as_of else 0,
            calls_at_issue=u.at_issue.calls if u.at_issue else 0,
            duplicates=u.as_of.duplicates if u.as_of else 0,
            pushed=u.as_of.reported_quantity if u.as_of else 0,
            pushed_at_issue=u.at_issue.reported_quantity if u.at_issue else 0,
            rate=_rate_facts(rate_as_of, u.day, issued_at),
            rate_at_issue=_rate_facts(rate_at_issue, u.day, issued_at),
        )
        for u in usage
    )
    pushes = tuple(_pushes(usage))
    by_day = {d.day: d for d in days}
    lines = tuple(_line_facts(line, invoice, by_day) for line in invoice.lines)
    flags: list[Flag] = []
    flags += _currency_flags(currency, rate_at_issue, rate_as_of)
    flags += _usage_flags(lines, by_day, currency)
    flags += _rate_correction_flags(days, currency)
    flags += _duplicate_push_flags(days, pushes)
    flags += _arithmetic_flags(lines, currency)
    flags += _total_flags(invoice, currency)
    if invoice.credited > invoice.total:
        flags.append(
            Flag(
                FlagCode.CREDITS_EXCEED_TOTAL,
                f"The credit notes in force credit {money(invoice.credited, currency)}, more "
                f"than the invoice's total of {money(invoice.total, currency)}.",
            )
        )
    return Explanation(
        as_of=as_of,
        issued_at=issued_at,
        invoice=InvoiceFacts(
            stripe_id=invoice.stripe_id,
            number=invoice.number,
            entity_id=invoice.entity_id,
            currency=currency,
            period=invoice.period,
            status=invoice.status.value,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            subtotal=invoice.subtotal,
            tax=invoice.tax,
            total=invoice.total,
            credited=invoice.credited,
            amount_paid=invoice.amount_paid,
            replaces=invoice.replaces,
            replaced_by=invoice.replaced_by,
        ),
        entity=EntityFacts(
            entity_id=entity.entity_id,
            name=entity.name,
            kind=entity.kind,
            timezone=entity.timezone,
            stripe_customer_id=entity.stripe_customer_id,
            archived=entity.archived,
        ),
        days=days,
        usage_pushed=pushes,
        lines=lines,
        fees=tuple(_fees(rate_at_issue, invoice.period)),
        credit_notes=tuple(
            CreditNoteFacts(
                credit_note_id=n.credit_note_id,
                number=n.number,
                amount=n.amount,
                reason=n.reason,
                memo=n.memo,
                evidence=n.evidence,
                recorded_at=n.issued_at,
                voided=n.voided,
            )
            for n in invoice.credit_notes.values()
        ),
        timeline=tuple(timeline(invoice_events)),
        flags=tuple(flags),
    )


def period_days(invoice: Invoice) -> list[date]:
    """The days an explanation lists: the invoice's period and any day a usage
    line covers outside it."""
    days = set(invoice.period.days())
    for line in invoice.lines:
        if line.kind == LineKind.USAGE and line.period is not None:
            days.update(line.period.days())
    return sorted(days)


def _price(rate: RateFacts | None) -> Decimal | None:
    return None if rate is None else rate.unit_price


def _rate_facts(rate: Rate | None, day: date, issued_at: datetime | None) -> RateFacts | None:
    if rate is None:
        return None
    v: RateVersion | None = rate.version_on(day)
    if v is None:
        return None
    return RateFacts(
        version=v.version,
        unit_price=v.unit_price,
        currency=rate.currency,
        effective_from=v.effective_from,
        recorded_at=v.recorded_at,
        reason=v.reason,
        source=v.source,
        recorded_after_issue=issued_at is not None and v.recorded_at > issued_at,
    )


def _pushes(usage: Sequence[DayUsage]) -> Iterable[PushFacts]:
    for u in usage:
        if u.as_of is None:
            continue
        known = {r.identifier for r in u.at_issue.reports} if u.at_issue else set()
        for r in u.as_of.reports:
            yield PushFacts(
                day=u.day,
                quantity=r.quantity,
                identifier=r.identifier,
                kind=r.kind,
                reported_at=r.reported_at,
                source=r.source,
                after_issue=r.identifier not in known,
            )


def _fees(rate: Rate | None, period: Period) -> Iterable[FeeFacts]:
    if rate is None:
        return
    for fee in rate.fees.values():
        if _fee_overlaps(fee, period):
            yield FeeFacts(
                fee_id=fee.fee_id,
                kind=fee.kind,
                description=fee.description,
                amount=fee.amount,
                effective_from=fee.effective_from,
                effective_until=fee.effective_until,
                recorded_at=fee.recorded_at,
                source=fee.source,
            )


def _fee_overlaps(fee: FixedFee, period: Period) -> bool:
    return fee.effective_from < period.end and (
        fee.effective_until is None or fee.effective_until > period.start
    )


def _line_days(line: Line, invoice: Invoice) -> tuple[date, ...]:
    return tuple((line.period or invoice.period).days())


def _line_facts(line: Line, invoice: Invoice, by_day: dict[date, DayFacts]) -> LineFacts:
    computed = (
        None
        if line.unit_amount is None
        else line_amount(line.quantity, Money(line.unit_amount, invoice.currency)).amount
    )
    facts = LineFacts(
        line_id=line.line_id,
        kind=line.kind,
        description=line.description,
        quantity=line.quantity,
        unit_amount=line.unit_amount,
        amount=line.amount,
        price_id=line.price_id,
        period=line.period,
        computed_amount=computed,
    )
    if line.kind != LineKind.USAGE:
        return facts
    days = _line_days(line, invoice)
    covered = [by_day[d] for d in days if d in by_day]
    return replace(
        facts,
        days=days,
        calls_at_issue=sum(d.calls_at_issue for d in covered),
        calls=sum(d.calls for d in covered),
        pushed_at_issue=sum(d.pushed_at_issue for d in covered),
        contracted_amount=contracted_amount(covered, invoice.currency),
    )


def contracted_amount(days: Sequence[DayFacts], currency: str) -> Decimal | None:
    """What the calls known at issue cost at the rates known at issue: per rate
    version, its days' calls x its price rounded once (Stripe bills one line per
    price). None when a day with calls has no rate."""
    per_version: dict[tuple[int, Decimal], int] = {}
    for d in days:
        if d.calls_at_issue == 0:
            continue
        if d.rate_at_issue is None:
            return None
        key = (d.rate_at_issue.version, d.rate_at_issue.unit_price)
        per_version[key] = per_version.get(key, 0) + d.calls_at_issue
    return sum(
        (
            line_amount(calls, Money(price, currency)).amount
            for (_, price), calls in per_version.items()
        ),
        Decimal(0),
    ).quantize(Decimal(1).scaleb(-exponent(currency)))


# Checks -----------------------------------------------------------------------------


def _currency_flags(currency: str, *rates: Rate | None) -> list[Flag]:
    for rate in rates:
        if rate is not None and rate.currency != currency:
            return [
                Flag(
                    FlagCode.CURRENCY_MISMATCH,
                    f"The invoice is in {currency.upper()} but the contracted rate is in "
                    f"{rate.currency.upper()}.",
                )
            ]
    return []


def _usage_flags(
    lines: Sequence[LineFacts], by_day: dict[date, DayFacts], currency: str
) -> list[Flag]:
    """Usage lines are compared by the days they cover: lines covering the same
    days (one per price, when the price changed within them) are compared together,
    since Stripe splits one meter's quantity between them."""
    groups: dict[tuple[date, ...], list[LineFacts]] = {}
    for line in lines:
        if line.kind == LineKind.USAGE:
            groups.setdefault(line.days, []).append(line)
    flags: list[Flag] = []
    for days, group in groups.items():
        covered = [by_day[d] for d in days if d in by_day]
        quantity = sum((line.quantity for line in group), Decimal(0))
        then = sum(d.calls_at_issue for d in covered)
        now = sum(d.calls for d in covered)
        pushed = sum(d.pushed_at_issue for d in covered)
        what = _lines_name(group)
        span = spans(days)
        line_id = group[0].line_id if len(group) == 1 else None
        if quantity != then:
            flags.append(
                Flag(
                    FlagCode.USAGE_VS_CALLS_THEN,
                    f"{what} bills {calls(quantity)} for {span}, but {calls(then)} had been "
                    f"recorded for those days when the invoice was issued "
                    f"({_more_or_fewer(quantity - then)} billed).",
                    line_id,
                    days,
                )
            )
        if now != then and quantity != now:
            late_days = tuple(d.day for d in covered if d.late_calls)
            flags.append(
                Flag(
                    FlagCode.USAGE_VS_CALLS_NOW,
                    f"{what} bills {calls(quantity)} for {span}, but {calls(now)} are "
                    f"recorded for those days now: {calls(now - then)} arrived after the "
                    f"invoice was issued (late calls on {spans(late_days)}).",
                    line_id,
                    late_days,
                )
            )
        if quantity != pushed:
            flags.append(
                Flag(
                    FlagCode.USAGE_VS_PUSHED,
                    f"{what} bills {calls(quantity)} for {span}, but {calls(pushed)} had been "
                    "reported to Stripe for those days when the invoice was issued.",
                    line_id,
                    days,
                )
            )
        flags += _rate_flags(group, covered, currency)
    return flags


def _rate_flags(group: list[LineFacts], covered: list[DayFacts], currency: str) -> list[Flag]:
    billed = [d for d in covered if d.calls_at_issue] or covered
    missing = tuple(d.day for d in billed if d.rate_at_issue is None)
    flags: list[Flag] = []
    if missing:
        flags.append(
            Flag(
                FlagCode.RATE_MISSING,
                f"{_lines_name(group)} bills calls of {spans(missing)}, but no rate was "
                "contracted for those days when the invoice was issued.",
                group[0].line_id if len(group) == 1 else None,
                missing,
            )
        )
    rated = [d for d in billed if d.rate_at_issue is not None]
    price = group[0].unit_amount
    if len(group) == 1 and price is not None:
        line = group[0]
        wrong = [d for d in rated if d.rate_at_issue and d.rate_at_issue.unit_price != price]
        for rate, run in _runs_by_rate(wrong):
            n = sum(d.calls_at_issue for d in wrong if d.day in run)
            as_billed = line_amount(n, Money(price, currency)).amount
            at_contract = line_amount(n, Money(rate.unit_price, currency)).amount
            flags.append(
                Flag(
                    FlagCode.RATE_MISMATCH,
                    f"{_lines_name(group)} charges {unit(price, currency)} per call, "
                    f"but the rate contracted for {spans(run)} was "
                    f"{unit(rate.unit_price, currency)} per call ({_version(rate)}): the "
                    f"{calls(n)} of those days cost {money(at_contract, currency)} at the "
                    f"contracted rate, {money(as_billed, currency)} as billed.",
                    line.line_id,
                    run,
                )
            )
        return flags
    # Several prices for the same days, or a line without a unit price: the amount
    # billed must be what the calls at issue cost at the contracted rates.
    expected = contracted_amount(covered, currency)
    amount = sum((line.amount for line in group), Decimal(0))
    quantity = sum((line.quantity for line in group), Decimal(0))
    then = sum(d.calls_at_issue for d in covered)
    if expected is not None and quantity == then and amount != expected:
        flags.append(
            Flag(
                FlagCode.RATE_MISMATCH,
                f"{_lines_name(group)} charges {money(amount, currency)} for "
                f"{calls(quantity)}, but at the rates contracted for {spans(group[0].days)} "
                f"they cost {money(expected, currency)}.",
                group[0].line_id if len(group) == 1 else None,
                group[0].days,
            )
        )
    return flags


def _runs_by_rate(days: Sequence[DayFacts]) -> list[tuple[RateFacts, tuple[date, ...]]]:
    found: dict[int, tuple[RateFacts, list[date]]] = {}
    for d in days:
        assert d.rate_at_issue is not None
        found.setdefault(d.rate_at_issue.version, (d.rate_at_issue, []))[1].append(d.day)
    return [(rate, tuple(run)) for rate, run in found.values()]


def _rate_correction_flags(days: Sequence[DayFacts], currency: str) -> list[Flag]:
    """One flag per (rate at issue, rate now) pair of the days whose price changed."""
    changed: dict[tuple[int | None, int | None], list[DayFacts]] = {}
    for d in days:
        if d.rate_corrected_after_issue:
            key = (
                d.rate_at_issue.version if d.rate_at_issue else None,
                d.rate.version if d.rate else None,
            )
            changed.setdefault(key, []).append(d)
    flags = []
    for group in changed.values():
        then, now = group[0].rate_at_issue, group[0].rate
        run = tuple(d.day for d in group)
        was = f"{unit(then.unit_price, currency)} per call" if then else "no rate"
        if now is None:  # a rate only goes away if the contract's first version moved later
            is_ = "no rate now"
            cost = ""
        else:
            is_ = (
                f"{unit(now.unit_price, currency)} per call now ({_version(now)}"
                + (f': "{now.reason}"' if now.reason else "")
                + ")"
            )
            n = sum(d.calls for d in group)
            before = line_amount(n, Money(then.unit_price, currency)).amount if then else None
            after = line_amount(n, Money(now.unit_price, currency)).amount
            cost = (
                f" At the corrected rate the {calls(n)} of those days cost "
                f"{money(after, currency)}"
                + (f" instead of {money(before, currency)}." if before is not None else ".")
            )
        flags.append(
            Flag(
                FlagCode.RATE_CORRECTED_AFTER_ISSUE,
                f"The rate for {spans(run)} was changed after the invoice was issued: "
                f"{was} when it was issued, {is_}.{cost}",
                None,
                run,
            )
        )
    return flags


def _duplicate_push_flags(days: Sequence[DayFacts], pushes: Sequence[PushFacts]) -> list[Flag]:
    flags = []
    for d in days:
        if d.pushed > d.calls:
            ids = [p.identifier for p in pushes if p.day == d.day]
            flags.append(
                Flag(
                    FlagCode.DUPLICATE_PUSH,
                    f"On {d.day}, {calls(d.pushed)} were reported to Stripe but {calls(d.calls)} "
                    f"are recorded for that day: {calls(d.pushed - d.calls)} reported more "
                    f"than once (pushes {', '.join(ids)}).",
                    None,
                    (d.day,),
                )
            )
    return flags


def _arithmetic_flags(lines: Sequence[LineFacts], currency: str) -> list[Flag]:
    return [
        Flag(
            FlagCode.AMOUNT_ARITHMETIC,
            f"Line {line.description!r}: {number_text(line.quantity)} x "
            f"{unit(line.unit_amount, currency)} = {money(line.computed_amount, currency)}, "
            f"but the line says {money(line.amount, currency)}.",
            line.line_id,
        )
        for line in lines
        if line.unit_amount is not None
        and line.computed_amount is not None
        and not line.arithmetic_ok
    ]


def _total_flags(invoice: Invoice, currency: str) -> list[Flag]:
    flags = []
    before_tax = sum((x.amount for x in invoice.lines if x.kind != LineKind.TAX), Decimal(0))
    tax_lines = [x.amount for x in invoice.lines if x.kind == LineKind.TAX]
    if before_tax != invoice.subtotal:
        flags.append(
            Flag(
                FlagCode.TOTAL_MISMATCH,
                f"The lines before tax add up to {money(before_tax, currency)}, but the "
                f"invoice's subtotal is {money(invoice.subtotal, currency)}.",
            )
        )
    # Tax as lines only when Stripe itemised it (exclusive tax); otherwise the
    # invoice's tax is taken as stated.
    if tax_lines and sum(tax_lines, Decimal(0)) != invoice.tax:
        flags.append(
            Flag(
                FlagCode.TOTAL_MISMATCH,
                f"The tax lines add up to {money(sum(tax_lines, Decimal(0)), currency)}, but "
                f"the invoice's tax is {money(invoice.tax, currency)}.",
            )
        )
    if invoice.subtotal + invoice.tax != invoice.total:
        flags.append(
            Flag(
                FlagCode.TOTAL_MISMATCH,
                f"Subtotal {money(invoice.subtotal, currency)} plus tax "
                f"{money(invoice.tax, currency)} is "
                f"{money(invoice.subtotal + invoice.tax, currency)}, but the invoice's total "
                f"is {money(invoice.total, currency)}.",
            )
        )
    return flags


# The timeline -----------------------------------------------------------------------


def timeline(events: Iterable[Any]) -> Iterable[TimelineEntry]:
    status = Status.DRAFT
    for e in events:
        entry: tuple[str, str, datetime | None] | None = None
        match e:
            case Invoice.Drafted():
                entry = (
                    "drafted",
                    f"drafted in Stripe: total {e.total} {e.currency.upper()}",
                    None,
                )
            case Invoice.LinesRevised():
                entry = ("lines_revised", f"draft revised: total {e.total}", None)
            case Invoice.Issued():
                status = Status.OPEN
                due = f", due {e.due_date}" if e.due_date else ""
                entry = ("issued", f"issued as {e.number} on {e.issue_date}{due}", None)
            case Invoice.PaymentFailed():
                retry = (
                    f"; next attempt {e.next_attempt_at.isoformat()}" if e.next_attempt_at else ""
                )
                why = f": {e.failure_message}" if e.failure_message else ""
                entry = (
                    "payment_failed",
                    f"payment attempt {e.attempt_count} failed{why}{retry}",
                    None,
                )
            case Invoice.Paid():
                status = Status.PAID
                receipt = f", receipt {e.receipt_number}" if e.receipt_number else ""
                entry = ("paid", f"paid {e.amount_paid}{receipt}", e.paid_at)
            case Invoice.BecamePastDue():
                status = Status.PAST_DUE
                entry = ("past_due", f"past due on {e.on}", None)
            case Invoice.Voided():
                status = Status.VOID
                entry = ("voided", f"voided: {e.reason}", e.voided_at)
            case Invoice.MarkedUncollectible():
                status = Status.UNCOLLECTIBLE
                entry = ("uncollectible", f"marked uncollectible: {e.reason}", e.marked_at)
            case Invoice.CreditNoteIssued():
                why = f" ({e.reason})" if e.reason else ""
                entry = ("credit_note_issued", f"credit note {e.number} for {e.amount}{why}", None)
            case Invoice.CreditNoteVoided():
                entry = ("credit_note_voided", f"credit note {e.credit_note_id} voided", None)
            case Invoice.Replaced():
                entry = ("replaced", f"replaced by {e.replacement_stripe_id}: {e.reason}", None)
        if entry is not None:
            name, detail, effective = entry
            yield TimelineEntry(name, status.value, e.timestamp, effective, detail, e.source)


# Wording ----------------------------------------------------------------------------


def money(amount: Decimal | None, currency: str) -> str:
    if amount is None:
        return "?"
    places = exponent(currency)
    return f"{amount:,.{places}f} {currency.upper()}"


def unit(price: Decimal | None, currency: str) -> str:
    """A unit price with all its digits (sub-cent per-call prices), at least the
    currency's minor unit."""
    if price is None:
        return "?"
    digits = price.as_tuple().exponent
    places = max(exponent(currency), -digits if isinstance(digits, int) and digits < 0 else 0)
    return f"{price:,.{places}f} {currency.upper()}"


def calls(n: int | Decimal) -> str:
    return f"{number_text(n)} call" + ("" if n == 1 else "s")


def number_text(n: int | Decimal) -> str:
    if isinstance(n, Decimal) and n == n.to_integral_value():
        n = int(n)
    return f"{n:,}" if isinstance(n, int) else f"{n:,f}"


def _more_or_fewer(diff: int | Decimal) -> str:
    return f"{calls(diff)} too many" if diff > 0 else f"{calls(-diff)} too few"


def _version(rate: RateFacts) -> str:
    actor = f" by {rate.source.actor}" if rate.source.actor else ""
    return (
        f"version {rate.version} from {rate.effective_from}, recorded "
        f"{rate.recorded_at.isoformat(timespec='seconds')}{actor} via {rate.source.key}"
    )


def _lines_name(group: Sequence[LineFacts]) -> str:
    if len(group) == 1:
        return f"Line {group[0].description!r}"
    return "Lines " + ", ".join(repr(line.description) for line in group)


def spans(days: Iterable[date]) -> str:
    """Days as runs: "2026-01-01 to 2026-01-31, 2026-02-03"."""
    runs: list[tuple[date, date]] = []
    for d in sorted(set(days)):
        if runs and runs[-1][1] + timedelta(days=1) == d:
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    if not runs:
        return "no day"
    return ", ".join(f"{a}" if a == b else f"{a} to {b}" for a, b in runs)
