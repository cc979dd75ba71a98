"""Rate: an entity's contract. Bitemporal: `effective_from` is when a price applies
to calls (valid time); the event's timestamp is when the ledger learnt it (recorded
time). Rebuilding the aggregate as recorded at T (Ledger.as_recorded) and asking
`version_on(day)` answers "which price applied to that day, as known at T"."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from ledger.aggregate import LedgerAggregate
from ledger.errors import InvalidRate
from ledger.money import normalise_currency
from ledger.sources import Source
from ledger.values import natural_id

# Stripe's unit_amount_decimal takes at most 12 decimal places of the minor unit.
MAX_UNIT_PRICE_PLACES = 12
# The portal's correction forms' bound too. Beyond it a price is a typo (Stripe
# refuses unit amounts past 10^8 minor units), and an exponent like 1E+999999
# overflows Decimal arithmetic wherever calls are multiplied by it.
MAX_UNIT_PRICE = Decimal(1_000_000)


class FeeKind(StrEnum):
    SETUP = "setup"
    MONTHLY_MINIMUM = "monthly_minimum"
    ADDON = "addon"


@dataclass(frozen=True)
class RateVersion:
    version: int
    unit_price: Decimal
    effective_from: date
    recorded_at: datetime
    reason: str
    source: Source
    stripe_price_id: str | None = None


@dataclass(frozen=True)
class FixedFee:
    fee_id: str
    kind: str
    description: str
    amount: Decimal
    effective_from: date
    effective_until: date | None
    recorded_at: datetime
    source: Source
    stripe_price_id: str | None = None

    def applies_on(self, day: date) -> bool:
        return self.effective_from <= day and (
            self.effective_until is None or day < self.effective_until
        )


def check_unit_price(unit_price: Decimal) -> Decimal:
    if not isinstance(unit_price, Decimal) or not unit_price.is_finite():
        raise InvalidRate(f"a per-call price must be a decimal number, got {unit_price!r}")
    if unit_price < 0:
        raise InvalidRate(f"a per-call price cannot be negative: {unit_price}")
    if unit_price > MAX_UNIT_PRICE:
        raise InvalidRate(f"a per-call price is at most {MAX_UNIT_PRICE}: {unit_price}")
    exponent = unit_price.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_UNIT_PRICE_PLACES + 2:
        raise InvalidRate(f"a per-call price has at most 14 decimal places: {unit_price}")
    return unit_price


class Rate(LedgerAggregate):
    TOPIC = "billtrail:Rate"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:Rate.Created"

    class Contracted(Created):
        TOPIC = "billtrail:Rate.Contracted"
        entity_id: str
        currency: str
        unit_price: Decimal
        effective_from: date
        reason: str

    class Revised(Event):
        TOPIC = "billtrail:Rate.Revised"
        unit_price: Decimal
        effective_from: date
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate._add_version(self)

    class FixedFeeAdded(Event):
        TOPIC = "billtrail:Rate.FixedFeeAdded"
        fee_id: str
        kind: str
        description: str
        amount: Decimal
        effective_from: date

        def apply(self, aggregate: Any) -> None:
            aggregate.fees[self.fee_id] = FixedFee(
                fee_id=self.fee_id,
                kind=self.kind,
                description=self.description,
                amount=self.amount,
                effective_from=self.effective_from,
                effective_until=None,
                recorded_at=self.timestamp,
                source=self.source,
            )

    class FixedFeeEnded(Event):
        TOPIC = "billtrail:Rate.FixedFeeEnded"
        fee_id: str
        effective_until: date
        reason: str

        def apply(self, aggregate: Any) -> None:
            fee = aggregate.fees[self.fee_id]
            aggregate.fees[self.fee_id] = replace(fee, effective_until=self.effective_until)

    class StripePriceLinked(Event):
        """A Stripe Price now stands for a rate version (`version`) or a fee (`fee_id`)."""

        TOPIC = "billtrail:Rate.StripePriceLinked"
        price_id: str
        version: int | None
        fee_id: str | None

        def apply(self, aggregate: Any) -> None:
            if self.fee_id is not None:
                fee = aggregate.fees[self.fee_id]
                aggregate.fees[self.fee_id] = replace(fee, stripe_price_id=self.price_id)
            elif self.version is not None:
                v = aggregate.versions[self.version - 1]
                aggregate.versions[self.version - 1] = replace(v, stripe_price_id=self.price_id)

    def __init__(
        self,
        entity_id: str,
        currency: str,
        unit_price: Decimal,
        effective_from: date,
        reason: str,
        source: Source,
    ) -> None:
        self.entity_id = entity_id
        self.currency = currency
        # created_on is the Contracted event's timestamp: the contract's recorded time.
        self.versions = [
            RateVersion(1, unit_price, effective_from, self.created_on, reason, source)
        ]
        self.fees: dict[str, FixedFee] = {}

    def _add_version(self, event: Any) -> None:
        self.versions.append(
            RateVersion(
                version=len(self.versions) + 1,
                unit_price=event.unit_price,
                effective_from=event.effective_from,
                recorded_at=event.timestamp,
                reason=event.reason,
                source=event.source,
            )
        )

    @staticmethod
    def create_id(entity_id: str) -> UUID:
        return natural_id("rate", entity_id)

    @classmethod
    def contract(
        cls,
        entity_id: str,
        currency: str,
        unit_price: Decimal,
        effective_from: date,
        reason: str,
        source: Source,
        at: datetime,
    ) -> Rate:
        return cls._create(
            cls.Contracted,
            id=cls.create_id(entity_id),
            entity_id=entity_id,
            currency=normalise_currency(currency),
            unit_price=check_unit_price(unit_price),
            effective_from=effective_from,
            reason=reason,
            source=source,
            timestamp=at,
        )

    def version_on(self, day: date) -> RateVersion | None:
        """The version in force on `day`: the latest effective_from on or before it;
        of two versions from the same day, the one recorded later."""
        best: RateVersion | None = None
        for v in self.versions:
            if v.effective_from <= day and (
                best is None or v.effective_from >= best.effective_from
            ):
                best = v
        return best

    def fees_on(self, day: date) -> list[FixedFee]:
        return [fee for fee in self.fees.values() if fee.applies_on(day)]

    def revise(
        self,
        unit_price: Decimal,
        currency: str,
        effective_from: date,
        reason: str,
        source: Source,
        at: datetime,
    ) -> bool:
        if normalise_currency(currency) != self.currency:
            raise InvalidRate(
                f"the rate of {self.entity_id} is in {self.currency.upper()}; "
                f"a price in {currency.upper()} needs a new contract"
            )
        unit_price = check_unit_price(unit_price)
        current = self.version_on(effective_from)
        if (
            current is not None
            and current.effective_from == effective_from
            and current.unit_price == unit_price
        ):
            return False
        self._record(
            self.Revised,
            at,
            unit_price=unit_price,
            effective_from=effective_from,
            reason=reason,
            source=source,
        )
        return True

    def add_fixed_fee(
        self,
        fee_id: str,
        kind: str,
        description: str,
        amount: Decimal,
        effective_from: date,
        source: Source,
        at: datetime,
    ) -> bool:
        try:
            kind = FeeKind(kind).value
        except ValueError as exc:
            raise InvalidRate(
                f"fee kind must be setup, monthly_minimum or addon: {kind!r}"
            ) from exc
        if not isinstance(amount, Decimal) or not amount.is_finite():
            # Checked like a unit price: a float stored in an event stays there forever.
            raise InvalidRate(f"a fixed fee must be a decimal amount, got {amount!r}")
        if amount < 0:
            raise InvalidRate(f"a fixed fee cannot be negative: {amount}")
        if fee_id in self.fees:
            if self.fees[fee_id].amount == amount and self.fees[fee_id].kind == kind:
                return False
            raise InvalidRate(f"fee {fee_id} already exists with other terms; end it first")
        self._record(
            self.FixedFeeAdded,
            at,
            fee_id=fee_id,
            kind=kind,
            description=description,
            amount=amount,
            effective_from=effective_from,
            source=source,
        )
        return True

    def end_fixed_fee(
        self, fee_id: str, effective_until: date, reason: str, source: Source, at: datetime
    ) -> bool:
        fee = self.fees.get(fee_id)
        if fee is None:
            raise InvalidRate(f"no fee {fee_id} on the rate of {self.entity_id}")
        if fee.effective_until == effective_until:
            return False
        if effective_until < fee.effective_from:
            raise InvalidRate(f"fee {fee_id} cannot end before it starts ({fee.effective_from})")
        self._record(
            self.FixedFeeEnded,
            at,
            fee_id=fee_id,
            effective_until=effective_until,
            reason=reason,
            source=source,
        )
        return True

    def link_stripe_price(
        self,
        price_id: str,
        source: Source,
        at: datetime,
        version: int | None = None,
        fee_id: str | None = None,
    ) -> bool:
        if (version is None) == (fee_id is None):
            raise InvalidRate("link a Stripe price to exactly one of a rate version or a fee")
        if version is not None:
            if not 1 <= version <= len(self.versions):
                raise InvalidRate(f"the rate of {self.entity_id} has no version {version}")
            if self.versions[version - 1].stripe_price_id == price_id:
                return False
        elif fee_id is not None:
            if fee_id not in self.fees:
                raise InvalidRate(f"no fee {fee_id} on the rate of {self.entity_id}")
            if self.fees[fee_id].stripe_price_id == price_id:
                return False
        self._record(
            self.StripePriceLinked,
            at,
            price_id=price_id,
            version=version,
            fee_id=fee_id,
            source=source,
        )
        return True
