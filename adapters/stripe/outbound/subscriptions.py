"""One subscription per billable entity: its fixed monthly fees (licensed, one of
each) and the metered price of the rate version in force when it starts. A setup
fee becomes a pending invoice item, which Stripe sweeps into the first invoice.

Key: `billtrail/subscription/<entity id>`; the subscription's id is the answer
recorded for it (`subscription_of`).

The subscription starts when it is created, on the customer's clock. Billing
periods are days in the entity's time zone (that is how the ledger counts calls
and reads invoice periods), so create it at the entity's local midnight (the demo
does, on a test clock per entity); Stripe's `billing_cycle_anchor` would do it in
production, and the sandbox does not serve it yet.

A later rate version is pushed as a Price but does not change the subscription's
metered price: Stripe bills none of the usage reported before a mid-period price
change, and the sandbox cannot change subscription items. Usage billed at an
outdated price shows up in `reconcile` (amount_differs) and is corrected like a
wrong rate (void and replace)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Literal
from zoneinfo import ZoneInfo

from stripe.params import (
    InvoiceItemCreateParams,
    SubscriptionCreateParams,
    SubscriptionCreateParamsItem,
    SubscriptionListParams,
)

from adapters.stripe.outbound.catalog import (
    ENTITY_METADATA_KEY,
    KIND_METADATA_KEY,
    metadata_value,
)
from adapters.stripe.outbound.outbox import OutboundError, Outbox
from ledger.entities.domain import BillableEntity
from ledger.errors import NotFound
from ledger.rates.domain import FeeKind, Rate


@dataclass(frozen=True)
class BillingTerms:
    """How an entity pays: charged automatically (a card on file), or sent the
    invoice to pay within `days_until_due` days."""

    collection_method: Literal["charge_automatically", "send_invoice"] = "charge_automatically"
    days_until_due: int | None = None


CHARGE_AUTOMATICALLY = BillingTerms()


def subscription_key(entity_id: str) -> str:
    return f"billtrail/subscription/{entity_id}"


def setup_fee_key(entity_id: str, fee_id: str) -> str:
    return f"billtrail/setup-fee/{entity_id}/{fee_id}"


def subscription_of(outbox: Outbox, entity_id: str) -> str | None:
    request = outbox.ledger.stripe_request(subscription_key(entity_id))
    return request.object_id if request is not None and request.answered else None


@dataclass
class SubscriptionsPushed:
    created: list[str] = field(default_factory=list)
    already: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # entity -> why


def push_subscriptions(
    outbox: Outbox,
    *,
    entity_ids: list[str] | None = None,
    terms: Callable[[BillableEntity], BillingTerms] = lambda _entity: CHARGE_AUTOMATICALLY,
) -> SubscriptionsPushed:
    report = SubscriptionsPushed()
    for entity in outbox.ledger.entities():
        if entity.archived or (entity_ids is not None and entity.entity_id not in entity_ids):
            continue
        if subscription_of(outbox, entity.entity_id) is not None:
            report.already += 1
            continue
        why = _not_ready(outbox, entity)
        if why:
            report.skipped[entity.entity_id] = why
            continue
        push_subscription(outbox, entity, terms(entity))
        report.created.append(entity.entity_id)
    return report


def _not_ready(outbox: Outbox, entity: BillableEntity) -> str:
    if not entity.stripe_customer_id:
        return "no Stripe customer yet"
    try:
        rate = outbox.ledger.rate(entity.entity_id)
    except NotFound:
        return "no rate contracted"
    version = rate.version_on(_today(outbox, entity))
    if version is None:
        return "no rate in force yet"
    if version.stripe_price_id is None:
        return f"rate version {version.version} has no Stripe price yet"
    return ""


def _today(outbox: Outbox, entity: BillableEntity) -> date:
    return outbox.ledger.clock().astimezone(ZoneInfo(entity.timezone)).date()


def push_subscription(outbox: Outbox, entity: BillableEntity, terms: BillingTerms) -> str:
    client = outbox.client
    customer = entity.stripe_customer_id
    if customer is None:
        raise OutboundError(f"{entity.entity_id} has no Stripe customer yet")
    rate = outbox.ledger.rate(entity.entity_id)
    today = _today(outbox, entity)
    version = rate.version_on(today)
    if version is None or version.stripe_price_id is None:
        raise OutboundError(f"{entity.entity_id} has no priced rate in force on {today}")
    _push_setup_fees(outbox, rate, customer, today)
    items: list[SubscriptionCreateParamsItem] = [
        {"price": fee.stripe_price_id, "quantity": 1}
        for fee in rate.fees_on(today)
        if fee.kind != FeeKind.SETUP and fee.stripe_price_id is not None
    ]
    items.append({"price": version.stripe_price_id})
    params: SubscriptionCreateParams = {
        "customer": customer,
        "items": items,
        "collection_method": terms.collection_method,
        "metadata": {
            ENTITY_METADATA_KEY: entity.entity_id,
            "billtrail_rate_version": str(version.version),
        },
    }
    if terms.collection_method == "send_invoice":
        params["days_until_due"] = terms.days_until_due if terms.days_until_due else 30

    def find() -> str | None:
        query: SubscriptionListParams = {"customer": customer, "status": "all", "limit": 100}
        for subscription in client.v1.subscriptions.list(query).data:
            if metadata_value(subscription, ENTITY_METADATA_KEY) == entity.entity_id:
                return subscription.id
        return None

    outcome = outbox.call(
        subscription_key(entity.entity_id),
        "subscriptions.create",
        params,
        client.v1.subscriptions.create,
        recover=find,
    )
    if outcome.object_id is None:
        raise OutboundError("Stripe answered without the id of the subscription")
    return outcome.object_id


def _push_setup_fees(outbox: Outbox, rate: Rate, customer: str, today: date) -> None:
    for fee in rate.fees_on(today):
        if fee.kind != FeeKind.SETUP or fee.stripe_price_id is None:
            continue
        params: InvoiceItemCreateParams = {
            "customer": customer,
            "pricing": {"price": fee.stripe_price_id},
            "description": fee.description,
            "metadata": {KIND_METADATA_KEY: "fee", "billtrail_fee_id": fee.fee_id},
        }
        outbox.call(
            setup_fee_key(rate.entity_id, fee.fee_id),
            "invoice_items.create",
            params,
            outbox.client.v1.invoice_items.create,
        )
