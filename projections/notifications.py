"""Notifications: who is told what about which invoice, and through which channel,
as the ledger's facts call for it (the portal's Notifications page). A customer's
channel is its preference for the topic as recorded when the fact was; admins are
told of every past-due invoice in the portal. Delivery (the outbox) is the
scheduler's; this is the record of what is due to be said."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.utils import get_topic

from ledger.entities.domain import DEFAULT_PREFERENCES, BillableEntity
from ledger.invoices.domain import Invoice
from projections.base import Col, Delivered, Projection, Store, Table, Tx, entity_key

NOTIFICATIONS = Table(
    name="proj_notifications",
    cols=(
        Col("position", "bigint", False),
        Col("audience", "text", False),
        Col("entity_id", "text", False),
        Col("stripe_id", "text", False),
        Col("number", "text"),
        Col("topic", "text", False),
        Col("channel", "text", False),
        Col("recorded_at", "timestamp", False),
    ),
    key=("position", "audience"),
    indexes=(("entity_id", "position"), ("topic", "position")),
)

PREFS = Table(
    name="proj_notification_prefs",
    cols=(
        Col("aggregate_id", "text", False),
        Col("entity_id", "text", False),
        Col("preferences", "json", False),
    ),
    key=("aggregate_id",),
)

REFS = Table(
    name="proj_notification_invoices",
    cols=(
        Col("invoice_id", "text", False),
        Col("entity_id", "text", False),
        Col("stripe_id", "text", False),
        Col("number", "text"),
    ),
    key=("invoice_id",),
)

_TOPIC_OF = {
    Invoice.Issued: "invoice_issued",
    Invoice.PaymentFailed: "payment_failed",
    Invoice.BecamePastDue: "invoice_past_due",
    Invoice.Paid: "receipt",
}


class NotificationsProjection(Projection):
    name = "notifications"
    version = 1
    tables = (NOTIFICATIONS, PREFS, REFS)
    topics = tuple(
        get_topic(c)
        for c in (
            BillableEntity.Registered,
            BillableEntity.NotificationPreferencesChanged,
            Invoice.Drafted,
            *_TOPIC_OF,
        )
    )

    def process(self, tx: Tx, page: Sequence[Delivered]) -> None:
        invoice_keys = sorted(
            {
                d.event.originator_id.hex
                for d in page
                if isinstance(d.event, Invoice.Event) and not isinstance(d.event, Invoice.Drafted)
            }
        )
        refs = {r["invoice_id"]: r for r in tx.select_in(REFS, "invoice_id", invoice_keys)}
        for d in page:
            if isinstance(d.event, Invoice.Drafted):
                key = d.event.originator_id.hex
                refs[key] = {
                    "invoice_id": key,
                    "entity_id": d.event.entity_id,
                    "stripe_id": d.event.stripe_id,
                    "number": None,
                }
        entity_keys = sorted(
            {entity_key(r["entity_id"]) for r in refs.values()}
            | {d.event.originator_id.hex for d in page if isinstance(d.event, BillableEntity.Event)}
        )
        prefs = {r["aggregate_id"]: r for r in tx.select_in(PREFS, "aggregate_id", entity_keys)}
        touched_refs: set[str] = set()
        touched_prefs: set[str] = set()
        out: list[dict[str, Any]] = []
        for d in page:
            e = d.event
            key = e.originator_id.hex
            if isinstance(e, BillableEntity.Registered):
                prefs[key] = {
                    "aggregate_id": key,
                    "entity_id": e.entity_id,
                    "preferences": dict(DEFAULT_PREFERENCES),
                }
                touched_prefs.add(key)
            elif isinstance(e, BillableEntity.NotificationPreferencesChanged):
                if key in prefs:
                    prefs[key] = {**prefs[key], "preferences": dict(e.preferences)}
                    touched_prefs.add(key)
            elif isinstance(e, Invoice.Drafted):
                touched_refs.add(key)
            elif key in refs:
                ref = refs[key]
                if isinstance(e, Invoice.Issued):
                    refs[key] = ref = {**ref, "number": e.number}
                    touched_refs.add(key)
                topic = _TOPIC_OF[type(e)]
                entity = prefs.get(entity_key(ref["entity_id"]))
                chosen = entity["preferences"] if entity else DEFAULT_PREFERENCES
                base = {
                    "position": d.id,
                    "entity_id": ref["entity_id"],
                    "stripe_id": ref["stripe_id"],
                    "number": ref["number"],
                    "topic": topic,
                    "recorded_at": e.timestamp,
                }
                out.append({**base, "audience": "customer", "channel": chosen.get(topic, "email")})
                if topic == "invoice_past_due":
                    out.append({**base, "audience": "admin", "channel": "portal"})
        tx.upsert(PREFS, [prefs[k] for k in sorted(touched_prefs)])
        tx.upsert(REFS, [refs[k] for k in sorted(touched_refs)])
        tx.insert(NOTIFICATIONS, out)


@dataclass(frozen=True)
class NotificationRow:
    position: int
    audience: str
    entity_id: str
    stripe_id: str
    number: str | None
    topic: str
    channel: str
    recorded_at: datetime


def list_notifications(
    store: Store, *, entity_id: str | None = None, before: int | None = None, limit: int = 100
) -> list[NotificationRow]:
    """Newest first; page with `before` = the last row's position."""
    conds: list[str] = []
    params: list[Any] = []
    if entity_id is not None:
        conds.append("entity_id = ?")
        params.append(entity_id)
    if before is not None:
        conds.append("position < ?")
        params.append(before)
    with store.reading() as tx:
        rows = tx.select(
            NOTIFICATIONS,
            " AND ".join(conds),
            params,
            f"ORDER BY position DESC, audience LIMIT {int(limit)}",
        )
    return [NotificationRow(**r) for r in rows]
