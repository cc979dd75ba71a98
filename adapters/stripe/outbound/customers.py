"""One Stripe customer per billable entity, made once and linked in the ledger
(`BillableEntity.StripeCustomerLinked`) with the push's source.

Key: `billtrail/customer/<entity id>`. The customer carries the entity id in its
metadata (`billtrail_entity_id`), which is how the inbound half resolves it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stripe.params import CustomerCreateParams, CustomerListParams

from adapters.stripe.outbound.catalog import ENTITY_METADATA_KEY, metadata_value
from adapters.stripe.outbound.outbox import OutboundError, Outbox
from ledger.entities.domain import BillableEntity


def customer_key(entity_id: str) -> str:
    return f"billtrail/customer/{entity_id}"


@dataclass
class CustomersPushed:
    created: list[str] = field(default_factory=list)
    already: int = 0


def push_customers(
    outbox: Outbox,
    *,
    entity_ids: list[str] | None = None,
    test_clocks: Mapping[str, str] | None = None,
) -> CustomersPushed:
    """A Stripe customer for every active entity that has none. `test_clocks`
    (entity id -> test clock id) puts customers on Stripe test clocks (the demo,
    tests)."""
    report = CustomersPushed()
    for entity in outbox.ledger.entities():
        if entity.archived or (entity_ids is not None and entity.entity_id not in entity_ids):
            continue
        if entity.stripe_customer_id:
            report.already += 1
            continue
        clock = (test_clocks or {}).get(entity.entity_id)
        customer_id = push_customer(outbox, entity, clock)
        outbox.ledger.link_stripe_customer(entity.entity_id, customer_id, outbox.source)
        report.created.append(entity.entity_id)
    return report


def push_customer(outbox: Outbox, entity: BillableEntity, test_clock: str | None = None) -> str:
    client = outbox.client
    params: CustomerCreateParams = {
        "name": entity.name,
        "metadata": {ENTITY_METADATA_KEY: entity.entity_id},
    }
    if entity.emails:
        params["email"] = entity.emails[0]
    if test_clock:
        params["test_clock"] = test_clock

    def find() -> str | None:
        # Stripe has forgotten the key: the customer may exist all the same.
        query: CustomerListParams = {"limit": 100}
        if entity.emails:
            query["email"] = entity.emails[0]
        for customer in client.v1.customers.list(query).data:
            if metadata_value(customer, ENTITY_METADATA_KEY) == entity.entity_id:
                return customer.id
        return None

    outcome = outbox.call(
        customer_key(entity.entity_id),
        "customers.create",
        params,
        client.v1.customers.create,
        recover=find,
    )
    if outcome.object_id is None:
        raise OutboundError("Stripe answered without the id of the customer")
    return outcome.object_id
