"""A Stripe invoice (with its credit notes) in ledger terms: `InvoiceSnapshot`.

`invoice_snapshot` is the pure mapping; `InvoiceReader` reads what it needs from
Stripe (the invoice with its customer, every line, every credit note, a price
now and then) and resolves the billable entity. Both the webhook worker and
`sync` use them, and so does the outbound half of the adapter.

The rules of the mapping:

- Money: Stripe's integer minor units become Decimal major units through
  `Money.from_minor` (exact); a line's unit price keeps `unit_amount_decimal`
  exactly (Stripe gives it in minor units, to 12 decimal places: 1.25 cents a call
  is `"1.25"`, which becomes `Decimal("0.0125")` dollars).
- Lines: every line of the invoice (not only the ten Stripe embeds), then one
  `tax` line per tax rate with exclusive tax, then, when discounts make the
  lines' sum differ from the amount before tax, one `adjustment` line for the
  difference; so the non-tax lines add up to `subtotal`, the tax lines to `tax`,
  and `subtotal + tax == total` as the ledger requires.
- Line kinds: `metadata.billtrail_kind` when the line carries one; otherwise
  `usage` for a metered price, `fee` for any other price, `adjustment` for a line
  without a price, a proration or a negative amount.
- Dates (issue, due, periods) are days in the billable entity's time zone, the
  zone its calls are counted in; a period's end is exclusive, and a period
  shorter than a day (a one-off invoice's) is that one day.
- The entity: the customer's `metadata.billtrail_entity_id`, else the entity the
  ledger linked to that Stripe customer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import stripe

from adapters.stripe.client import Throttle, TokenBucket
from ledger.app import Ledger
from ledger.errors import LedgerError, NotFound
from ledger.invoices.application import CreditNoteSnapshot, InvoiceSnapshot
from ledger.invoices.domain import Totals
from ledger.money import Money, exponent
from ledger.values import Line, LineKind, Period

ENTITY_METADATA_KEY = "billtrail_entity_id"
KIND_METADATA_KEY = "billtrail_kind"
EVIDENCE_METADATA_KEY = "billtrail_evidence"
PAGE = 100
# Reads of an invoice whose lines take more than one request, when Stripe keeps
# revising it between them; then `InvoiceKeptChanging`.
PAGED_READS = 3


T = TypeVar("T", bound=stripe.StripeObject)


class UnresolvedEntity(LedgerError):
    """The invoice's customer names a billable entity the ledger does not have."""


class InvoiceKeptChanging(stripe.StripeError):
    """Stripe revised the invoice each time its lines were read (they take more
    than one request). A Stripe error with no HTTP status: transient, so the
    invoice's events wait for the next pass like any Stripe hiccup."""


@dataclass(frozen=True)
class NotForTheLedger:
    """The invoice has nothing to record: it is gone from Stripe (a deleted draft),
    or its customer is not one of billtrail's billable entities."""

    reason: str


# Pure mapping -----------------------------------------------------------------------


def raw_field(obj: stripe.StripeObject, key: str) -> Any:
    """A field the SDK's types do not declare (None when absent)."""
    try:
        return obj[key]
    except KeyError:
        return None


def metadata_value(metadata: stripe.StripeObject | None, key: str) -> str:
    """A metadata value ("" when absent). StripeObjects are not dicts in SDK 16."""
    if metadata is None or key not in metadata:
        return ""
    return str(metadata[key] or "")


def major(minor: int, currency: str) -> Decimal:
    return Money.from_minor(minor, currency).amount


def unit_price(unit_amount_decimal: Decimal | str | None, currency: str) -> Decimal | None:
    """Stripe's `unit_amount_decimal` (minor units, exact) in major units."""
    if unit_amount_decimal is None:
        return None
    return Decimal(unit_amount_decimal).scaleb(-exponent(currency))


