"""The Stripe inbox: each Stripe event is stored once, raw with its digest, in
batches of one transaction; pending events are followed incrementally; each
settlement is recorded once; the sync cursor records only real moves."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest

from ledger.app import Ledger
from ledger.sources import Source
from ledger.stripe_inbox.application import Settlement
from ledger.stripe_inbox.domain import (
    Disposition,
    IncomingStripeEvent,
    InvalidStripeEvent,
    StripeEvent,
    SyncPosition,
    sha256_hex,
)

SYNC = Source("sync_run", "sync-1")
START = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def incoming(
    event_id: str,
    invoice_id: str | None = "in_1",
    type: str = "invoice.updated",
    channel: str = "webhook",
) -> IncomingStripeEvent:
    payload = json.dumps(
        {"id": event_id, "object": "event", "type": type, "data": {"object": {"id": invoice_id}}},
        indent=2,
        ensure_ascii=False,
    )
    return IncomingStripeEvent(
        event_id=event_id,
        type=type,
        object_id=invoice_id,
        invoice_id=invoice_id,
        created=1_767_225_600,
        livemode=False,
        payload=payload,
        sha256=sha256_hex(payload),
        channel=channel,
        ignore_reason="" if invoice_id else "not about an invoice",
    )


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def test_a_batch_is_stored_once_with_its_raw_payload_and_digest(ledger: Ledger) -> None:
    batch = [incoming("evt_1"), incoming("evt_2", "in_2"), incoming("evt_1")]
    assert ledger.receive_stripe_events(batch) == [True, True, False]
    stored = ledger.stripe_event("evt_1")
    assert stored.payload == batch[0].payload
    assert stored.sha256 == sha256_hex(batch[0].payload)
    assert stored.payload_intact
    assert stored.disposition is Disposition.RECEIVED
    [received] = ledger.history(StripeEvent.create_id("evt_1"))
    assert received.source == Source("stripe_event", "evt_1")
    before = head(ledger)
    # A redelivery, alone or in another batch, stores nothing.
    assert ledger.receive_stripe_events([incoming("evt_2", "in_2"), incoming("evt_1")]) == [
        False,
        False,
    ]
    assert ledger.receive_stripe_event(incoming("evt_3"), SYNC) is True
    assert ledger.stripe_event("evt_3").channel == "webhook"
    assert head(ledger) == before + 1
    assert ledger.verify_seal().ok


def test_non_ascii_payloads_keep_their_exact_bytes(ledger: Ledger) -> None:
    event = incoming("evt_utf8")
    payload = event.payload + '\n{"name": "Pampas Energía ✓"}'
    weird = IncomingStripeEvent(
        **{**event.__dict__, "payload": payload, "sha256": sha256_hex(payload)}
    )
    assert ledger.receive_stripe_event(weird)
    assert ledger.stripe_event("evt_utf8").payload.encode() == payload.encode()


@pytest.mark.parametrize("invoice_id", ["in_1", None])
def test_the_receipt_events_are_the_ones_receive_records(invoice_id: str | None) -> None:
    event = incoming("evt_1", invoice_id, "invoice.paid" if invoice_id else "customer.created")
    source, at = Source("stripe_event", "evt_1"), START
    made = StripeEvent.receipt(event, source, at)
    aggregate = StripeEvent.receive(event, source, at)
    recorded = aggregate.collect_events()
    assert [(type(e), e.__dict__) for e in made] == [(type(e), e.__dict__) for e in recorded]


def test_a_digest_that_is_not_the_payloads_is_refused() -> None:
    good = incoming("evt_1")
    with pytest.raises(InvalidStripeEvent, match="SHA-256"):
        IncomingStripeEvent(**{**good.__dict__, "sha256": sha256_hex("something else")})
    with pytest.raises(InvalidStripeEvent, match="event id"):
        IncomingStripeEvent(**{**good.__dict__, "event_id": "ch_1"})


def test_an_event_about_no_invoice_is_stored_and_ignored_at_once(ledger: Ledger) -> None:
    assert ledger.receive_stripe_event(incoming("evt_c", None, "customer.created"))
    event = ledger.stripe_event("evt_c")
    assert (event.disposition, event.detail) == (Disposition.IGNORED, "not about an invoice")
    assert ledger.pending_stripe_events() == []


def test_pending_events_are_followed_incrementally_and_settled_once(ledger: Ledger) -> None:
    ledger.receive_stripe_events([incoming("evt_1"), incoming("evt_2", "in_2")])
    tail = ledger.stripe_inbox_tail()
    assert [p.event_id for p in tail.refresh()] == ["evt_1", "evt_2"]
    ledger.receive_stripe_event(incoming("evt_3"))
    done = Settlement("evt_1", Disposition.PROCESSED, "in_1", True, "evt_3")
    observed = Source("stripe_event", "evt_3")
    assert ledger.settle_stripe_events([done], observed) == 1
    assert [p.event_id for p in tail.refresh()] == ["evt_2", "evt_3"]
    before = head(ledger)
    assert ledger.settle_stripe_events([done], observed) == 0
    assert head(ledger) == before
    failed = Settlement("evt_2", Disposition.FAILED, detail="no such entity")
    assert ledger.settle_stripe_events([failed], SYNC) == 1
    assert ledger.settle_stripe_events([failed], SYNC) == 0  # the same failure is no news
    assert [p.event_id for p in tail.refresh()] == ["evt_3"]
    retry = ledger.pending_stripe_events(include_failed=True)
    assert [(p.event_id, p.disposition) for p in retry] == [
        ("evt_2", Disposition.FAILED),
        ("evt_3", Disposition.RECEIVED),
    ]
    assert ledger.settle_stripe_events(
        [Settlement("evt_2", Disposition.PROCESSED, "in_2", False, "sync-1")], SYNC
    )
    assert ledger.stripe_event("evt_2").disposition is Disposition.PROCESSED
    assert ledger.verify_seal().ok


def test_settling_by_known_version_skips_loading_and_falls_back_on_a_conflict(
    ledger: Ledger,
) -> None:
    ledger.receive_stripe_events([incoming("evt_1"), incoming("evt_2")])
    first, second = ledger.pending_stripe_events()
    assert (first.version, second.version) == (1, 1)
    source = Source("stripe_event", "evt_2")
    done = [
        Settlement(p.event_id, Disposition.PROCESSED, "in_1", True, "evt_2", version=p.version)
        for p in (first, second)
    ]
    # Another worker settles evt_1 first: the known-version save fails as a whole,
    # and the loaded decision records only evt_2.
    ledger.settle_stripe_events([done[0]], source)
    assert ledger.settle_stripe_events(done, source) == 1
    for event_id in ("evt_1", "evt_2"):
        kinds = [type(e).__name__ for e in ledger.history(StripeEvent.create_id(event_id))]
        assert kinds == ["Received", "Processed"]
    assert ledger.verify_seal().ok


def test_a_batch_of_settlements_carries_each_its_own_source(ledger: Ledger) -> None:
    ledger.receive_stripe_events([incoming("evt_1"), incoming("evt_2", "in_2")])
    first, _ = ledger.pending_stripe_events()
    with pytest.raises(ValueError, match="source"):
        ledger.settle_stripe_events([Settlement("evt_1", Disposition.IGNORED, detail="x")])
    batch = [
        Settlement(
            "evt_1",
            Disposition.PROCESSED,
            "in_1",
            True,
            "evt_1",
            version=first.version,
            source=Source("stripe_event", "evt_1"),
        ),
        Settlement(
            "evt_2", Disposition.FAILED, detail="no entity", source=Source("stripe_event", "evt_2")
        ),
    ]
    assert ledger.settle_stripe_events(batch) == 2
    assert [ledger.history(StripeEvent.create_id(e))[-1].source.id for e in ("evt_1", "evt_2")] == [
        "evt_1",
        "evt_2",
    ]
    assert ledger.stripe_event("evt_2").disposition is Disposition.FAILED


def test_concurrent_receivers_store_each_event_once(ledger: Ledger) -> None:
    batch = [incoming(f"evt_{i}", f"in_{i % 3}") for i in range(30)]
    results: list[list[bool]] = []
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            results.append(ledger.receive_stripe_events(batch))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=receive) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [sum(col) for col in zip(*results, strict=True)] == [1] * 30
    assert len(ledger.pending_stripe_events()) == 30


def test_the_sync_cursor_records_only_real_moves(ledger: Ledger) -> None:
    assert ledger.sync_position("stripe") == SyncPosition()
    moved = SyncPosition(events_head="evt_9", events_listing_after="evt_5")
    assert ledger.move_sync_cursor("stripe", moved, SYNC) is True
    assert ledger.sync_position("stripe") == moved
    before = head(ledger)
    assert ledger.move_sync_cursor("stripe", moved, SYNC) is False
    assert head(ledger) == before
    done = SyncPosition(events_after="evt_9", invoices_listed=True)
    assert ledger.move_sync_cursor("stripe", done, SYNC) is True
    assert ledger.sync_position("stripe") == done
    assert ledger.sync_position("other") == SyncPosition()
