"""Contracted rates and every version of them (valid time `effective_from`, recorded
time `recorded_at`), and fixed fees: the Rates page with its history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from eventsourcing.utils import get_topic

from ledger.rates.domain import Rate
from projections.base import Col, Delivered, Projection, Store, Table, Tx, encode

RATES = Table(
    name="proj_rates",
    cols=(
        Col("aggregate_id", "text", False),
        Col("entity_id", "text", False),
        Col("currency", "text", False),
        Col("versions", "int", False),
        Col("updated_at", "timestamp", False),
        Col("position", "bigint", False),
    ),
    key=("aggregate_id",),
    unique=(("entity_id",),),
)

VERSIONS = Table(
    name="proj_rate_versions",
    cols=(
        Col("entity_id", "text", False),
        Col("version", "int", False),
        Col("unit_price", "decimal", False),
        Col("effective_from", "date", False),
        Col("recorded_at", "timestamp", False),
        Col("reason", "text", False),
        Col("source", "text", False),
        Col("stripe_price_id", "text"),
    ),
    key=("entity_id", "version"),
)

FEES = Table(
    name="proj_rate_fees",
    cols=(
        Col("entity_id", "text", False),
        Col("fee_id", "text", False),
        Col("kind", "text", False),
        Col("description", "text", False),
        Col("amount", "decimal", False),
        Col("effective_from", "date", False),
        Col("effective_until", "date"),
        Col("recorded_at", "timestamp", False),
        Col("stripe_price_id", "text"),
    ),
    key=("entity_id", "fee_id"),
)


class RatesProjection(Projection):
    """Rates change rarely: each event is applied with its own statements, in order."""

    name = "rates"
    version = 1
    tables = (RATES, VERSIONS, FEES)
    topics = tuple(
        get_topic(c)
        for c in (
            Rate.Contracted,
            Rate.Revised,
            Rate.FixedFeeAdded,
            Rate.FixedFeeEnded,
            Rate.StripePriceLinked,
        )
    )

    def process(self, tx: Tx, page: Sequence[Delivered]) -> None:
        for d in page:
            self._apply(tx, d)

    def _apply(self, tx: Tx, d: Delivered) -> None:
        e = d.event
        key = e.originator_id.hex
        if isinstance(e, Rate.Contracted):
            tx.upsert(
                RATES,
                [
                    {
                        "aggregate_id": key,
                        "entity_id": e.entity_id,
                        "currency": e.currency,
                        "versions": 1,
                        "updated_at": e.timestamp,
                        "position": d.id,
                    }
                ],
            )
            entity_id = e.entity_id
            tx.upsert(VERSIONS, [self._version(entity_id, 1, e)])
            return
        rows = tx.select(RATES, "aggregate_id = ?", (key,))
        if not rows:
            return
        rate = rows[0]
        entity_id = rate["entity_id"]
        b = tx.backend
        if isinstance(e, Rate.Revised):
            rate["versions"] += 1
            tx.upsert(VERSIONS, [self._version(entity_id, rate["versions"], e)])
        elif isinstance(e, Rate.FixedFeeAdded):
            tx.upsert(
                FEES,
                [
                    {
                        "entity_id": entity_id,
                        "fee_id": e.fee_id,
                        "kind": e.kind,
                        "description": e.description,
                        "amount": e.amount,
                        "effective_from": e.effective_from,
                        "effective_until": None,
                        "recorded_at": e.timestamp,
                        "stripe_price_id": None,
                    }
                ],
            )
        elif isinstance(e, Rate.FixedFeeEnded):
            tx.execute(
                "UPDATE {p}proj_rate_fees SET effective_until = ? WHERE entity_id = ? "
                "AND fee_id = ?",
                (encode(e.effective_until, "date", b), entity_id, e.fee_id),
            )
        elif isinstance(e, Rate.StripePriceLinked):
            if e.fee_id is not None:
                tx.execute(
                    "UPDATE {p}proj_rate_fees SET stripe_price_id = ? WHERE entity_id = ? "
                    "AND fee_id = ?",
                    (e.price_id, entity_id, e.fee_id),
                )
            elif e.version is not None:
                tx.execute(
                    "UPDATE {p}proj_rate_versions SET stripe_price_id = ? WHERE entity_id = ? "
                    "AND version = ?",
                    (e.price_id, entity_id, e.version),
                )
        rate["updated_at"], rate["position"] = e.timestamp, d.id
        tx.upsert(RATES, [rate])

    @staticmethod
    def _version(entity_id: str, version: int, e: Any) -> dict[str, Any]:
        return {
            "entity_id": entity_id,
            "version": version,
            "unit_price": e.unit_price,
            "effective_from": e.effective_from,
            "recorded_at": e.timestamp,
            "reason": e.reason,
            "source": str(e.source),
            "stripe_price_id": None,
        }


@dataclass(frozen=True)
class RateVersionRow:
    version: int
    unit_price: Decimal
    effective_from: date
    recorded_at: datetime
    reason: str
    source: str
    stripe_price_id: str | None


@dataclass(frozen=True)
class RateRow:
    entity_id: str
    currency: str
    versions: list[RateVersionRow]


def rate_of(store: Store, entity_id: str) -> RateRow | None:
    """An entity's rate with every version, in the order recorded."""
    found = _rates(store, "entity_id = ?", (entity_id,))
    return found[0] if found else None


def list_rates(store: Store) -> list[RateRow]:
    """Every entity's rate with its versions, by entity id: two queries, whatever
    the number of entities."""
    return _rates(store)


def _rates(store: Store, where: str = "", params: tuple[Any, ...] = ()) -> list[RateRow]:
    with store.reading() as tx:
        rates = tx.select(RATES, where, params, "ORDER BY entity_id")
        versions = tx.select(VERSIONS, where, params, "ORDER BY entity_id, version")
    by_entity: dict[str, list[RateVersionRow]] = {r["entity_id"]: [] for r in rates}
    for v in versions:
        if v["entity_id"] in by_entity:
            fields = {k: value for k, value in v.items() if k != "entity_id"}
            by_entity[v["entity_id"]].append(RateVersionRow(**fields))
    return [RateRow(r["entity_id"], r["currency"], by_entity[r["entity_id"]]) for r in rates]
