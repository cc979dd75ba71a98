"""Recording in the ledger what the outbound half just changed in Stripe.

`observe_invoices` re-reads invoices from Stripe with the inbound half's reader
(`adapters.stripe.invoices.InvoiceReader`, the mapping the webhook worker and
`sync` use) and records what the ledger lacks with `observe_invoice`. A
correction calls it for the invoices it voided, created or credited, so the ledger
holds the result at once, whatever the webhooks do later (`observe_invoice`
records each fact once, whoever brings it first).

`pull_invoices_from_stripe` does the same for every invoice of the entities'
customers: the demo's stand-in for webhooks flowing back while the webhook
worker is not part of the demo."""

from __future__ import annotations

from collections.abc import Iterable

import stripe

from adapters.stripe.invoices import InvoiceReader, NotForTheLedger
from ledger.app import Ledger
from ledger.sources import Source

EVIDENCE_METADATA_KEY = "billtrail_evidence"
# Stripe metadata values hold at most 500 characters.
MAX_METADATA_VALUE = 500


def evidence_metadata(call_ids: Iterable[str]) -> str:
    """Call ids as one metadata value (comma separated), as the inbound mapping
    reads a credit note's evidence; ValueError when they do not fit."""
    text = ",".join(call_ids)
    if len(text) > MAX_METADATA_VALUE:
        raise ValueError(
            f"the call ids take {len(text)} characters; a credit note's evidence holds "
            f"{MAX_METADATA_VALUE}: split them over several credit notes"
        )
    return text


def observe_invoices(
    client: stripe.StripeClient, ledger: Ledger, source: Source, invoice_ids: Iterable[str]
) -> int:
    """Read the invoices from Stripe and record what is new; how many changed."""
    reader = InvoiceReader(client, ledger)
    changed = 0
    for invoice_id in invoice_ids:
        snapshot = reader.read(invoice_id)
        if isinstance(snapshot, NotForTheLedger):
            continue
        if ledger.observe_invoice(snapshot, source):
            changed += 1
    return changed


def pull_invoices_from_stripe(
    client: stripe.StripeClient,
    ledger: Ledger,
    source: Source,
    *,
    entity_ids: Iterable[str] | None = None,
) -> int:
    """Every invoice of the entities' Stripe customers, oldest first, recorded as
    Stripe has it now. Returns how many invoices changed in the ledger."""
    wanted = None if entity_ids is None else set(entity_ids)
    reader = InvoiceReader(client, ledger)
    changed = 0
    for entity in ledger.entities():
        customer = entity.stripe_customer_id
        if customer is None or (wanted is not None and entity.entity_id not in wanted):
            continue
        listed = client.v1.invoices.list({"customer": customer, "limit": 100})
        for invoice in reversed(list(listed.auto_paging_iter())):
            snapshot = reader.snapshot_of(invoice)
            if isinstance(snapshot, NotForTheLedger):
                continue
            if ledger.observe_invoice(snapshot, source):
                changed += 1
    return changed
