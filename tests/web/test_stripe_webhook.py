"""POST /stripe/webhook: a real signature is stored raw with its digest and
acknowledged; a tampered body or signature, a stale or future timestamp, a
malformed body are refused with a JSON 400 and stored nowhere; a replay is
acknowledged and stores nothing; an unknown event type is acknowledged, stored
and ignored. Through Flask's test client, through `handle_webhook` alone, and one
real delivery from the sandbox to the app served on loopback."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest
from flask.testing import FlaskClient

from adapters.stripe.client import close_client, make_client
from adapters.stripe.sandbox import start_sandbox, wait_until
from adapters.stripe.sandbox.testing import FAST_RETRIES
from adapters.stripe.testing import (
    ROLLED_WEBHOOK_SECRET,
    WEBHOOK_SECRET,
    BillingWorld,
    LoopbackServer,
    event_body,
    sign,
)
from adapters.stripe.webhooks import BatchingReceiver, DirectReceiver, handle_webhook
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.stripe_inbox.domain import Disposition, StripeEvent
from web import create_app, shutdown

SECRET, OLD_SECRET = WEBHOOK_SECRET, ROLLED_WEBHOOK_SECRET

INVOICE = {"id": "in_1", "object": "invoice", "status": "paid"}


def post(http: FlaskClient, body: bytes, signature: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    response = http.post("/stripe/webhook", data=body, headers=headers)
    return response.status_code, response.get_json()


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def test_a_signed_event_is_stored_raw_with_its_digest(http: FlaskClient, ledger: Ledger) -> None:
    body = event_body("evt_1", "invoice.paid", INVOICE)
    assert post(http, body, sign(body, SECRET)) == (200, {"received": "evt_1"})
    stored = ledger.stripe_event("evt_1")
    assert stored.payload.encode() == body  # byte for byte
    assert stored.sha256 == hashlib.sha256(body).hexdigest()
    assert (stored.type, stored.invoice_id, stored.channel) == ("invoice.paid", "in_1", "webhook")
    assert [p.event_id for p in ledger.pending_stripe_events()] == ["evt_1"]


def test_every_secret_of_a_rotation_is_accepted(http: FlaskClient, ledger: Ledger) -> None:
    old = event_body("evt_old", "invoice.updated", INVOICE)
    assert post(http, old, sign(old, OLD_SECRET))[0] == 200
    both = event_body("evt_both", "invoice.updated", INVOICE)
    assert post(http, both, sign(both, [OLD_SECRET, SECRET]))[0] == 200
    stranger = event_body("evt_other", "invoice.updated", INVOICE)
    assert post(http, stranger, sign(stranger, "whsec_someone_else"))[0] == 400


def test_tampered_bodies_and_signatures_are_refused_and_not_stored(
    http: FlaskClient, ledger: Ledger
) -> None:
    body = event_body("evt_1", "invoice.paid", INVOICE)
    signature = sign(body, SECRET)
    tampered = body.replace(b'"paid"', b'"void"')
    status, answer = post(http, tampered, signature)
    assert status == 400
    assert "does not match" in str(answer["error"])
    t, v1 = signature.split(",")
    flipped = v1[:-1] + ("0" if v1[-1] != "0" else "1")
    assert post(http, body, f"{t},{flipped}")[0] == 400
    # Re-serialised JSON (same content, other bytes) is not what was signed.
    reformatted = json.dumps(json.loads(body)).encode()
    assert post(http, reformatted, signature)[0] == 400
    assert head(ledger) == 0
    assert not ledger.has_stripe_event("evt_1")


def test_stale_and_future_timestamps_are_refused(http: FlaskClient, ledger: Ledger) -> None:
    body = event_body("evt_1", "invoice.paid", INVOICE)
    now = int(time.time())
    status, answer = post(http, body, sign(body, SECRET, now - 301))
    assert status == 400
    assert "tolerance" in str(answer["error"])
    assert post(http, body, sign(body, SECRET, now + 301))[0] == 400
    assert post(http, body, sign(body, SECRET, now - 290))[0] == 200


def test_a_replayed_event_is_acknowledged_and_stored_once(
    http: FlaskClient, ledger: Ledger
) -> None:
    body = event_body("evt_1", "invoice.paid", INVOICE)
    assert post(http, body, sign(body, SECRET)) == (200, {"received": "evt_1"})
    before = head(ledger)
    assert post(http, body, sign(body, SECRET)) == (200, {"received": "evt_1", "duplicate": True})
    # Stripe's redelivery of the same event with other bytes: the id decides.
    again = event_body("evt_1", "invoice.paid", INVOICE, indent=None)
    assert post(http, again, sign(again, SECRET))[1]["duplicate"] is True
    assert head(ledger) == before
    assert len(ledger.history(StripeEvent.create_id("evt_1"))) == 1


def test_an_unknown_event_type_is_acknowledged_stored_and_ignored(
    http: FlaskClient, ledger: Ledger
) -> None:
    body = event_body("evt_c", "customer.created", {"id": "cus_1", "object": "customer"})
    assert post(http, body, sign(body, SECRET)) == (200, {"received": "evt_c"})
    stored = ledger.stripe_event("evt_c")
    assert stored.disposition is Disposition.IGNORED
    assert "customer" in stored.detail
    upcoming = event_body("evt_u", "invoice.upcoming", {"object": "invoice", "id": None})
    assert post(http, upcoming, sign(upcoming, SECRET))[0] == 200
    assert ledger.stripe_event("evt_u").disposition is Disposition.IGNORED
    assert ledger.pending_stripe_events() == []


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json at all", "not JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'{"object": "v2.core.event", "id": "evt_1"}', "not a Stripe event"),
        (b'{"object": "event", "type": "invoice.paid", "data": {"object": {}}}', "evt_ id"),
        (b'{"object": "event", "id": "evt_1", "data": {"object": {}}, "created": 1}', "type"),
        (b'{"object": "event", "id": "evt_1", "type": "x.y", "created": 1}', "data.object"),
        (b'{"object": "event", "id": "evt_1", "type": "x.y", "data": {"object": {}}}', "created"),
    ],
)
def test_malformed_bodies_get_a_json_400(
    http: FlaskClient, ledger: Ledger, body: bytes, problem: str
) -> None:
    status, answer = post(http, body, sign(body, SECRET))
    assert status == 400
    assert problem in str(answer["error"])
    assert head(ledger) == 0


def test_missing_or_garbled_headers_and_bodies_that_are_not_utf8(
    http: FlaskClient, ledger: Ledger
) -> None:
    body = event_body("evt_1", "invoice.paid", INVOICE)
    assert post(http, body, None)[0] == 400
    assert post(http, body, "t=abc,v1=00")[0] == 400
    assert post(http, body, "")[0] == 400
    assert post(http, b"\xff\xfe", sign(b"x", SECRET))[1] == {"error": "the body is not UTF-8"}
    assert post(http, b"x" * ((1 << 20) + 1), sign(b"x", SECRET))[0] == 413
    answer = http.get("/stripe/webhook")
    assert (answer.status_code, answer.get_json()) == (405, {"error": answer.get_json()["error"]})
    assert head(ledger) == 0


def test_without_a_configured_secret_deliveries_wait(ledger: Ledger, settings: Settings) -> None:
    bare = Settings.from_env({**settings.env, "STRIPE_WEBHOOK_SECRET": ""})
    app = create_app(ledger, None, bare)
    try:
        body = event_body("evt_1", "invoice.paid", INVOICE)
        status, answer = post(app.test_client(), body, sign(body, SECRET))
        assert status == 503  # Stripe retries; nothing is lost while the secret is set
        assert "secret" in str(answer["error"])
    finally:
        shutdown(app)


def test_the_endpoint_is_exempt_from_the_apps_csrf_protection(
    ledger: Ledger, settings: Settings
) -> None:
    app = create_app(ledger, None, settings)
    app.add_url_rule("/form", "form", lambda: "ok", methods=["POST"])
    try:
        client = app.test_client()
        assert client.post("/form", data={"x": "1"}).status_code == 400  # no CSRF token
        body = event_body("evt_1", "invoice.paid", INVOICE)
        assert post(client, body, sign(body, SECRET))[0] == 200
    finally:
        shutdown(app)


def test_the_handler_alone_without_http(ledger: Ledger) -> None:
    body = event_body("evt_1", "invoice.paid", INVOICE)
    signed = sign(body, SECRET, timestamp=1_000_000)
    receive = DirectReceiver(ledger)
    late = handle_webhook(body, signed, secrets=[SECRET], receive=receive, now=lambda: 1_000_301)
    assert late.status == 400
    ok = handle_webhook(body, signed, secrets=[SECRET], receive=receive, now=lambda: 1_000_300)
    assert (ok.status, ok.body) == (200, {"received": "evt_1"})
    failing = handle_webhook(
        body,
        signed,
        secrets=[SECRET],
        receive=lambda event: 1 / 0 > 0,
        now=lambda: 1_000_000,
    )
    assert failing.status == 503  # not stored, so not acknowledged: Stripe will retry


def test_concurrent_deliveries_are_stored_once_each_in_shared_transactions(
    ledger: Ledger,
) -> None:
    receiver = BatchingReceiver(ledger)
    bodies = [event_body(f"evt_{i}", "invoice.updated", INVOICE) for i in range(60)]
    answers: list[int] = []
    lock = threading.Lock()

    def deliver(chunk: list[bytes]) -> None:
        for body in chunk:
            result = handle_webhook(body, sign(body, SECRET), secrets=[SECRET], receive=receiver)
            with lock:
                answers.append(result.status)

    # Every event twice, from different threads at once.
    chunks = [bodies[i::6] for i in range(6)] * 2
    threads = [threading.Thread(target=deliver, args=(chunk,)) for chunk in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    receiver.close()
    assert answers == [200] * 120
    assert receiver.stored == 60
    assert receiver.batches <= 120
    assert len(ledger.pending_stripe_events()) == 60
    assert ledger.verify_seal().ok


# A real delivery, over HTTP, from the sandbox ---------------------------------------


def test_a_delivery_from_the_sandbox_is_stored_and_its_invoice_recorded_behind_it(
    ledger: Ledger, settings: Settings
) -> None:
    with start_sandbox(seed="web-delivery", webhook_retry_delays=FAST_RETRIES) as sandbox:
        client = make_client(sandbox.api_key, sandbox.url)
        hook = client.v1.webhook_endpoints.create(
            {"url": "http://127.0.0.1:9/unused", "enabled_events": ["*"]}
        )
        live = Settings.from_env({**settings.env, "STRIPE_WEBHOOK_SECRET": str(hook.secret)})
        app = create_app(ledger, client, live)
        try:
            with LoopbackServer(app) as server:
                client.v1.webhook_endpoints.update(hook.id, {"url": server.webhook_url})
                world = BillingWorld.create(client, ledger)
                acme = world.customer("acme")
                subscription = world.subscribe(acme)
                invoice_id = subscription.latest_invoice
                wait_until(
                    lambda: ledger.invoices(),
                    lambda found: (
                        [i.stripe_id for i in found] == [invoice_id]
                        and found[0].status.value == "paid"
                    ),
                    timeout=20,
                )
                deliveries = sandbox.control.wait_for_deliveries(
                    lambda d: bool(d) and all(x["status"] == "succeeded" for x in d)
                )
                assert all(x["attempts"][-1]["status_code"] == 200 for x in deliveries)
                wait_until(ledger.pending_stripe_events, lambda pending: pending == [])
                event = ledger.stripe_event(deliveries[0]["event"])
                assert event.payload_intact
                assert ledger.verify_seal().ok
        finally:
            shutdown(app)
            close_client(client)
