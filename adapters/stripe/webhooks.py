"""Inbound Stripe webhooks: verify, store, acknowledge. Nothing else happens on
the request: the invoice an event is about is re-read and recorded behind the
acknowledgement (adapters.stripe.processing).

`handle_webhook` is the one function that decides what a delivery gets; the
Flask view (web.stripe_webhook) only hands it the raw body and the header, and
tests call it without HTTP. In order:

1. The signature is checked on the exact bytes received (`Stripe-Signature`,
   HMAC-SHA256 of `"{t}.{body}"`, with the SDK's `WebhookSignature`), against
   every configured secret (several while a secret is being rolled), and its
   timestamp must lie within `tolerance` seconds of now, in the past or in the
   future (the SDK accepts any future timestamp; a replay with a forged one is
   not worth accepting).
2. The body must be a Stripe event (`object: "event"`, an `evt_` id, a type,
   `data.object`).
3. It is stored in the ledger's inbox, raw with its SHA-256, once per event id:
   that commit is the acknowledgement (2xx). A redelivery of a stored event is
   acknowledged again and stores nothing.

What is refused (400) is not stored in the ledger: the ledger is append-only
and sealed, and anyone can POST to the endpoint, so unauthenticated bodies would
let anyone grow the audit log forever. A refusal is logged instead (reason,
length, SHA-256 of the body, the signature's timestamp), which is what forensics
needs to match it against Stripe's delivery log.

Events that are not about an invoice (or a credit note, or an invoice item on
an invoice) are stored like the others and marked ignored at once.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import stripe

from ledger.app import Ledger
from ledger.stripe_inbox.domain import Channel, IncomingStripeEvent

log = logging.getLogger("billtrail.stripe.webhooks")

DEFAULT_TOLERANCE = 300
MAX_PAYLOAD_BYTES = 1 << 20  # Stripe's events are a few KB; a MB is generous
STORE_TIMEOUT = 10.0

# The Stripe objects whose events billtrail follows, and how to find the invoice.
_INVOICE_OF: dict[str, Callable[[dict[str, Any]], Any]] = {
    "invoice": lambda obj: obj.get("id"),
    "credit_note": lambda obj: obj.get("invoice"),
    "invoiceitem": lambda obj: obj.get("invoice"),
    "line_item": lambda obj: obj.get("invoice"),
}

Receive = Callable[[IncomingStripeEvent], bool]


@dataclass(frozen=True)
class WebhookResponse:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


def _refused(status: int, reason: str, payload: bytes, header: str | None) -> WebhookResponse:
    log.warning(
        "refused a Stripe webhook (%s): %d bytes, sha256 %s, signature t=%s",
        reason,
        len(payload),
        sha256(payload).hexdigest(),
        _timestamp_text(header),
    )
    return WebhookResponse(status, {"error": reason})


def _timestamp_text(header: str | None) -> str:
    for item in (header or "").split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            return value
    return "-"


def signed_at(header: str) -> int | None:
    text = _timestamp_text(header)
    try:
        return int(text)
    except ValueError:
        return None


def verify(
    text: str, header: str | None, secrets: Sequence[str], tolerance: int, now: float
) -> str | None:
    """None if `header` signs `text` with one of `secrets` at a time within
    `tolerance` of `now`; otherwise why not."""
    if not header:
        return "no Stripe-Signature header"
    matched = False
    for secret in secrets:
        try:
            # Tolerance is checked below, both ways, against an injectable clock.
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance=None)
        except stripe.SignatureVerificationError:
            continue
        matched = True
        break
    if not matched:
        return "the Stripe-Signature does not match the payload for any webhook secret"
    timestamp = signed_at(header)
    if timestamp is None:
        return "the Stripe-Signature has no timestamp"
    if abs(now - timestamp) > tolerance:
        return f"the Stripe-Signature timestamp {timestamp} is outside the {tolerance}s tolerance"
    return None


def parse_event(text: str) -> tuple[dict[str, Any] | None, str]:
    """The event as a dict, or None and why it is not one."""
    try:
        event = json.loads(text)
    except ValueError:
        return None, "the body is not JSON"
    if not isinstance(event, dict):
        return None, "the body is not a JSON object"
    if event.get("object") != "event":
        return None, "the body is not a Stripe event (object is not 'event')"
    event_id, event_type, data = event.get("id"), event.get("type"), event.get("data")
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        return None, "the event has no evt_ id"
    if not isinstance(event_type, str) or not event_type:
        return None, "the event has no type"
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return None, "the event has no data.object"
    created = event.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        return None, "the event has no created time"
    return event, ""


def incoming_event(
    event: dict[str, Any], payload: str, digest: str, channel: Channel
) -> IncomingStripeEvent:
    """What the ledger stores of a parsed event: the payload as given, and the
    invoice the event is about (or why it is about none)."""
    obj: dict[str, Any] = event["data"]["object"]
    kind = obj.get("object")
    object_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    invoice_id: str | None = None
    reason = ""
    find = _INVOICE_OF.get(str(kind))
    if find is None:
        reason = f"billtrail does not follow {kind} events"
    else:
        found = find(obj)
        if isinstance(found, dict):  # expanded
            found = found.get("id")
        if isinstance(found, str) and found.startswith("in_"):
            invoice_id = found
        else:
            reason = f"the {kind} is not on a Stripe invoice with an id"
    return IncomingStripeEvent(
        event_id=event["id"],
        type=event["type"],
        object_id=object_id,
        invoice_id=invoice_id,
        created=event["created"],
        livemode=bool(event.get("livemode")),
        payload=payload,
        sha256=digest,
        channel=channel.value,
        ignore_reason=reason,
    )


def handle_webhook(
    payload: bytes,
    signature: str | None,
    *,
    secrets: Sequence[str],
    receive: Receive,
    tolerance: int = DEFAULT_TOLERANCE,
    now: Callable[[], float] = time.time,
) -> WebhookResponse:
    """Verify a delivery, store it, and say what to answer."""
    if not secrets:
        # Not the sender's fault: 503 makes Stripe retry once the secret is set.
        log.error("a Stripe webhook arrived but STRIPE_WEBHOOK_SECRET is not set")
        return WebhookResponse(503, {"error": "webhook secret not configured; retry later"})
    if len(payload) > MAX_PAYLOAD_BYTES:
        return _refused(413, "the body is larger than a Stripe event can be", payload, signature)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return _refused(400, "the body is not UTF-8", payload, signature)
    problem = verify(text, signature, secrets, tolerance, now())
    if problem is not None:
        return _refused(400, problem, payload, signature)
    event, problem = parse_event(text)
    if event is None:
        return _refused(400, problem, payload, signature)
    digest = sha256(payload).hexdigest()
    try:
        stored = receive(incoming_event(event, text, digest, Channel.WEBHOOK))
    except Exception:
        log.exception("could not store Stripe event %s", event["id"])
        return WebhookResponse(503, {"error": "the event could not be stored; retry later"})
    body: dict[str, Any] = {"received": event["id"]}
    if not stored:
        body["duplicate"] = True
    return WebhookResponse(200, body)


# Storing: one event per transaction, or many ------------------------------------------


class DirectReceiver:
    """Stores each event in its own transaction (tests, light traffic)."""

    def __init__(self, ledger: Ledger, on_stored: Callable[[], None] = lambda: None) -> None:
        self.ledger = ledger
        self.on_stored = on_stored

    def __call__(self, event: IncomingStripeEvent) -> bool:
        stored = self.ledger.receive_stripe_event(event)
        if stored:
            self.on_stored()
        return stored

    def close(self) -> None:
        pass


class BatchingReceiver:
    """Group commit: request threads hand their event to one writer thread, which
    stores everything queued meanwhile in one transaction and then answers each
    of them. Under load a commit carries many webhooks; alone, one. A request is
    only answered after the commit that holds its event, so an acknowledged event
    is durable."""

    def __init__(
        self,
        ledger: Ledger,
        on_stored: Callable[[], None] = lambda: None,
        *,
        max_batch: int = 256,
        timeout: float = STORE_TIMEOUT,
    ) -> None:
        self.ledger = ledger
        self.on_stored = on_stored
        self.max_batch = max_batch
        self.timeout = timeout
        self._queue: queue.SimpleQueue[tuple[IncomingStripeEvent, Future[bool]] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        self.batches = 0
        self.stored = 0
        self._thread = threading.Thread(target=self._run, name="stripe-webhook-store", daemon=True)
        self._thread.start()

    def __call__(self, event: IncomingStripeEvent) -> bool:
        if self._closed:
            raise RuntimeError("the webhook receiver is closed")
        done: Future[bool] = Future()
        self._queue.put((event, done))
        try:
            return done.result(timeout=self.timeout)
        except FutureTimeout:
            raise TimeoutError(f"storing {event.event_id} took over {self.timeout}s") from None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._store(batch)
            if stop:
                return

    def _store(self, batch: list[tuple[IncomingStripeEvent, Future[bool]]]) -> None:
        try:
            results = self.ledger.receive_stripe_events([event for event, _ in batch])
        except Exception as exc:
            for _, done in batch:
                done.set_exception(exc)
            return
        self.batches += 1
        self.stored += sum(results)
        for (_, done), stored in zip(batch, results, strict=True):
            done.set_result(stored)
        if any(results):
            self.on_stored()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=self.timeout)
