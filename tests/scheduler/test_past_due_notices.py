"""The past-due sweep and notice delivery, as the scheduler runs them, against a
real SMTP server and a real HTTP receiver on loopback, on both backends."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from ledger.invoices.domain import Invoice, Status
from ledger.notifications.domain import DeliveryStatus
from scheduler.runner import Jobs

# Fixtures from conftest.py (not importable under --import-mode=importlib).
SmtpServer = HookReceiver = World = ManualClock = Any
MakeJobs = Callable[..., Jobs]

TODAY = date(2026, 2, 20)  # the `clock` fixture's day in Paris (BILLTRAIL_TIMEZONE)
ADMINS = ("ops@billtrail.test", "boss@billtrail.test")  # BILLTRAIL_ADMIN_EMAILS
CUSTOMER_EMAILS = ("billing@acme.test", "cfo@acme.test")


def overdue_world(world: World) -> dict[str, str]:
    w = world
    return {
        "acme_overdue": w.issue("in_acme_1", "acme", TODAY - timedelta(days=3)),
        "acme_due_today": w.issue("in_acme_2", "acme", TODAY),
        "acme_later": w.issue("in_acme_3", "acme", TODAY + timedelta(days=10)),
        "acme_paid": w.issue("in_acme_4", "acme", TODAY - timedelta(days=20), status="paid"),
        "hooked_overdue": w.issue("in_hook_1", "hooked", TODAY - timedelta(days=1)),
        "quiet_overdue": w.issue("in_quiet_1", "quiet", TODAY - timedelta(days=40)),
    }


def sent_per_recipient(smtp: SmtpServer) -> Counter[tuple[str, str]]:
    return Counter((r.recipients[0], str(r.message["Subject"])) for r in smtp.received)


def test_a_sweep_moves_exactly_the_overdue_invoices_and_sends_each_notice_once(
    jobs: Jobs, world: World, smtp: SmtpServer, hooks: HookReceiver
) -> None:
    ids = overdue_world(world)
    outcome = jobs.past_due_sweep(TODAY)
    assert outcome is not None
    assert sorted(outcome.marked) == sorted(
        [ids["acme_overdue"], ids["hooked_overdue"], ids["quiet_overdue"]]
    )
    statuses = {k: jobs.ledger.invoice(v).status for k, v in ids.items()}
    assert statuses == {
        "acme_overdue": Status.PAST_DUE,
        "acme_due_today": Status.OPEN,
        "acme_later": Status.OPEN,
        "acme_paid": Status.PAID,
        "hooked_overdue": Status.PAST_DUE,
        "quiet_overdue": Status.PAST_DUE,
    }
    report = jobs.deliver_outbox()
    assert report is not None
    # 3 invoices x 2 admins, 2 emails to Acme, 1 webhook to Hooked, nothing to Quiet.
    assert (report.sent, report.failed, report.gave_up) == (9, 0, 0)
    recipients = Counter(r.recipients[0] for r in smtp.received)
    assert recipients == Counter({**dict.fromkeys(ADMINS, 3), **dict.fromkeys(CUSTOMER_EMAILS, 1)})
    assert len(set(smtp.handler.message_ids())) == 8
    assert all(r.sender == "billing@billtrail.test" for r in smtp.received)
    [hook] = hooks.received
    assert hook.verified, hook.headers
    assert hook.json()["type"] == "invoice.past_due"
    assert hook.json()["data"]["invoice"]["id"] == ids["hooked_overdue"]
    for stripe_id in outcome.marked:
        for note in jobs.ledger.notifications_of_invoice(stripe_id):
            assert note.status is DeliveryStatus.SENT, note.recipient
            assert note.attempts == 1


def test_the_customer_email_gives_number_amount_due_due_date_and_days_overdue(
    jobs: Jobs, world: World, smtp: SmtpServer
) -> None:
    world.issue("in_1", "acme", date(2026, 2, 10))
    jobs.past_due_sweep(TODAY)
    jobs.deliver_outbox()
    [message] = [r for r in smtp.received if r.recipients == ["billing@acme.test"]]
    assert message.message["Subject"] == "Invoice ACME-0001 is past due (60.00 EUR)"
    body = message.body
    assert "Invoice:       ACME-0001" in body
    assert "Amount due:    60.00 EUR" in body
    assert "Due date:      2026-02-10" in body
    assert "Days overdue:  10" in body
    [note] = [
        n
        for n in jobs.ledger.notifications_of_invoice("in_1")
        if n.recipient == "billing@acme.test"
    ]
    assert message.message_id == f"<{note.id}@billtrail>"
    # The server's acceptance (with its queue id) is the proof kept in the ledger.
    assert note.detail.startswith("250 2.0.0 Ok: queued as Q")


def test_a_second_sweep_and_a_restart_send_nothing_more(
    jobs: Jobs, world: World, smtp: SmtpServer, hooks: HookReceiver, make_jobs: MakeJobs
) -> None:
    overdue_world(world)
    jobs.past_due_sweep(TODAY)
    jobs.deliver_outbox()
    before = (len(smtp.received), len(hooks.received), jobs.ledger.recorder.max_notification_id())
    again = jobs.past_due_sweep(TODAY)
    assert again is not None
    assert (again.marked, again.queued) == ([], [])
    assert jobs.deliver_outbox() is not None
    restarted = make_jobs()
    restarted.start_up()
    restarted.deliver_outbox()
    after = (len(smtp.received), len(hooks.received), jobs.ledger.recorder.max_notification_id())
    assert after == before


def test_an_smtp_server_that_fails_then_recovers_gets_every_notice_exactly_once(
    jobs: Jobs, world: World, smtp: SmtpServer, clock: ManualClock
) -> None:
    world.issue("in_1", "acme", TODAY - timedelta(days=2))
    world.issue("in_2", "acme", TODAY - timedelta(days=5))
    smtp.refuse = "451 4.3.0 try again later"
    jobs.past_due_sweep(TODAY)
    first = jobs.deliver_outbox()
    assert first is not None
    assert (first.sent, first.failed) == (0, 8)
    smtp.refuse = None
    # Nothing is due before the backoff has passed.
    assert jobs.deliver_outbox() is not None
    assert smtp.received == []
    clock.advance(minutes=1)
    second = jobs.deliver_outbox()
    assert second is not None
    assert (second.sent, second.failed) == (8, 0)
    clock.advance(hours=1)
    jobs.deliver_outbox()
    assert len(smtp.received) == 8
    assert len(set(smtp.handler.message_ids())) == 8
    notes = [
        *jobs.ledger.notifications_of_invoice("in_1"),
        *jobs.ledger.notifications_of_invoice("in_2"),
    ]
    assert {(n.status, n.attempts) for n in notes} == {(DeliveryStatus.SENT, 2)}
    failed = [e for e in jobs.ledger.history(notes[0].id) if type(e).__name__ == "DeliveryFailed"]
    assert [e.error for e in failed] == ["DATA: 451 4.3.0 try again later"]


def test_a_webhook_receiver_that_fails_then_recovers_gets_the_notice_once(
    jobs: Jobs, world: World, hooks: HookReceiver, clock: ManualClock
) -> None:
    world.issue("in_1", "hooked", TODAY - timedelta(days=2))
    hooks.status = 503
    jobs.past_due_sweep(TODAY)
    jobs.deliver_outbox()
    assert [h.verified for h in hooks.received] == [True]
    hooks.status = 204
    clock.advance(minutes=1)
    jobs.deliver_outbox()
    clock.advance(hours=1)
    jobs.deliver_outbox()
    assert len(hooks.received) == 2
    assert hooks.received[0].body == hooks.received[1].body  # same id: the customer can dedupe
    [note] = [n for n in jobs.ledger.notifications_of_invoice("in_1") if n.channel == "webhook"]
    assert (note.status, note.attempts, note.detail) == (DeliveryStatus.SENT, 2, "HTTP 204")


def test_a_recipient_refused_for_good_is_visible_as_failed_and_not_retried(
    jobs: Jobs, world: World, smtp: SmtpServer, clock: ManualClock
) -> None:
    world.issue("in_1", "acme", TODAY - timedelta(days=2))
    smtp.refuse = "550 5.1.1 mailbox unavailable"
    jobs.past_due_sweep(TODAY)
    report = jobs.deliver_outbox()
    assert report is not None
    assert report.gave_up == 4
    smtp.refuse = None
    clock.advance(days=1)
    jobs.deliver_outbox()
    assert smtp.received == []
    failed = jobs.ledger.undeliverable_notifications()
    assert len(failed) == 4
    assert {n.last_error for n in failed} == {"DATA: 550 5.1.1 mailbox unavailable"}


def test_a_missed_day_is_caught_up_on_start(
    make_jobs: MakeJobs, world: World, smtp: SmtpServer, clock: ManualClock
) -> None:
    # The last sweep the ledger knows is two days ago; the scheduler was down since.
    first = make_jobs()
    two_days_ago = TODAY - timedelta(days=2)
    first.past_due_sweep(two_days_ago)
    stripe_id = world.issue("in_1", "acme", TODAY - timedelta(days=1))
    restarted = make_jobs()  # at 10:00 in Paris, after the 06:00 sweep time
    restarted.start_up()
    invoice = restarted.ledger.invoice(stripe_id)
    assert (invoice.status, invoice.past_due_on) == (Status.PAST_DUE, TODAY)
    assert restarted.ledger.last_past_due_sweep() == TODAY
    assert len(smtp.received) == 4  # delivered on start too
    [became] = [
        e
        for e in restarted.ledger.history(Invoice.create_id(stripe_id))
        if e.source.id.startswith("past-due/")
    ]
    assert became.source.id == f"past-due/{TODAY}"
    # Started again the same day: nothing is owed.
    before = restarted.ledger.recorder.max_notification_id()
    make_jobs().start_up()
    assert restarted.ledger.recorder.max_notification_id() == before


def test_started_before_the_sweep_time_it_catches_up_only_yesterday(
    make_jobs: MakeJobs, world: World, clock: ManualClock
) -> None:
    make_jobs().past_due_sweep(TODAY - timedelta(days=3))
    yesterday = TODAY - timedelta(days=1)
    due_before_yesterday = world.issue("in_1", "acme", yesterday - timedelta(days=1))
    due_yesterday = world.issue("in_2", "acme", yesterday)
    clock.now = clock.now.replace(hour=4)  # 05:00 in Paris: today's sweep is not due yet
    make_jobs().start_up()
    ledger = world.ledger
    assert ledger.last_past_due_sweep() == yesterday
    assert ledger.invoice(due_before_yesterday).status is Status.PAST_DUE
    assert ledger.invoice(due_yesterday).status is Status.OPEN


def test_the_sweep_day_is_the_day_in_billtrail_timezone(
    make_jobs: MakeJobs, world: World, clock: ManualClock
) -> None:
    stripe_id = world.issue("in_1", "acme", TODAY)
    # 23:30 UTC on TODAY is already the next day in Paris (and past 00:15 there).
    clock.now = clock.now.replace(hour=23, minute=30)
    jobs = make_jobs(BILLTRAIL_SWEEP_AT="00:15")
    jobs.start_up()
    assert world.ledger.last_past_due_sweep() == TODAY + timedelta(days=1)
    assert world.ledger.invoice(stripe_id).status is Status.PAST_DUE


def test_without_an_smtp_server_email_notices_wait_in_the_outbox(
    make_jobs: MakeJobs, world: World, smtp: SmtpServer
) -> None:
    world.issue("in_1", "acme", TODAY - timedelta(days=2))
    unconfigured = make_jobs(BILLTRAIL_SMTP_URL="")
    unconfigured.past_due_sweep(TODAY)
    report = unconfigured.deliver_outbox()
    assert report is not None
    assert (report.sent, report.held) == (0, 4)
    configured = make_jobs()
    configured.deliver_outbox()
    assert len(smtp.received) == 4


def test_smtps_with_a_login_delivers_over_tls(
    make_jobs: MakeJobs, world: World, smtps: SmtpServer
) -> None:
    world.issue("in_1", "acme", TODAY - timedelta(days=2))
    jobs = make_jobs(BILLTRAIL_SMTP_URL=smtps.url)
    jobs.past_due_sweep(TODAY)
    report = jobs.deliver_outbox()
    assert report is not None
    assert report.sent == 4
    assert len(smtps.received) == 4


def test_starttls_upgrades_a_plain_connection_when_the_url_asks_for_it(
    make_jobs: MakeJobs, world: World, starttls: SmtpServer, clock: ManualClock
) -> None:
    world.issue("in_1", "acme", TODAY - timedelta(days=2))
    plain = make_jobs(BILLTRAIL_SMTP_URL=starttls.url)
    plain.past_due_sweep(TODAY)
    refused = plain.deliver_outbox()
    assert refused is not None
    assert (refused.sent, refused.failed) == (0, 4)  # the server wants STARTTLS first
    clock.advance(minutes=1)
    upgraded = make_jobs(BILLTRAIL_SMTP_URL=f"{starttls.url}&starttls=1").deliver_outbox()
    assert upgraded is not None
    assert upgraded.sent == 4
    assert len(starttls.received) == 4


def test_a_wrong_smtp_password_is_retried_not_given_up(
    make_jobs: MakeJobs, world: World, smtp: SmtpServer
) -> None:
    world.issue("in_1", "acme", TODAY - timedelta(days=2))
    jobs = make_jobs(BILLTRAIL_SMTP_URL=smtp.url.replace("s3cret", "wrong"))
    jobs.past_due_sweep(TODAY)
    report = jobs.deliver_outbox()
    assert report is not None
    assert (report.sent, report.failed, report.gave_up) == (0, 4, 0)
