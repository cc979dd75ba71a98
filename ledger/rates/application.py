"""Commands and bitemporal queries on contracted rates."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from ledger.entities.application import EntityCommands
from ledger.errors import EntityArchived, UnknownRate
from ledger.rates.domain import Rate, RateVersion
from ledger.sources import Source


def _missing(entity_id: str) -> UnknownRate:
    return UnknownRate(f"no rate is contracted for {entity_id!r}")


class RateCommands(EntityCommands):
    def set_rate(
        self,
        entity_id: str,
        unit_price: Decimal,
        currency: str,
        effective_from: date,
        reason: str,
        source: Source,
    ) -> bool:
        """Contract the entity's per-call rate, or revise it from `effective_from`
        (which may lie in the past: a retroactive correction). False if nothing changed."""
        if self.entity(entity_id).archived:
            raise EntityArchived(f"entity {entity_id} is archived; its rate cannot change")
        rate_id = Rate.create_id(entity_id)
        if not self.exists(rate_id):
            rate = Rate.contract(
                entity_id, currency, unit_price, effective_from, reason, source, self.clock()
            )
            # The contract is the first application of this command from `source`:
            # keep its key, or a replay of the same source after a revision reverts it.
            key = self.source_key(source, "set_rate", rate_id)
            if self._create(rate, source_keys=[key] if key else []):
                return True
        at = self.clock()
        return self._change(
            Rate,
            rate_id,
            "set_rate",
            source,
            lambda r: r.revise(unit_price, currency, effective_from, reason, source, at),
            lambda: _missing(entity_id),
        )

    def rate(self, entity_id: str, as_recorded: datetime | None = None) -> Rate:
        rate_id = Rate.create_id(entity_id)
        if as_recorded is None:
            return self.load(Rate, rate_id, lambda: _missing(entity_id))
        return self.as_recorded(Rate, rate_id, as_recorded, lambda: _missing(entity_id))

    def rate_on(
        self, entity_id: str, day: date, as_recorded: datetime | None = None
    ) -> RateVersion | None:
        """The per-call price that applied to `day` (valid time), as the ledger knew
        it at `as_recorded` (recorded time; now when None)."""
        return self.rate(entity_id, as_recorded).version_on(day)

    def add_fixed_fee(
        self,
        entity_id: str,
        fee_id: str,
        kind: str,
        description: str,
        amount: Decimal,
        effective_from: date,
        source: Source,
    ) -> bool:
        at = self.clock()
        return self._change(
            Rate,
            Rate.create_id(entity_id),
            "add_fixed_fee",
            source,
            lambda r: r.add_fixed_fee(
                fee_id, kind, description, amount, effective_from, source, at
            ),
            lambda: _missing(entity_id),
        )

    def end_fixed_fee(
        self, entity_id: str, fee_id: str, effective_until: date, reason: str, source: Source
    ) -> bool:
        at = self.clock()
        return self._change(
            Rate,
            Rate.create_id(entity_id),
            "end_fixed_fee",
            source,
            lambda r: r.end_fixed_fee(fee_id, effective_until, reason, source, at),
            lambda: _missing(entity_id),
        )

    def link_stripe_price(
        self,
        entity_id: str,
        price_id: str,
        source: Source,
        *,
        version: int | None = None,
        fee_id: str | None = None,
    ) -> bool:
        at = self.clock()
        return self._change(
            Rate,
            Rate.create_id(entity_id),
            "link_stripe_price",
            source,
            lambda r: r.link_stripe_price(price_id, source, at, version=version, fee_id=fee_id),
            lambda: _missing(entity_id),
        )
