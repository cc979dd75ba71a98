"""The outbox in the ledger: which notices are due, claiming an attempt before
sending, retries with exponential backoff, giving up, an attempt whose outcome was
never recorded, and notices withdrawn because their invoice was paid meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any
from uuid import UUID

import pytest

from ledger.app import Ledger
from ledger.invoices.application import InvoiceSnapshot
from ledger.invoices.domain import Totals
from ledger.notifications.application import Outcome
from ledger.notifications.domain import DeliveryStatus, Notification, RetryPolicy
from ledger.sources import Source

Issue = Callable[..., str]
TODAY = date(2026, 2, 20)
SWEEP = Source("scheduler_run", f"past-due/{TODAY}")
RUN = Source("scheduler_run", "outbox/test")
POLICY = RetryPolicy(max_attempts=3, first_delay=timedelta(minutes=1), lease=timedelta(minutes=5))
FAILED = Outcome(ok=False, detail="451 try again later")


@pytest.fixture
def queued(ledger: Ledger, issue: Issue, acme: str) -> list[UUID]:
    ledger.change_billing_contacts(acme, ["billing@acme.test"], Source("admin", "a"))
    stripe_id = issue("in_1", acme, date(2026, 2, 10))
    return ledger.sweep_past_due(TODAY, SWEEP, [stripe_id], ["ops@billtrail.test"]).queued


def due(ledger: Ledger, clock: Any) -> list[UUID]:
    return [d.notification_id for d in ledger.notification_outbox().due(clock())]


def kinds(ledger: Ledger, notification_id: UUID) -> list[str]:
    return [type(e).__name__ for e in ledger.history(notification_id)]


def test_queued_notices_are_due_at_once_and_sent_ones_are_not(
    ledger: Ledger, queued: list[UUID], clock: Any
) -> None:
    assert due(ledger, clock) == queued
    first = queued[0]
    note = ledger.begin_delivery(first, RUN)
    assert note is not None
    assert (note.status, note.attempts) == (DeliveryStatus.SENDING, 1)
    assert ledger.record_delivery(first, 1, Outcome(True, "250 OK"), RUN) is True
    assert due(ledger, clock) == queued[1:]
    sent = ledger.notification(first)
    assert (sent.status, sent.detail, sent.sent_at) == (DeliveryStatus.SENT, "250 OK", clock())
    assert kinds(ledger, first) == ["Queued", "DeliveryAttempted", "Sent"]


def test_an_attempt_is_claimed_once(ledger: Ledger, queued: list[UUID]) -> None:
    assert ledger.begin_delivery(queued[0], RUN) is not None
    assert ledger.begin_delivery(queued[0], RUN) is None


def test_a_claim_raced_by_another_deliverer_is_lost_not_doubled(
    ledger: Ledger, queued: list[UUID], another_ledger: Callable[[], Ledger], clock: Any
) -> None:
    other = another_ledger()
    # The other deliverer claims between our read of the notice and our save.
    clock.on_next_read.append(lambda: other.begin_delivery(queued[0], RUN))
    assert ledger.begin_delivery(queued[0], RUN) is None
    assert kinds(ledger, queued[0]) == ["Queued", "DeliveryAttempted"]


def test_failures_back_off_exponentially_then_give_up(
    ledger: Ledger, queued: list[UUID], clock: Any
) -> None:
    first = queued[0]
    start = clock()
    assert ledger.begin_delivery(first, RUN, POLICY) is not None
    assert ledger.record_delivery(first, 1, FAILED, RUN, POLICY)
    note = ledger.notification(first)
    assert (note.status, note.next_attempt_at) == (
        DeliveryStatus.RETRYING,
        start + timedelta(minutes=1),
    )
    assert first not in due(ledger, clock)
    clock.advance(minutes=1)
    assert first in due(ledger, clock)
    assert ledger.begin_delivery(first, RUN, POLICY) is not None
    ledger.record_delivery(first, 2, FAILED, RUN, POLICY)
    assert ledger.notification(first).next_attempt_at == clock() + timedelta(minutes=2)
    clock.advance(minutes=2)
    assert ledger.begin_delivery(first, RUN, POLICY) is not None
    ledger.record_delivery(first, 3, FAILED, RUN, POLICY)
    note = ledger.notification(first)
    assert note.status is DeliveryStatus.GAVE_UP
    assert "gave up after 3 attempts" in note.last_error
    clock.advance(days=1)
    assert first not in due(ledger, clock)
    assert [n.id for n in ledger.undeliverable_notifications()] == [first]


def test_a_permanent_refusal_gives_up_at_once(
    ledger: Ledger, queued: list[UUID], clock: Any
) -> None:
    ledger.begin_delivery(queued[0], RUN)
    ledger.record_delivery(queued[0], 1, Outcome(False, "550 no such user", permanent=True), RUN)
    note = ledger.notification(queued[0])
    assert (note.status, note.last_error) == (DeliveryStatus.GAVE_UP, "550 no such user")


def test_an_attempt_without_outcome_is_retried_after_its_lease_with_the_same_id(
    ledger: Ledger, queued: list[UUID], clock: Any
) -> None:
    first = queued[0]
    assert ledger.begin_delivery(first, RUN, POLICY) is not None
    # The deliverer stops here (killed between claiming and recording).
    assert first not in due(ledger, clock)
    assert ledger.begin_delivery(first, RUN, POLICY) is None
    clock.advance(minutes=5)
    assert first in due(ledger, clock)
    retry = ledger.begin_delivery(first, RUN, POLICY)
    assert retry is not None
    assert (retry.id, retry.attempts) == (first, 2)
    assert ledger.history(first)[-1].interrupted is True
    # The interrupted attempt's late report of success still counts; once sent, sent.
    assert ledger.record_delivery(first, 1, Outcome(True, "250 OK"), RUN, POLICY) is True
    assert ledger.record_delivery(first, 2, Outcome(True, "250 OK"), RUN, POLICY) is False
    assert ledger.notification(first).status is DeliveryStatus.SENT


def test_a_late_failure_of_a_superseded_attempt_changes_nothing(
    ledger: Ledger, queued: list[UUID], clock: Any
) -> None:
    first = queued[0]
    ledger.begin_delivery(first, RUN, POLICY)
    clock.advance(minutes=5)
    ledger.begin_delivery(first, RUN, POLICY)
    assert ledger.record_delivery(first, 1, FAILED, RUN, POLICY) is False
    assert ledger.notification(first).status is DeliveryStatus.SENDING


def test_a_notice_whose_invoice_was_paid_meanwhile_is_withdrawn_not_sent(
    ledger: Ledger, queued: list[UUID], clock: Any
) -> None:
    invoice = ledger.invoice("in_1")
    ledger.observe_invoice(
        InvoiceSnapshot(
            stripe_id="in_1",
            entity_id=invoice.entity_id,
            currency=invoice.currency,
            period=invoice.period,
            status="paid",
            lines=invoice.lines,
            totals=Totals(invoice.subtotal, invoice.tax, invoice.total),
            number=invoice.number,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            amount_paid=invoice.total,
        ),
        Source("stripe_event", "evt_paid"),
    )
    assert ledger.begin_delivery(queued[0], RUN) is None
    note = ledger.notification(queued[0])
    assert note.status is DeliveryStatus.WITHDRAWN
    assert note.last_error == "the invoice is Paid now"
    assert queued[0] not in due(ledger, clock)


def test_the_tail_follows_only_what_is_new(
    ledger: Ledger, queued: list[UUID], clock: Any, issue: Issue
) -> None:
    outbox = ledger.notification_outbox()
    assert [d.notification_id for d in outbox.due(clock())] == queued
    position = outbox.position
    more = ledger.sweep_past_due(
        TODAY, SWEEP, [issue("in_2", "acme", date(2026, 2, 11))], ["ops@billtrail.test"]
    )
    assert [d.notification_id for d in outbox.due(clock())] == queued + more.queued
    assert outbox.position > position
    assert all(isinstance(ledger.notification(i), Notification) for i in more.queued)