def instant(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def local_date(ts: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(ts, zone).date()


def period_of(start: int, end: int, zone: ZoneInfo) -> Period:
    """Whole days covering [start, end): the end is exclusive, so an end at local
    midnight ends the day before; at least one day."""
    first = local_date(start, zone)
    end_at = datetime.fromtimestamp(end, zone)
    last = end_at.date()
    if end_at.time() != datetime.min.time() or last <= first:
        last += timedelta(days=1)
    return Period(first, max(last, first + timedelta(days=1)))


def _price_id(line: stripe.InvoiceLineItem) -> str | None:
    pricing = line.pricing
    details = pricing.price_details if pricing is not None else None
    if details is None:
        return None
    price = details.price
    return price if isinstance(price, str) else price.id


def _is_proration(line: stripe.InvoiceLineItem) -> bool:
    parent = line.parent
    if parent is None:
        return False
    details = parent.subscription_item_details or parent.invoice_item_details
    return bool(details is not None and details.proration)


def line_kind(line: stripe.InvoiceLineItem, usage_type: Callable[[str], str | None]) -> str:
    marked = metadata_value(line.metadata, KIND_METADATA_KEY)
    if marked in LineKind.__members__.values():
        return marked
    price_id = _price_id(line)
    if price_id is None or line.amount < 0 or _is_proration(line):
        return LineKind.ADJUSTMENT.value
    return LineKind.USAGE.value if usage_type(price_id) == "metered" else LineKind.FEE.value


def invoice_line(
    line: stripe.InvoiceLineItem,
    currency: str,
    zone: ZoneInfo,
    usage_type: Callable[[str], str | None],
) -> Line:
    if line.quantity_decimal is not None:
        quantity = Decimal(line.quantity_decimal)
    else:
        quantity = Decimal(line.quantity if line.quantity is not None else 1)
    pricing = line.pricing
    period = (
        period_of(line.period.start, line.period.end, zone)
        if line.period.end > line.period.start
        else None
    )
    return Line(
        line_id=line.id,
        kind=line_kind(line, usage_type),
        description=line.description or "",
        quantity=quantity,
        unit_amount=unit_price(pricing.unit_amount_decimal if pricing else None, currency),
        amount=major(line.amount, currency),
        price_id=_price_id(line),
        period=period,
    )


def _tax_rate_names(invoice: stripe.Invoice) -> dict[str, str]:
    names: dict[str, str] = {}
    for rate in invoice.default_tax_rates or []:
        percent = f"{rate.percentage:g}%" if rate.percentage is not None else ""
        names[rate.id] = " ".join(p for p in (rate.display_name, percent) if p)
    return names


def _tax_lines(invoice: stripe.Invoice, currency: str) -> list[Line]:
    names = _tax_rate_names(invoice)
    per_rate: dict[str, int] = {}
    for tax in invoice.total_taxes or []:
        if tax.tax_behavior != "exclusive":
            continue  # inclusive tax is inside the lines' amounts already
        details = tax.tax_rate_details
        raw = details.tax_rate if details is not None else None
        rate_id = raw if isinstance(raw, str) else (raw.id if raw is not None else "tax")
        per_rate[rate_id] = per_rate.get(rate_id, 0) + tax.amount
    return [
        Line(
            line_id=f"tax:{rate_id}",
            kind=LineKind.TAX.value,
            description=names.get(rate_id) or f"Tax ({rate_id})",
            quantity=Decimal(1),
            unit_amount=None,
            amount=major(amount, currency),
        )
        for rate_id, amount in per_rate.items()
    ]


def credit_note_snapshot(note: stripe.CreditNote) -> CreditNoteSnapshot:
    evidence = metadata_value(note.metadata, EVIDENCE_METADATA_KEY)
    return CreditNoteSnapshot(
        credit_note_id=note.id,
        number=note.number,
        amount=major(note.total, note.currency),
        reason=note.reason or "",
        memo=note.memo or "",
        voided=note.status == "void",
        evidence=tuple(e.strip() for e in evidence.split(",") if e.strip()),
    )


def invoice_snapshot(
    invoice: stripe.Invoice,
    *,
    entity_id: str,
    timezone: ZoneInfo,
    lines: Sequence[stripe.InvoiceLineItem] | None = None,
    credit_notes: Iterable[stripe.CreditNote] = (),
    usage_type: Callable[[str], str | None] = lambda _price: None,
) -> InvoiceSnapshot:
    """The invoice as the ledger records it. `lines`: all of the invoice's lines
    (default: the ones embedded in it, which are all of them unless
    `invoice.lines.has_more`); `usage_type`: a price's `recurring.usage_type`."""
    currency = invoice.currency
    items = list(invoice.lines.data if lines is None else lines)
    ledger_lines = [invoice_line(li, currency, timezone, usage_type) for li in items]
    before_tax = (
        invoice.total_excluding_tax if invoice.total_excluding_tax is not None else invoice.subtotal
    )
    listed = sum((li.amount for li in items), 0)
    if listed != before_tax:
        # Discounts (or anything else Stripe takes off before tax) as one line, so the
        # lines still add up to what was charged.
        ledger_lines.append(
            Line(
                line_id=f"{invoice.id}:discounts",
                kind=LineKind.ADJUSTMENT.value,
                description="Discounts",
                quantity=Decimal(1),
                unit_amount=None,
                amount=major(before_tax - listed, currency),
            )
        )
    ledger_lines.extend(_tax_lines(invoice, currency))
    subtotal, total = major(before_tax, currency), major(invoice.total, currency)
    transitions = invoice.status_transitions
    status = invoice.status or "draft"
    issued_at = transitions.finalized_at or invoice.effective_at
    issue_date = local_date(issued_at, timezone) if issued_at and status != "draft" else None
    due_date = local_date(invoice.due_date, timezone) if invoice.due_date else None
    if due_date is not None and issue_date is not None and due_date < issue_date:
        due_date = issue_date  # due on a day before it was issued: due at once
    replaces = None
    origin = invoice.from_invoice
    if origin is not None and origin.action == "revision":
        replaces = origin.invoice if isinstance(origin.invoice, str) else origin.invoice.id
    # Gone from the API in basil; kept when an older API version still sends it.
    charge = raw_field(invoice, "charge")
    return InvoiceSnapshot(
        stripe_id=invoice.id,
        entity_id=entity_id,
        currency=currency,
        period=period_of(invoice.period_start, invoice.period_end, timezone),
        status=status,
        lines=ledger_lines,
        totals=Totals(subtotal=subtotal, tax=total - subtotal, total=total),
        number=invoice.number,
        issue_date=issue_date,
        due_date=due_date,
        attempt_count=invoice.attempt_count,
        next_attempt_at=instant(invoice.next_payment_attempt),
        last_failure=(
            invoice.last_finalization_error.message or ""
            if invoice.last_finalization_error is not None
            else ""
        ),
        amount_paid=major(invoice.amount_paid + (invoice.amount_paid_off_stripe or 0), currency),
        paid_at=instant(transitions.paid_at),
        receipt_number=invoice.receipt_number,
        charge_id=charge if isinstance(charge, str) else None,
        voided_at=instant(transitions.voided_at),
        marked_uncollectible_at=instant(transitions.marked_uncollectible_at),
        credit_notes=[credit_note_snapshot(n) for n in credit_notes],
        replaces=replaces,
    )


# Reading from Stripe ------------------------------------------------------------------


def pages(fetch: Callable[[str | None], stripe.ListObject[T]]) -> Iterator[T]:
    """Every item of a Stripe list, newest first, `fetch(starting_after)` per
    page (the SDK's auto-pagination would fetch pages no throttle sees)."""
    after: str | None = None
    while True:
        page = fetch(after)
        yield from page.data
        if not page.has_more or not page.data:
            return
        after = str(page.data[-1]["id"])


@dataclass(frozen=True)
class ResolvedEntity:
    entity_id: str
    timezone: ZoneInfo


class EntityDirectory:
    """Which billable entity a Stripe customer is. The ledger's links are read
    again at most every `refresh_every` seconds when a customer is not found (new
    links appear while the worker runs; foreign customers must not cost a scan
    each)."""

    def __init__(self, ledger: Ledger, refresh_every: float = 5.0) -> None:
        self.ledger = ledger
        self.refresh_every = refresh_every
        self._by_customer: dict[str, str] = {}
        self._zones: dict[str, ZoneInfo] = {}
        self._loaded_at: float | None = None
        self._lock = threading.Lock()

    def _reload(self) -> None:
        self._by_customer = {
            e.stripe_customer_id: e.entity_id
            for e in self.ledger.entities()
            if e.stripe_customer_id
        }
        self._zones.clear()
        self._loaded_at = time.monotonic()

    def _linked(self, customer_id: str) -> str | None:
        with self._lock:
            stale = self._loaded_at is None or (
                customer_id not in self._by_customer
                and time.monotonic() - self._loaded_at >= self.refresh_every
            )
            if stale:
                self._reload()
            return self._by_customer.get(customer_id)

    def zone(self, entity_id: str) -> ZoneInfo:
        with self._lock:
            found = self._zones.get(entity_id)
        if found is None:
            try:
                found = ZoneInfo(self.ledger.entity(entity_id).timezone)
            except NotFound:
                raise UnresolvedEntity(
                    f"the Stripe customer names billable entity {entity_id!r}, "
                    "which the ledger does not have"
                ) from None
            with self._lock:
                self._zones[entity_id] = found
        return found

    def resolve(self, customer: str | stripe.Customer | None) -> ResolvedEntity | None:
        if customer is None:
            return None
        if isinstance(customer, str):
            customer_id, named = customer, ""
        else:
            customer_id = customer.id
            # A deleted customer is served as {id, deleted}: no metadata.
            metadata = raw_field(customer, "metadata")
            named = metadata_value(metadata, ENTITY_METADATA_KEY)
        entity_id = named or self._linked(customer_id)
        if not entity_id:
            return None
        return ResolvedEntity(entity_id, self.zone(entity_id))


class PriceBook:
    """A price's `recurring.usage_type` (metered or licensed; None for a one-off
    price). Prices never change their recurrence, so each is read once per
    process; the ledger's own links (a rate version's price is per call, a fixed
    fee's is not) answer first and cost no request."""

    def __init__(self, client: stripe.StripeClient, call: Throttle | None = None) -> None:
        self.client = client
        self.call = call or Throttle()
        self._known: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def learn(self, price_id: str, usage_type: str | None) -> None:
        with self._lock:
            self._known[price_id] = usage_type

    def usage_type(self, price_id: str) -> str | None:
        with self._lock:
            if price_id in self._known:
                return self._known[price_id]
        price = self.call(lambda: self.client.v1.prices.retrieve(price_id))
        usage = price.recurring.usage_type if price.recurring is not None else None
        self.learn(price_id, usage)
        return usage


class InvoiceReader:
    """Reads one invoice from Stripe, fresh, and maps it."""

    def __init__(
        self,
        client: stripe.StripeClient,
        ledger: Ledger,
        limiter: TokenBucket | None = None,
        *,
        entities: EntityDirectory | None = None,
        prices: PriceBook | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.call = throttle or Throttle(limiter)
        self.entities = entities or EntityDirectory(ledger)
        self.prices = prices or PriceBook(client, self.call)

    def retrieve(self, invoice_id: str) -> stripe.Invoice | None:
        """The invoice with its customer expanded; None when Stripe has no such
        invoice (any more)."""
        try:
            return self.call(
                lambda: self.client.v1.invoices.retrieve(invoice_id, {"expand": ["customer"]})
            )
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise

    def read(self, invoice_id: str) -> InvoiceSnapshot | NotForTheLedger:
        invoice = self.retrieve(invoice_id)
        if invoice is None:
            return NotForTheLedger(f"Stripe has no invoice {invoice_id} (a deleted draft)")
        return self.snapshot_of(invoice)

    def snapshot_of(
        self, invoice: stripe.Invoice, credit_notes: Sequence[stripe.CreditNote] | None = None
    ) -> InvoiceSnapshot | NotForTheLedger:
        """Map an invoice already read (from `retrieve`, or from a list page with
        `data.customer` expanded), reading its remaining lines and (unless given:
        `sync` lists them all at once) its credit notes."""
        resolved = self.entities.resolve(invoice.customer)
        if resolved is None:
            customer = invoice.customer
            name = customer if isinstance(customer, str) else getattr(customer, "id", None)
            return NotForTheLedger(f"customer {name} is not linked to a billable entity")
        self._learn_rate_prices(resolved.entity_id)
        found = self._with_every_line(invoice)
        if found is None:
            return NotForTheLedger(f"Stripe has no invoice {invoice.id} (a deleted draft)")
        invoice, lines = found
        if credit_notes is None:
            credit_notes = list(
                pages(
                    lambda after: self.call(
                        lambda: self.client.v1.credit_notes.list(
                            credit_note_page(invoice.id, after)
                        )
                    )
                )
            )
        return invoice_snapshot(
            invoice,
            entity_id=resolved.entity_id,
            timezone=resolved.timezone,
            lines=lines,
            credit_notes=credit_notes,
            usage_type=self.prices.usage_type,
        )

    def _with_every_line(
        self, invoice: stripe.Invoice
    ) -> tuple[stripe.Invoice, list[stripe.InvoiceLineItem]] | None:
        """The invoice with all of its lines, read in one state of it. Past the lines
        Stripe embeds, the rest take more requests, and a draft revised between them
        would be mapped as its old totals with new lines (the gap ending up in the
        difference line: a state Stripe never had). So the invoice is read again
        after its lines and must be unchanged, else all is read again. The lines
        are not checked to add up to the totals instead: Stripe's own discounts make
        them differ, and that difference is real. None: the invoice is gone."""
        for _ in range(PAGED_READS):
            if not invoice.lines.has_more:
                return invoice, list(invoice.lines.data)
            lines = self._lines_of(invoice.id)
            again = self.retrieve(invoice.id)
            if again is None:
                return None
            embedded = _state_of(invoice, invoice.lines.data)
            if (
                embedded
                == _state_of(again, again.lines.data)
                == _state_of(invoice, lines[: len(invoice.lines.data)])
            ):
                return invoice, lines
            invoice = again
        raise InvoiceKeptChanging(
            f"Stripe revised invoice {invoice.id} while its lines were read, "
            f"{PAGED_READS} times: read it again later"
        )

    def _lines_of(self, invoice_id: str) -> list[stripe.InvoiceLineItem]:
        return list(
            pages(
                lambda after: self.call(
                    lambda: self.client.v1.invoices.line_items.list(invoice_id, line_page(after))
                )
            )
        )

    def _learn_rate_prices(self, entity_id: str) -> None:
        try:
            rate = self.ledger.rate(entity_id)
        except NotFound:
            return
        for version in rate.versions:
            if version.stripe_price_id:
                self.prices.learn(version.stripe_price_id, "metered")
        for fee in rate.fees.values():
            if fee.stripe_price_id:
                self.prices.learn(fee.stripe_price_id, "licensed")


def _state_of(
    invoice: stripe.Invoice, first_lines: Sequence[stripe.InvoiceLineItem]
) -> tuple[object, ...]:
    """What changes when Stripe revises an invoice (it has no revision counter):
    its status and amounts, and its first lines."""
    return (
        invoice.status,
        invoice.subtotal,
        invoice.total_excluding_tax,
        invoice.total,
        tuple((line.id, line.amount) for line in first_lines),
    )


def line_page(after: str | None) -> stripe.params.InvoiceLineItemListParams:
    params: stripe.params.InvoiceLineItemListParams = {"limit": PAGE}
    if after is not None:
        params["starting_after"] = after
    return params


def credit_note_page(invoice_id: str, after: str | None) -> stripe.params.CreditNoteListParams:
    params: stripe.params.CreditNoteListParams = {"invoice": invoice_id, "limit": PAGE}
    if after is not None:
        params["starting_after"] = after
    return params
