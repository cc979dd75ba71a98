"""Billable entities: one row each, as they are now (the Entities page)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.utils import get_topic

from ledger.entities.domain import DEFAULT_PREFERENCES, BillableEntity
from projections.base import Col, Delivered, FoldProjection, Store, Table, Tx

ENTITIES = Table(
    name="proj_entities",
    cols=(
        Col("aggregate_id", "text", False),
        Col("entity_id", "text", False),
        Col("name", "text", False),
        Col("kind", "text", False),
        Col("timezone", "text", False),
        Col("emails", "json", False),
        Col("stripe_customer_id", "text"),
        Col("preferences", "json", False),
        Col("webhook_url", "text"),
        Col("archived", "bool", False),
        Col("registered_at", "timestamp", False),
        Col("updated_at", "timestamp", False),
        Col("position", "bigint", False),
    ),
    key=("aggregate_id",),
    unique=(("entity_id",),),
    indexes=(("name",),),
)


class EntitiesProjection(FoldProjection):
    name = "entities"
    version = 1
    table = ENTITIES
    tables = (ENTITIES,)
    creates = (BillableEntity.Registered,)
    topics = tuple(
        get_topic(c)
        for c in (
            BillableEntity.Registered,
            BillableEntity.Renamed,
            BillableEntity.StripeCustomerLinked,
            BillableEntity.BillingContactsChanged,
            BillableEntity.NotificationPreferencesChanged,
            BillableEntity.TimezoneSet,
            BillableEntity.Archived,
        )
    )

    def apply(self, row: dict[str, Any] | None, d: Delivered, tx: Tx) -> dict[str, Any] | None:
        e = d.event
        if isinstance(e, BillableEntity.Registered):
            row = {
                "aggregate_id": e.originator_id.hex,
                "entity_id": e.entity_id,
                "name": e.name,
                "kind": e.kind,
                "timezone": e.timezone,
                "emails": list(e.emails),
                "stripe_customer_id": None,
                "preferences": dict(DEFAULT_PREFERENCES),
                "webhook_url": None,
                "archived": False,
                "registered_at": e.timestamp,
            }
        elif row is None:
            return None
        else:
            row = dict(row)
            if isinstance(e, BillableEntity.Renamed):
                row["name"] = e.name
            elif isinstance(e, BillableEntity.StripeCustomerLinked):
                row["stripe_customer_id"] = e.customer_id
            elif isinstance(e, BillableEntity.BillingContactsChanged):
                row["emails"] = list(e.emails)
            elif isinstance(e, BillableEntity.NotificationPreferencesChanged):
                row["preferences"] = dict(e.preferences)
                row["webhook_url"] = e.webhook_url
            elif isinstance(e, BillableEntity.TimezoneSet):
                row["timezone"] = e.timezone
            elif isinstance(e, BillableEntity.Archived):
                row["archived"] = True
        row["updated_at"], row["position"] = e.timestamp, d.id
        return row


@dataclass(frozen=True)
class EntityRow:
    entity_id: str
    name: str
    kind: str
    timezone: str
    emails: list[str]
    stripe_customer_id: str | None
    preferences: dict[str, str]
    webhook_url: str | None
    archived: bool
    registered_at: datetime


def _row(r: dict[str, Any]) -> EntityRow:
    return EntityRow(
        **{k: v for k, v in r.items() if k not in ("aggregate_id", "updated_at", "position")}
    )


def list_entities(store: Store, *, include_archived: bool = True) -> list[EntityRow]:
    """Every entity, by name."""
    with store.reading() as tx:
        where = "" if include_archived else ("archived = ?")
        params = () if include_archived else (False if tx.backend == "postgres" else 0,)
        rows = tx.select(ENTITIES, where, params, "ORDER BY name, entity_id")
    return [_row(r) for r in rows]


def get_entity(store: Store, entity_id: str) -> EntityRow | None:
    with store.reading() as tx:
        rows = tx.select(ENTITIES, "entity_id = ?", (entity_id,))
    return _row(rows[0]) if rows else None
