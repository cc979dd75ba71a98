"""The catalog billtrail keeps in Stripe: one Billing Meter for calls, one product
for calls, and a Price per rate version (metered, `unit_amount_decimal` in minor
units for sub-cent per-call prices) and per fixed fee (licensed monthly, or one-off
for a setup fee). Every price is linked to its rate version or fee in the ledger.

Keys: `billtrail/meter/<event name>`, `billtrail/product/calls`,
`billtrail/price/<entity>/v<version>`, `billtrail/price/<entity>/fee/<fee id>`."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import stripe
from stripe.params import PriceCreateParams, ProductCreateParams
from stripe.params.billing import MeterCreateParams

from adapters.stripe.outbound.outbox import OutboundError, Outbox
from ledger.errors import NotFound
from ledger.money import Money, exponent
from ledger.rates.domain import FeeKind, FixedFee, Rate, RateVersion
from ledger.stripe_outbox.application import PriceLink

METER_EVENT_NAME = "billtrail_calls"
METER_KEY = f"billtrail/meter/{METER_EVENT_NAME}"
CALLS_PRODUCT_ID = "billtrail_calls"
CALLS_PRODUCT_KEY = "billtrail/product/calls"
ENTITY_METADATA_KEY = "billtrail_entity_id"
KIND_METADATA_KEY = "billtrail_kind"


def metadata_value(obj: stripe.StripeObject, key: str) -> str:
    """A metadata value of a Stripe object ("" when absent)."""
    metadata = getattr(obj, "metadata", None)
    if metadata is None or key not in metadata:
        return ""
    return str(metadata[key] or "")


class NotSetUp(OutboundError):
    """Something the push needs has not been pushed yet (run `billtrail stripe push`)."""


def minor_unit_price(unit_price: Decimal, currency: str) -> Decimal:
    """A per-call price in major units as Stripe's `unit_amount_decimal`: minor
    units, exactly (0.0125 EUR -> 1.25 cents)."""
    return unit_price.scaleb(exponent(currency))


def version_price_key(entity_id: str, version: int) -> str:
    return f"billtrail/price/{entity_id}/v{version}"


def fee_price_key(entity_id: str, fee_id: str) -> str:
    return f"billtrail/price/{entity_id}/fee/{fee_id}"


def lookup_key(entity_id: str, what: str) -> str:
    return f"billtrail_{entity_id}_{what}"


# The meter and the product -----------------------------------------------------------


def ensure_meter(outbox: Outbox) -> str:
    """The id of the Billing Meter for calls (sum of the `value` of each event,
    per customer by `stripe_customer_id`)."""
    client = outbox.client

    def find() -> str | None:
        for meter in client.v1.billing.meters.list({"status": "active", "limit": 100}).data:
            if meter.event_name == METER_EVENT_NAME:
                return meter.id
        return None

    params: MeterCreateParams = {
        "display_name": "Calls handled",
        "event_name": METER_EVENT_NAME,
        "default_aggregation": {"formula": "sum"},
        "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
        "value_settings": {"event_payload_key": "value"},
    }
    outcome = outbox.call(
        METER_KEY, "billing.meters.create", params, client.v1.billing.meters.create, recover=find
    )
    return _required(outcome.object_id, "meter")


def meter_id(outbox: Outbox) -> str:
    """The meter pushed before; NotSetUp when there is none."""
    request = outbox.ledger.stripe_request(METER_KEY)
    if request is None or not request.answered or request.object_id is None:
        raise NotSetUp("no Billing Meter for calls in Stripe yet; run `billtrail stripe push`")
    return request.object_id


def ensure_calls_product(outbox: Outbox) -> str:
    client = outbox.client

    def find() -> str | None:
        try:
            return client.v1.products.retrieve(CALLS_PRODUCT_ID).id
        except stripe.InvalidRequestError:
            return None

    params: ProductCreateParams = {
        "id": CALLS_PRODUCT_ID,
        "name": "Calls handled",
        "unit_label": "call",
        "metadata": {KIND_METADATA_KEY: "usage"},
    }
    outcome = outbox.call(
        CALLS_PRODUCT_KEY, "products.create", params, client.v1.products.create, recover=find
    )
    return _required(outcome.object_id, "product")


# Prices ------------------------------------------------------------------------------


@dataclass
class PricesPushed:
    created: list[str] = field(default_factory=list)  # keys of prices linked now
    skipped: list[str] = field(default_factory=list)  # entities without a rate


def push_prices(outbox: Outbox, entity_ids: list[str] | None = None) -> PricesPushed:
    """A Price for every rate version and fixed fee not linked to one yet."""
    ledger = outbox.ledger
    meter = ensure_meter(outbox)
    product = ensure_calls_product(outbox)
    report = PricesPushed()
    for entity in ledger.entities():
        if entity_ids is not None and entity.entity_id not in entity_ids:
            continue
        try:
            rate = ledger.rate(entity.entity_id)
        except NotFound:
            report.skipped.append(entity.entity_id)
            continue
        links: list[PriceLink] = []
        for version in rate.versions:
            if version.stripe_price_id is None:
                price = _push_version_price(outbox, rate, version, meter, product)
                links.append(PriceLink(price, version=version.version))
                report.created.append(version_price_key(rate.entity_id, version.version))
        for fee in rate.fees.values():
            if fee.stripe_price_id is None:
                price = _push_fee_price(outbox, rate, fee)
                links.append(PriceLink(price, fee_id=fee.fee_id))
                report.created.append(fee_price_key(rate.entity_id, fee.fee_id))
        if links:
            ledger.link_stripe_prices(rate.entity_id, links, outbox.source)
    return report


def _push_version_price(
    outbox: Outbox, rate: Rate, version: RateVersion, meter: str, product: str
) -> str:
    params: PriceCreateParams = {
        "currency": rate.currency,
        "product": product,
        "unit_amount_decimal": minor_unit_price(version.unit_price, rate.currency),
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter},
        "lookup_key": lookup_key(rate.entity_id, f"calls_v{version.version}"),
        "nickname": f"{rate.entity_id} calls v{version.version} from {version.effective_from}",
        "metadata": {
            ENTITY_METADATA_KEY: rate.entity_id,
            "billtrail_rate_version": str(version.version),
            KIND_METADATA_KEY: "usage",
        },
    }
    return _push_price(outbox, version_price_key(rate.entity_id, version.version), params)


def _push_fee_price(outbox: Outbox, rate: Rate, fee: FixedFee) -> str:
    params: PriceCreateParams = {
        "currency": rate.currency,
        "unit_amount": Money(fee.amount, rate.currency).to_minor(),
        "product_data": {"name": fee.description or fee.kind},
        "lookup_key": lookup_key(rate.entity_id, f"fee_{fee.fee_id}"),
        "nickname": f"{rate.entity_id} {fee.kind} {fee.fee_id}",
        "metadata": {
            ENTITY_METADATA_KEY: rate.entity_id,
            "billtrail_fee_id": fee.fee_id,
            KIND_METADATA_KEY: "fee",
        },
    }
    if fee.kind != FeeKind.SETUP:
        params["recurring"] = {"interval": "month", "usage_type": "licensed"}
    return _push_price(outbox, fee_price_key(rate.entity_id, fee.fee_id), params)


def _push_price(outbox: Outbox, key: str, params: PriceCreateParams) -> str:
    """Create the price; a request too old for Stripe to remember its key is first
    looked up by the price's lookup key."""
    client = outbox.client
    lookup = params["lookup_key"]

    def find() -> str | None:
        found = client.v1.prices.list({"lookup_keys": [lookup], "limit": 1}).data
        return found[0].id if found else None

    outcome = outbox.call(key, "prices.create", params, client.v1.prices.create, recover=find)
    return _required(outcome.object_id, "price")


def _required(object_id: str | None, what: str) -> str:
    if object_id is None:
        raise OutboundError(f"Stripe answered without the id of the {what}")
    return object_id
