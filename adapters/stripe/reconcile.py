"""Reconcile: for each invoice that bills usage, the calls the ledger counted in
the period of its usage lines, the usage billtrail pushed to Stripe for those days,
what Stripe's meter holds for that period (when a Stripe client is given), and
the quantity and amount Stripe invoiced. Every mismatch is a finding; the run and
its findings are recorded in the ledger (`Reconciliation`), whole.

- not_pushed: counted != pushed (a push is due, or failed).
- meter_differs: pushed != what Stripe's meter aggregated for the period.
- quantity_differs: pushed != invoiced (usage pushed after the invoice was
  finalized, or lost).
- amount_differs: the quantity is right but the usage lines' amount is not the
  ledger's calls priced at the rate versions in force on their days (a rate
  corrected after the invoice, or a subscription billing an outdated price).

Void and draft invoices are not checked (a voided invoice's usage is checked on
its replacement; a draft's is still moving). Used by the scheduler; callable as
`reconcile(...)` and `billtrail reconcile`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import stripe

from adapters.stripe.outbound.catalog import METER_KEY
from ledger.app import Ledger
from ledger.errors import NotFound
from ledger.invoices.domain import Invoice, Status
from ledger.money import Money, line_amount
from ledger.reconciliation.domain import Finding, FindingKind, Reconciliation
from ledger.sources import Source
from ledger.values import LineKind


@dataclass(frozen=True)
class InvoiceFigures:
    invoice: str
    number: str | None
    entity_id: str
    status: str
    days: tuple[date, ...]
    counted: int
    pushed: int
    invoiced: Decimal
    meter: Decimal | None
    expected_amount: Decimal
    invoiced_amount: Decimal


@dataclass
class ReconcileReport:
    run: Reconciliation
    figures: list[InvoiceFigures] = field(default_factory=list)

    @property
    def findings(self) -> list[Finding]:
        return self.run.findings


def _usage_days(invoice: Invoice) -> tuple[date, ...]:
    days: set[date] = set()
    for line in invoice.lines:
        if line.kind == LineKind.USAGE:
            days.update((line.period or invoice.period).days())
    return tuple(sorted(days))


def figures_of(
    ledger: Ledger, invoice: Invoice, client: stripe.StripeClient | None = None
) -> InvoiceFigures | None:
    """The invoice's figures, or None when it bills no usage."""
    days = _usage_days(invoice)
    if not days:
        return None
    try:
        rate = ledger.rate(invoice.entity_id)
    except NotFound:
        rate = None
    counted = pushed = 0
    per_version: dict[int, int] = {}
    for day in days:
        usage = ledger.usage(invoice.entity_id, day)
        if usage is None:
            continue
        counted += usage.calls
        pushed += usage.reported_quantity
        version = rate.version_on(day) if rate is not None else None
        if version is not None:
            per_version[version.version] = per_version.get(version.version, 0) + usage.calls
    expected = Money.zero(invoice.currency)
    if rate is not None:
        for number, count in per_version.items():
            unit = rate.versions[number - 1].unit_price
            expected = expected + line_amount(count, Money(unit, invoice.currency))
    usage_lines = [li for li in invoice.lines if li.kind == LineKind.USAGE]
    return InvoiceFigures(
        invoice=invoice.stripe_id,
        number=invoice.number,
        entity_id=invoice.entity_id,
        status=invoice.status.value,
        days=days,
        counted=counted,
        pushed=pushed,
        invoiced=sum((li.quantity for li in usage_lines), Decimal(0)),
        meter=_meter_total(ledger, client, invoice, days) if client is not None else None,
        expected_amount=expected.amount,
        invoiced_amount=sum((li.amount for li in usage_lines), Decimal(0)),
    )


def _meter_total(
    ledger: Ledger, client: stripe.StripeClient, invoice: Invoice, days: tuple[date, ...]
) -> Decimal | None:
    request = ledger.stripe_request(METER_KEY)
    entity = ledger.entity(invoice.entity_id)
    if request is None or request.object_id is None or entity.stripe_customer_id is None:
        return None
    zone = ZoneInfo(entity.timezone)
    after_last = date.fromordinal(days[-1].toordinal() + 1)
    start = int(datetime.combine(days[0], time(0), zone).timestamp())
    end = int(datetime.combine(after_last, time(0), zone).timestamp())
    summaries = client.v1.billing.meters.event_summaries.list(
        request.object_id,
        {"customer": entity.stripe_customer_id, "start_time": start, "end_time": end},
    )
    return sum((Decimal(str(s.aggregated_value)) for s in summaries.data), Decimal(0))


def findings_of(figures: InvoiceFigures) -> list[Finding]:
    found: list[Finding] = []

    def add(kind: FindingKind, expected: object, actual: object, detail: str) -> None:
        found.append(
            Finding(
                invoice=figures.invoice,
                number=figures.number,
                entity_id=figures.entity_id,
                kind=kind.value,
                expected=str(expected),
                actual=str(actual),
                detail=detail,
            )
        )

    period = f"{figures.days[0]} to {figures.days[-1]}"
    if figures.counted != figures.pushed:
        add(
            FindingKind.NOT_PUSHED,
            figures.counted,
            figures.pushed,
            f"the ledger counted {figures.counted} calls from {period}; "
            f"{figures.pushed} were pushed to Stripe",
        )
    if figures.meter is not None and figures.meter != figures.pushed:
        add(
            FindingKind.METER_DIFFERS,
            figures.pushed,
            figures.meter,
            f"{figures.pushed} calls were pushed for {period}; "
            f"Stripe's meter holds {figures.meter}",
        )
    if figures.invoiced != figures.pushed:
        add(
            FindingKind.QUANTITY_DIFFERS,
            figures.pushed,
            figures.invoiced,
            f"{figures.pushed} calls were pushed for {period}; "
            f"the invoice bills {figures.invoiced}",
        )
    elif figures.invoiced == figures.counted and figures.expected_amount != figures.invoiced_amount:
        add(
            FindingKind.AMOUNT_DIFFERS,
            figures.expected_amount,
            figures.invoiced_amount,
            f"{figures.counted} calls from {period} at the rates in force come to "
            f"{figures.expected_amount}; the invoice's usage lines bill {figures.invoiced_amount}",
        )
    return found


def reconcile(
    ledger: Ledger,
    source: Source,
    *,
    client: stripe.StripeClient | None = None,
    invoices: Iterable[Invoice] | None = None,
) -> ReconcileReport:
    """Check every invoice (or `invoices`) and record the run under `source` (a
    scheduler run recorded twice is recorded once)."""
    checked: list[InvoiceFigures] = []
    findings: list[Finding] = []
    for invoice in ledger.invoices() if invoices is None else invoices:
        if invoice.status in (Status.DRAFT, Status.VOID):
            continue
        figures = figures_of(ledger, invoice, client)
        if figures is None:
            continue
        checked.append(figures)
        findings.extend(findings_of(figures))
    run = ledger.record_reconciliation(source.key, len(checked), findings, source)
    return ReconcileReport(run, checked)
