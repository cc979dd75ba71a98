"""`push_all`: everything an entity needs in Stripe, in the order Stripe needs it:
the meter and the calls product, customers, prices, then subscriptions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from adapters.stripe.outbound.catalog import PricesPushed, push_prices
from adapters.stripe.outbound.customers import CustomersPushed, push_customers
from adapters.stripe.outbound.outbox import Outbox
from adapters.stripe.outbound.subscriptions import (
    CHARGE_AUTOMATICALLY,
    BillingTerms,
    SubscriptionsPushed,
    push_subscriptions,
)
from ledger.entities.domain import BillableEntity


@dataclass(frozen=True)
class PushReport:
    customers: CustomersPushed
    prices: PricesPushed
    subscriptions: SubscriptionsPushed

    def summary(self) -> dict[str, int]:
        return {
            "customers": len(self.customers.created),
            "prices": len(self.prices.created),
            "subscriptions": len(self.subscriptions.created),
            "skipped": len(self.subscriptions.skipped),
        }


def push_all(
    outbox: Outbox,
    *,
    terms: Callable[[BillableEntity], BillingTerms] = lambda _entity: CHARGE_AUTOMATICALLY,
    test_clocks: Mapping[str, str] | None = None,
) -> PushReport:
    customers = push_customers(outbox, test_clocks=test_clocks)
    prices = push_prices(outbox)
    subscriptions = push_subscriptions(outbox, terms=terms)
    return PushReport(customers, prices, subscriptions)
