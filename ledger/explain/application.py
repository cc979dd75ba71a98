"""explain: reconstruct why an invoice says what it says, from ledger events alone
(never by asking Stripe at query time), as the ledger knew it at an instant.

Reads, for one invoice: its events; the entity's, the rate's and each period day's
usage events, each read and decoded once and folded at the two instants that
matter (at issue and as of; see ledger.explain.domain)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from ledger.app import Ledger
from ledger.application import check_aware, topics_of
from ledger.entities.domain import BillableEntity
from ledger.errors import NotRecordedYet, UnknownInvoice
from ledger.explain.domain import DayUsage, Explanation, build_explanation, period_days
from ledger.explain.replay import collection_paused, states_at
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
    with collection_paused():
        return _explain(ledger, ref, invoice_id, at)


def _explain(ledger: Ledger, ref: str, invoice_id: UUID, at: datetime) -> Explanation:
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
    # Numbers are only in Issued events: read that topic's rows (the portal, which
    # has the number in its read model, passes the Stripe id). Stored states are
    # JSON as the transcoder writes it, so a row whose bytes lack the number as a
    # JSON string cannot hold it and is not decoded; a cipher or a compressor hides
    # the bytes, and then every row is decoded.
    needle = json.dumps(ref, ensure_ascii=False, separators=(",", ":")).encode()
    plain = ledger.mapper.cipher is None and ledger.mapper.compressor is None
    position: int | None = None
    while notes := ledger.recorder.select_notifications(
        start=position, limit=1000, topics=topics_of(Invoice.Issued), inclusive_of_start=False
    ):
        for note in notes:
            if plain and needle not in note.state:
                continue
            event: Any = ledger.mapper.to_domain_event(note)
            if event.number == ref:
                found: UUID = event.originator_id
                return found
        position = notes[-1].id
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
