"""What a notice looks like on the wire: the email (to an admin or a customer) and
the customer webhook's JSON body. Both are made from the notice's facts as the
ledger recorded them when the invoice became past due, and carry the notice's id
(the email's Message-ID, the webhook's `id`), the same on every attempt, so a
receiver can tell a repeated delivery from a new notice."""

from __future__ import annotations

import json
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from ledger.notifications.domain import Audience, Notice, Notification

WEBHOOK_EVENT = "invoice.past_due"


def _money(notice: Notice) -> str:
    return f"{notice.amount_due} {notice.currency.upper()}"


def message_id(note: Notification) -> str:
    return f"<{note.id}@billtrail>"


def email_message(note: Notification, sender: str) -> EmailMessage:
    n = note.notice
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = note.recipient
    msg["Message-ID"] = message_id(note)
    msg["Date"] = format_datetime(note.created_on)
    msg["X-Billtrail-Notification"] = str(note.id)
    facts = (
        f"  Invoice:       {n.number}\n"
        f"  Amount due:    {_money(n)}\n"
        f"  Due date:      {n.due_date.isoformat()}\n"
        f"  Days overdue:  {n.days_overdue}\n"
    )
    if note.audience == Audience.ADMIN.value:
        msg["Subject"] = f"Past due: invoice {n.number} of {n.entity_name} ({_money(n)})"
        body = (
            f"Invoice {n.number} of {n.entity_name} ({n.entity_id}) became past due on "
            f"{n.past_due_on.isoformat()}.\n\n{facts}  Stripe invoice: {n.stripe_id}\n"
        )
    else:
        msg["Subject"] = f"Invoice {n.number} is past due ({_money(n)})"
        body = (
            f"Hello {n.entity_name},\n\n"
            f"Invoice {n.number} was due on {n.due_date.isoformat()} and is not paid yet.\n\n"
            f"{facts}\n"
            "If you have paid it in the meantime, please disregard this notice.\n"
        )
    msg.set_content(f"{body}\nReference: {note.id}\n", cte="quoted-printable")
    return msg


def webhook_document(note: Notification) -> dict[str, Any]:
    n = note.notice
    return {
        "id": str(note.id),
        "type": WEBHOOK_EVENT,
        "created": int(note.created_on.timestamp()),
        "data": {
            "invoice": {
                "id": n.stripe_id,
                "number": n.number,
                "entity_id": n.entity_id,
                "currency": n.currency,
                "total": str(n.total),
                "amount_due": str(n.amount_due),
                "due_date": n.due_date.isoformat(),
                "past_due_on": n.past_due_on.isoformat(),
                "days_overdue": n.days_overdue,
            }
        },
    }


def webhook_body(note: Notification) -> bytes:
    """The exact bytes POSTed (and signed): the same on every attempt."""
    return json.dumps(webhook_document(note), sort_keys=True, separators=(",", ":")).encode()
