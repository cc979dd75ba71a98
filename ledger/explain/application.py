"""explain: reconstruct why an invoice says what it says, from ledger events alone
(never by asking Stripe at query time), as the ledger knew it at an instant.

Reads, for one invoice: its events; the entity's, the rate's and each period day's
usage events, each read and decoded once and folded at the two instants that
matter (at issue and as of; see ledger.explain.domain)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.app import Ledger
from ledger.application import check_aware, topics_of
from ledger.entities.domain import BillableEntity
from ledger.errors import NotRecordedYet, UnknownInvoice
from ledger.explain.domain import DayUsage, Explanation, build_explanation, period_days
from ledger.explain.replay import states_at
from ledger.invoices.domain import Invoice
from ledger.rates.domain import Rate
from ledger.usage.domain import Usage


def explain(ledger: Ledger, ref: str, as_of: datetime | None = None) -> Explanation:
    """The explanation of the invoice `ref` (its number or its Stripe id) as the
    ledger knew it at `as_of` (recorded time; default: the ledger's clock now).

    Raises UnknownInvoice for an invoice the ledger never recorded, and
    NotRecordedYet for one first recorded after `as_of`."""
    at = ledger.clock() if as_of is None else as_of
    check_aware(at)
    invoice_id = invoice_id_of(ledger, ref)
    events, (invoice,) = states_at(ledger, invoice_id, [at])
    if not events or not isinstance(events[0], Invoice.Drafted):
        raise UnknownInvoice(f"no invoice {ref!r}")
    if invoice is None:
        raise NotRecordedYet(
            f"invoice {ref} was first recorded at {events[0].timestamp.isoformat()}, "
            f"after {at.isoformat()}"
        )
    known = [e for e in events if e.timestamp <= at]
    issued_at = next((e.timestamp for e in known if isinstance(e, Invoice.Issued)), None)
    then = issued_at or at
    entity = _entity(ledger, invoice.entity_id, then, at)
    _, (rate_then, rate_now) = states_at(ledger, Rate.create_id(invoice.entity_id), [then, at])
    usage = []
    for day in period_days(invoice):
        _, (u_then, u_now) = states_at(ledger, Usage.create_id(invoice.entity_id, day), [then, at])
        usage.append(DayUsage(day, u_then, u_now))
    return build_explanation(
        as_of=at,
        invoice=invoice,
        invoice_events=known,
        entity=entity,
        usage=usage,
        rate_at_issue=rate_then,
        rate_as_of=rate_now,
    )


def invoice_id_of(ledger: Ledger, ref: str) -> UUID:
    """The invoice aggregate's id for a Stripe id (in_...) or an invoice number."""
    ref = ref.strip()
    if not ref:
        raise UnknownInvoice("an invoice number or Stripe invoice id is needed")
    if ref.startswith("in_"):
        return Invoice.create_id(ref)
    # Numbers are only in Issued events: one indexed read of that topic. (The portal
    # resolves numbers from its projection first; this is the ledger-only answer.)
    for event in ledger.events_of_topics(topics_of(Invoice.Issued)):
        if event.number == ref:
            found: UUID = event.originator_id
            return found
    raise UnknownInvoice(f"no invoice {ref!r}")


def _entity(ledger: Ledger, entity_id: str, then: datetime, at: datetime) -> BillableEntity:
    _, (entity_then, entity_now) = states_at(
        ledger, BillableEntity.create_id(entity_id), [then, at]
    )
    # The invoice names an entity the ledger had when it recorded the invoice, so
    # at issue it exists; as of is the fallback for a log that says otherwise.
    found: Any = entity_then or entity_now
    if not isinstance(found, BillableEntity):
        raise UnknownInvoice(f"the invoice's entity {entity_id!r} is not in the ledger")
    return found
