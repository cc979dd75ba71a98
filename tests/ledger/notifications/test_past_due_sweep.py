"""The past-due sweep as a ledger command: it moves exactly the open invoices whose
due date has passed, queues their notices in the same save (admins by email, the
customer per its preference), records the swept day, and is a no-op when the same
sweep runs again."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from ledger.app import Ledger
from ledger.application import ConcurrentChange
from ledger.errors import UnknownInvoice
from ledger.invoices.domain import Invoice, Status
from ledger.notifications.domain import DeliveryStatus, past_due_notifications
from ledger.sources import Source

Issue = Callable[..., str]
TODAY = date(2026, 2, 20)
SWEEP = Source("scheduler_run", f"past-due/{TODAY}")
ADMINS = ["ops@billtrail.test", "boss@billtrail.test"]


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def notices(ledger: Ledger, stripe_id: str) -> set[tuple[str, str, str]]:
    return {
        (n.audience, n.channel, n.recipient) for n in ledger.notifications_of_invoice(stripe_id)
    }


def test_a_sweep_moves_exactly_the_open_invoices_whose_due_date_has_passed(
    ledger: Ledger, issue: Issue, acme: str
) -> None:
    overdue = issue("in_overdue", acme, date(2026, 2, 19))
    due_today = issue("in_today", acme, TODAY)
    later = issue("in_later", acme, date(2026, 3, 1))
    paid = issue("in_paid", acme, date(2026, 2, 1), status="paid")
    no_due = issue("in_nodue", acme, None)
    outcome = ledger.sweep_past_due(TODAY, SWEEP, [overdue, due_today, later, paid, no_due], ADMINS)
    assert outcome.marked == [overdue]
    statuses = {s: ledger.invoice(s).status for s in (overdue, due_today, later, paid, no_due)}
    assert statuses == {
        overdue: Status.PAST_DUE,
        due_today: Status.OPEN,
        later: Status.OPEN,
        paid: Status.PAID,
        no_due: Status.OPEN,
    }
    [became] = [e for e in ledger.history(Invoice.create_id(overdue)) if e.source == SWEEP]
    assert isinstance(became, Invoice.BecamePastDue)
    assert became.on == TODAY
    assert ledger.last_past_due_sweep() == TODAY


def test_past_due_notifies_each_admin_and_each_billing_email_of_the_customer(
    ledger: Ledger, issue: Issue, acme: str
) -> None:
    stripe_id = issue("in_1", acme, date(2026, 2, 10))
    outcome = ledger.sweep_past_due(TODAY, SWEEP, [stripe_id], ADMINS)
    assert notices(ledger, stripe_id) == {
        ("admin", "email", "ops@billtrail.test"),
        ("admin", "email", "boss@billtrail.test"),
        ("customer", "email", "billing@acme.test"),
        ("customer", "email", "cfo@acme.test"),
    }
    assert len(outcome.queued) == 4
    note = ledger.notification(outcome.queued[0])
    assert note.status is DeliveryStatus.QUEUED
    assert (note.notice.number, note.notice.amount_due, note.notice.currency) == (
        "ACME-0001",
        Decimal("60.00"),
        "eur",
    )
    assert (note.notice.due_date, note.notice.days_overdue) == (date(2026, 2, 10), 10)


def test_the_invoice_moves_only_together_with_its_notices(
    ledger: Ledger, issue: Issue, acme: str, clock: Any
) -> None:
    stripe_id = issue("in_1", acme, date(2026, 2, 10))
    # A notice already stored under one of the ids the sweep will use makes the
    # sweep's save fail: the invoice must not move without its notices.
    invoice = ledger.invoice(stripe_id)
    entity = ledger.entity(acme)
    invoice.mark_past_due(TODAY, SWEEP, clock())
    [planted, *_] = past_due_notifications(invoice, entity, ADMINS, TODAY, SWEEP, clock())
    ledger.save(planted)
    with pytest.raises(ConcurrentChange):
        ledger.sweep_past_due(TODAY, SWEEP, [stripe_id], ADMINS)
    assert ledger.invoice(stripe_id).status is Status.OPEN
    assert [n.id for n in ledger.notifications_of_invoice(stripe_id)] == [planted.id]


def test_the_customer_is_told_per_its_preference_webhook_or_nothing(
    ledger: Ledger, issue: Issue, hooked: str, quiet: str
) -> None:
    by_webhook = issue("in_hook", hooked, date(2026, 2, 1))
    silent = issue("in_quiet", quiet, date(2026, 2, 1))
    ledger.sweep_past_due(TODAY, SWEEP, [by_webhook, silent], ["ops@billtrail.test"])
    assert notices(ledger, by_webhook) == {
        ("admin", "email", "ops@billtrail.test"),
        ("customer", "webhook", "https://hooked.test/hook"),
    }
    assert notices(ledger, silent) == {("admin", "email", "ops@billtrail.test")}


def test_a_customer_without_a_billing_email_is_a_notice_failed_for_good(
    ledger: Ledger, issue: Issue
) -> None:
    ledger.register_entity("Nomail", "company", Source("admin", "admin-1"))
    stripe_id = issue("in_1", "nomail", date(2026, 2, 1))
    ledger.sweep_past_due(TODAY, SWEEP, [stripe_id], [])
    [orphan] = ledger.undeliverable_notifications()
    assert (orphan.audience, orphan.recipient, orphan.status) == (
        "customer",
        "",
        DeliveryStatus.GAVE_UP,
    )
    assert "no billing email" in orphan.last_error


def test_the_same_sweep_again_records_nothing(ledger: Ledger, issue: Issue, acme: str) -> None:
    stripe_id = issue("in_1", acme, date(2026, 2, 10))
    first = ledger.sweep_past_due(TODAY, SWEEP, [stripe_id], ADMINS)
    before = head(ledger)
    again = ledger.sweep_past_due(TODAY, SWEEP, [stripe_id], ADMINS)
    assert (again.marked, again.queued) == ([], [])
    assert head(ledger) == before
    assert len(first.queued) == 4


def test_a_later_sweep_does_not_queue_the_notices_again(
    ledger: Ledger, issue: Issue, acme: str, clock: Any
) -> None:
    stripe_id = issue("in_1", acme, date(2026, 2, 10))
    ledger.sweep_past_due(TODAY, SWEEP, [stripe_id], ADMINS)
    clock.advance(days=1)
    tomorrow = date(2026, 2, 21)
    outcome = ledger.sweep_past_due(
        tomorrow, Source("scheduler_run", f"past-due/{tomorrow}"), [stripe_id], ADMINS
    )
    assert (outcome.marked, outcome.queued) == ([], [])
    assert len(ledger.notifications_of_invoice(stripe_id)) == 4
    assert ledger.last_past_due_sweep() == tomorrow


def test_a_second_sweep_of_the_day_that_moved_more_invoices_records_its_share(
    ledger: Ledger, issue: Issue, acme: str
) -> None:
    # The first run saw only in_1 (a scheduler beside it, or one killed half way,
    # leaves the rest to the next run of the day): the day's record must not say
    # one invoice moved when two did.
    first = issue("in_1", acme, date(2026, 2, 10))
    second = issue("in_2", acme, date(2026, 2, 10))
    ledger.sweep_past_due(TODAY, SWEEP, [first], ADMINS)
    ledger.sweep_past_due(TODAY, SWEEP, [first, second], ADMINS)
    records = list(ledger.events_of_topics(["billtrail:PastDueSweeps.Completed"]))
    assert [r.day for r in records] == [TODAY, TODAY]
    assert sum(r.marked for r in records) == 2
    assert sum(r.queued for r in records) == 8
    assert ledger.last_past_due_sweep() == TODAY


def test_a_sweep_stopped_half_way_moves_nothing_so_the_days_record_says_what_moved(
    ledger: Ledger, issue: Issue, acme: str
) -> None:
    # A scheduler killed between two invoices of its sweep took its share of the
    # day's record with it (seed 30 of the simulation): now it has moved nothing.
    first = issue("in_1", acme, date(2026, 2, 10))
    second = issue("in_2", acme, date(2026, 2, 10))
    with pytest.raises(UnknownInvoice):
        ledger.sweep_past_due(TODAY, SWEEP, [first, "in_stops_here", second], ADMINS)
    assert ledger.invoice(first).status is Status.OPEN
    assert ledger.last_past_due_sweep() is None
    ledger.sweep_past_due(TODAY, SWEEP, [first, second], ADMINS)
    records = list(ledger.events_of_topics(["billtrail:PastDueSweeps.Completed"]))
    assert [(r.day, r.marked, r.queued) for r in records] == [(TODAY, 2, 8)]


def test_concurrent_sweeps_of_the_same_day_mark_and_queue_once(
    ledger: Ledger, issue: Issue, acme: str, another_ledger: Callable[[], Ledger]
) -> None:
    ids = [issue(f"in_{i}", acme, date(2026, 2, 1)) for i in range(6)]
    others = [another_ledger(), another_ledger()]
    results: list[int] = []
    errors: list[BaseException] = []

    def sweep(app: Ledger) -> None:
        try:
            results.append(len(app.sweep_past_due(TODAY, SWEEP, ids, ADMINS).queued))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(app,)) for app in [ledger, *others]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(results) == 6 * 4
    assert all(ledger.invoice(i).status is Status.PAST_DUE for i in ids)
    queued = list(ledger.events_of_topics(["billtrail:Notification.Queued"]))
    assert len(queued) == 6 * 4
    assert len({e.originator_id for e in queued}) == 6 * 4
    assert ledger.verify_seal().ok
