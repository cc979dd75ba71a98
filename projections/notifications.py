"""Notifications: who is told what about which invoice, and through which channel,
as the ledger's facts call for it. A customer's channel is its preference for the
topic as recorded when the fact was; admins are told of every past-due invoice in
the portal.

And the notices the ledger queued (the Notification aggregates, the outbox the
scheduler delivers), one row each with its delivery state: attempts, the last
error, sent / retrying / gave up / withdrawn (the portal's Notifications page and
the past-due queue's "last notification")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.utils import get_topic

from ledger.entities.domain import DEFAULT_PREFERENCES, BillableEntity
from ledger.invoices.domain import Invoice
from ledger.notifications.domain import DeliveryStatus, Notification
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

# One row per queued notice. `position` is the log position of its latest event
# (what "last notification" orders by); `queued_position` of its Queued event (the
# list's order, stable while deliveries go on).
DELIVERIES = Table(
    name="proj_notification_deliveries",
    cols=(
        Col("notification_id", "text", False),
        Col("queued_position", "bigint", False),
        Col("position", "bigint", False),
        Col("invoice_stripe_id", "text", False),
        Col("number", "text", False),
        Col("entity_id", "text", False),
        Col("transition", "text", False),
        Col("topic", "text", False),
        Col("audience", "text", False),
        Col("channel", "text", False),
        Col("recipient", "text", False),
        Col("status", "text", False),
        Col("attempts", "int", False),
        Col("last_error", "text", False),
        Col("detail", "text", False),
        Col("queued_at", "timestamp", False),
        Col("updated_at", "timestamp", False),
        Col("next_attempt_at", "timestamp"),
        Col("sent_at", "timestamp"),
    ),
    key=("notification_id",),
    indexes=(
        ("queued_position",),
        ("status", "queued_position"),
        ("invoice_stripe_id", "position"),
    ),
)

_DELIVERY_EVENTS = (
    Notification.Queued,
    Notification.DeliveryAttempted,
    Notification.DeliveryFailed,
    Notification.Sent,
    Notification.GaveUp,
    Notification.Withdrawn,
)

_TOPIC_OF = {
    Invoice.Issued: "invoice_issued",
    Invoice.PaymentFailed: "payment_failed",
    Invoice.BecamePastDue: "invoice_past_due",
    Invoice.Paid: "receipt",
}


class NotificationsProjection(Projection):
    name = "notifications"
    version = 2
    tables = (NOTIFICATIONS, PREFS, REFS, DELIVERIES)
    topics = tuple(
        get_topic(c)
        for c in (
            BillableEntity.Registered,
            BillableEntity.NotificationPreferencesChanged,
            Invoice.Drafted,
            *_TOPIC_OF,
            *_DELIVERY_EVENTS,
        )
    )

    def process(self, tx: Tx, page: Sequence[Delivered]) -> None:
        self._deliveries(tx, [d for d in page if isinstance(d.event, Notification.Event)])
        self._due(tx, [d for d in page if not isinstance(d.event, Notification.Event)])

    def _deliveries(self, tx: Tx, page: Sequence[Delivered]) -> None:
        """Fold the notices' events into their rows: the rows a page touches are read
        once and written back once (new ones inserted, the others updated)."""
        if not page:
            return
        keys = sorted(
            {
                d.event.originator_id.hex
                for d in page
                if not isinstance(d.event, Notification.Queued)
            }
        )
        rows = {r["notification_id"]: r for r in tx.select_in(DELIVERIES, "notification_id", keys)}
        new: set[str] = set()
        changed: set[str] = set()
        for d in page:
            e = d.event
            key = e.originator_id.hex
            if isinstance(e, Notification.Queued):
                rows[key] = _queued_row(key, d.id, e)
                new.add(key)
            elif key not in rows:
                continue
            else:
                rows[key] = _delivery_step(rows[key], e)
            rows[key]["position"] = d.id
            rows[key]["updated_at"] = e.timestamp
            changed.add(key)
        tx.insert(DELIVERIES, [rows[k] for k in sorted(new)])
        tx.upsert(DELIVERIES, [rows[k] for k in sorted(changed - new)])

    def _due(self, tx: Tx, page: Sequence[Delivered]) -> None:
        if not page:
            return
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


def _queued_row(key: str, position: int, e: Any) -> dict[str, Any]:
    return {
        "notification_id": key,
        "queued_position": position,
        "invoice_stripe_id": e.invoice_stripe_id,
        "number": str(e.notice.get("number", "")),
        "entity_id": str(e.notice.get("entity_id", "")),
        "transition": e.transition,
        "topic": e.topic,
        "audience": e.audience,
        "channel": e.channel,
        "recipient": e.recipient,
        "status": DeliveryStatus.QUEUED.value,
        "attempts": 0,
        "last_error": "",
        "detail": "",
        "queued_at": e.timestamp,
        "next_attempt_at": None,
        "sent_at": None,
    }


def _delivery_step(row: dict[str, Any], e: Any) -> dict[str, Any]:
    """The row after one delivery event: the same state the aggregate's `apply`
    gives (a property test holds the two together)."""
    row = dict(row)
    if isinstance(e, Notification.DeliveryAttempted):
        row.update(attempts=e.attempt, status=DeliveryStatus.SENDING.value)
        row["next_attempt_at"] = e.lease_until
    elif isinstance(e, Notification.DeliveryFailed):
        row.update(status=DeliveryStatus.RETRYING.value, last_error=e.error)
        row["next_attempt_at"] = e.next_attempt_at
    elif isinstance(e, Notification.Sent):
        row.update(status=DeliveryStatus.SENT.value, detail=e.detail, next_attempt_at=None)
        row["sent_at"] = e.timestamp
    elif isinstance(e, Notification.GaveUp):
        row.update(status=DeliveryStatus.GAVE_UP.value, last_error=e.reason, next_attempt_at=None)
    elif isinstance(e, Notification.Withdrawn):
        row.update(status=DeliveryStatus.WITHDRAWN.value, last_error=e.reason, next_attempt_at=None)
    return row


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


# Delivery states a billing admin must act on: failing (a retry is due) or failed
# for good.
FAILED = (DeliveryStatus.RETRYING.value, DeliveryStatus.GAVE_UP.value)


@dataclass(frozen=True)
class DeliveryRow:
    notification_id: str
    queued_position: int
    position: int
    invoice_stripe_id: str
    number: str
    entity_id: str
    transition: str
    topic: str
    audience: str
    channel: str
    recipient: str
    status: str
    attempts: int
    last_error: str
    detail: str
    queued_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True)
class DeliveryPage:
    rows: list[DeliveryRow]
    next_cursor: int | None  # pass as `before` for the next (older) page


def list_deliveries(
    store: Store,
    *,
    status: str | None = None,
    failed: bool = False,
    before: int | None = None,
    limit: int = 100,
) -> DeliveryPage:
    """The queued notices with their delivery state, newest queued first. `status`:
    one delivery status; `failed`: only those failing or failed for good. Page with
    `before` = the previous page's `next_cursor`."""
    conds: list[str] = []
    params: list[Any] = []
    with store.reading() as tx:
        if status is not None:
            conds.append("status = ?")
            params.append(status)
        if failed:
            clause, values = tx.in_list(FAILED)
            conds.append(f"status {clause}")
            params.extend(values)
        if before is not None:
            conds.append("queued_position < ?")
            params.append(before)
        rows = tx.select(
            DELIVERIES,
            " AND ".join(conds),
            params,
            f"ORDER BY queued_position DESC LIMIT {int(limit) + 1}",
        )
    found = [DeliveryRow(**r) for r in rows[:limit]]
    more = len(rows) > limit
    return DeliveryPage(found, found[-1].queued_position if more and found else None)
