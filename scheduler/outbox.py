"""Delivering the notification outbox: for each notice due, claim the attempt in
the ledger (recorded before anything is sent), send it through its channel, record
the outcome. The rules (when a notice is due, backoff, giving up, withdrawing a
notice whose invoice was paid meanwhile) are the ledger's; this loop only moves
messages.

Exactly once, and where it can fail: a notice is created once per invoice and
transition, and each attempt is claimed once, so two deliverers never send the same
attempt. The remaining window is a process that stops after the server accepted
the message and before `Sent` is committed: that attempt has no outcome, and once
its lease ends it is sent again (the ledger records it as `interrupted`) with the
same Message-ID or webhook `id`. For a dunning notice a rare duplicate the receiver
can recognise is preferred to a notice that silently never went out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol

from ledger.app import Ledger
from ledger.entities.domain import Channel
from ledger.notifications.application import Outcome
from ledger.notifications.domain import DEFAULT_RETRY, Notification, RetryPolicy
from ledger.sources import Source
from scheduler.messages import email_message, webhook_body

log = logging.getLogger(__name__)


class Mailer(Protocol):
    @property
    def sender(self) -> str: ...

    def send(self, message: EmailMessage) -> Outcome: ...


class Webhooks(Protocol):
    def send(self, url: str, entity_id: str, body: bytes, delivery_id: str) -> Outcome: ...


@dataclass
class DeliveryReport:
    sent: int = 0
    failed: int = 0  # a retry is scheduled
    gave_up: int = 0
    held: int = 0  # email notices kept queued: no SMTP server is configured

    def __str__(self) -> str:
        text = f"{self.sent} sent, {self.failed} to retry, {self.gave_up} failed for good"
        return text + (f", {self.held} held (no BILLTRAIL_SMTP_URL)" if self.held else "")


class Deliverer:
    """Delivers what the outbox holds. Keep one per process: it follows the log,
    reading only what is new on each pass."""

    def __init__(
        self,
        ledger: Ledger,
        mailer: Mailer | None,
        webhooks: Webhooks,
        policy: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.ledger = ledger
        self.mailer = mailer
        self.webhooks = webhooks
        self.policy = policy
        self.outbox = ledger.notification_outbox()

    def deliver_due(self, source: Source) -> DeliveryReport:
        report = DeliveryReport()
        for due in self.outbox.due(self.ledger.clock()):
            if due.channel == Channel.EMAIL.value and self.mailer is None:
                report.held += 1
                continue
            note = self.ledger.begin_delivery(due.notification_id, source, self.policy)
            if note is None:
                continue  # not due after all, taken by another deliverer, or withdrawn
            outcome = self._send(note)
            if not self.ledger.record_delivery(
                note.id, note.attempts, outcome, source, self.policy
            ):
                continue
            if outcome.ok:
                report.sent += 1
            elif outcome.permanent or note.attempts >= self.policy.max_attempts:
                report.gave_up += 1
                log.warning("notice %s to %s failed for good: %s", note.id, note.recipient, outcome)
            else:
                report.failed += 1
        return report

    def _send(self, note: Notification) -> Outcome:
        try:
            if note.channel == Channel.EMAIL.value and self.mailer is not None:
                return self.mailer.send(email_message(note, self.mailer.sender))
            if note.channel == Channel.WEBHOOK.value:
                body = webhook_body(note)
                return self.webhooks.send(note.recipient, note.notice.entity_id, body, str(note.id))
        except Exception as exc:
            # A bug in a sender must not leave the claimed attempt without an outcome.
            log.exception("sending notice %s failed unexpectedly", note.id)
            return Outcome(False, f"{type(exc).__name__}: {exc}")
        return Outcome(False, f"no sender for channel {note.channel!r}", permanent=True)
