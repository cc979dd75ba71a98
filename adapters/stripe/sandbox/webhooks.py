"""Webhook delivery: for every event, a POST to each enabled endpoint that
wants it, signed as Stripe signs (`Stripe-Signature: t=<send time>,v1=<hex>`,
HMAC-SHA256 over `"{t}.{body}"` keyed with the endpoint's `whsec_` secret; one
`v1` per secret while a rolled secret is still honoured), retried on anything
but a 2xx after each of the configured delays, and recorded with every attempt.

One worker thread sends in queue order; the fault switches can drop an
attempt (it counts as a failed attempt and is retried), send a delivery twice,
or hold a few deliveries back and release them in reverse order."""

from __future__ import annotations

import hashlib
import heapq
import hmac
import http.client
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from adapters.stripe.sandbox.context import public
from adapters.stripe.sandbox.errors import JsonDict
from adapters.stripe.sandbox.store import Store

if TYPE_CHECKING:
    from adapters.stripe.sandbox.faults import Faults

log = logging.getLogger("billtrail.stripe_sandbox.webhooks")

# Stripe's sandbox tries 3 more times over a few hours; the local default is quicker.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (10.0, 60.0, 300.0)
SEND_TIMEOUT = 10.0
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def signature_header(body: bytes, secrets: Sequence[str], timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + body
    signatures = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join([f"t={timestamp}", *(f"v1={s}" for s in signatures)])


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    delivery_id: str = field(compare=False)


@dataclass
class _Send:
    delivery_id: str
    url: str
    body: bytes
    secrets: list[str]


class Dispatcher:
    def __init__(
        self,
        lock: threading.RLock,
        store: Callable[[], Store],
        faults: Faults,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._lock = lock
        self._store = store
        self._faults = faults
        self.retry_delays = tuple(retry_delays)
        self._on_change = on_change
        self._cv = threading.Condition()
        self._queue: list[_Due] = []
        self._seq = 0
        self._held: list[str] = []
        self._held_once: set[str] = set()
        self._held_since = 0.0
        self._stopping = False
        self._thread: threading.Thread | None = None

    # Lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=SEND_TIMEOUT + 5)
            self._thread = None

    def clear(self) -> None:
        with self._cv:
            self._queue.clear()
            self._held.clear()

    def resume(self) -> None:
        """Queue the deliveries a saved state left pending, on this run's schedule:
        never later than this run's first retry delay from now."""
        now = time.time()
        soonest = now + (self.retry_delays[0] if self.retry_delays else 0.0)
        for delivery in self._store().deliveries.values():
            if delivery["status"] == "pending":
                self._push(delivery["id"], min(delivery["next_attempt_at"] or now, soonest))

    # Enqueueing (called under the state lock) -------------------------------------

    def enqueue(self, event: JsonDict, endpoints: list[JsonDict]) -> None:
        store = self._store()
        event["pending_webhooks"] = len(endpoints)
        now = time.time()
        for endpoint in endpoints:
            delivery_id = store.new_id("whdel")
            store.deliveries[delivery_id] = {
                "id": delivery_id,
                "event": event["id"],
                "type": event["type"],
                "endpoint": endpoint["id"],
                "url": endpoint["url"],
                "status": "pending",
                "attempts": [],
                "next_attempt_at": now,
                "created": now,
            }
            self._push(delivery_id, now)

    def _push(self, delivery_id: str, at: float) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._queue, _Due(at, self._seq, delivery_id))
            self._cv.notify_all()

    # The worker ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            delivery_id = self._next()
            if delivery_id is None:
                return
            try:
                self._deliver(delivery_id)
            except Exception:
                log.exception("webhook delivery %s failed unexpectedly", delivery_id)

    def _next(self) -> str | None:
        with self._cv:
            while not self._stopping:
                self._release_held_if_due()
                now = time.time()
                if self._queue and self._queue[0].at <= now:
                    return heapq.heappop(self._queue).delivery_id
                self._cv.wait(timeout=self._wait_time(now))
            return None

    def _wait_time(self, now: float) -> float:
        waits = [1.0]
        if self._queue:
            waits.append(self._queue[0].at - now)
        if self._held:
            waits.append(self._held_since + self._faults.reorder_hold - now)
        return max(0.0, min(waits))

    def _release_held_if_due(self) -> None:
        full = self._held and self._faults.pending_webhook("reorder") == 0
        late = self._held and time.time() >= self._held_since + self._faults.reorder_hold
        if full or late:
            held, self._held = self._held, []
            for delivery_id in reversed(held):
                self._seq += 1
                heapq.heappush(self._queue, _Due(0.0, self._seq, delivery_id))

    def _deliver(self, delivery_id: str) -> None:
        send = self._prepare(delivery_id)
        if send is None:
            return
        if delivery_id not in self._held_once and self._faults.take_webhook("reorder"):
            with self._cv:
                if not self._held:
                    self._held_since = time.time()
                self._held.append(delivery_id)
                self._held_once.add(delivery_id)
            return
        if self._faults.take_webhook("drop"):
            self._record(
                delivery_id, None, "dropped by the sandbox fault switch", 0, duplicate=False
            )
            return
        self._send(send, duplicate=False)
        if self._faults.take_webhook("duplicate"):
            self._send(send, duplicate=True)

    def _prepare(self, delivery_id: str) -> _Send | None:
        with self._lock:
            store = self._store()
            delivery = store.deliveries.get(delivery_id)
            if delivery is None or delivery["status"] != "pending":
                return None
            endpoint = store.objects["webhook_endpoint"].get(delivery["endpoint"])
            event = store.objects["event"].get(delivery["event"])
            if endpoint is None or event is None:
                return None
            now = time.time()
            secrets = [s for s, expires in endpoint["_secrets"] if expires is None or expires > now]
            body = json.dumps(public(event), indent=2).encode()
            return _Send(delivery_id, delivery["url"], body, secrets)

    def _send(self, send: _Send, *, duplicate: bool) -> None:
        timestamp = int(time.time())
        header = signature_header(send.body, send.secrets, timestamp)
        status, error = post(send.url, send.body, header)
        self._record(send.delivery_id, status, error, timestamp, duplicate=duplicate)

    def _record(
        self,
        delivery_id: str,
        status: int | None,
        error: str | None,
        timestamp: int,
        *,
        duplicate: bool,
    ) -> None:
        with self._lock:
            store = self._store()
            delivery = store.deliveries.get(delivery_id)
            if delivery is None:
                return
            delivery["attempts"].append(
                {
                    "at": time.time(),
                    "status_code": status,
                    "error": error,
                    "signature_timestamp": timestamp or None,
                    "duplicate": duplicate,
                }
            )
            if not duplicate:
                self._settle(store, delivery, status is not None and 200 <= status < 300)
            self._on_change()

    def _settle(self, store: Store, delivery: JsonDict, ok: bool) -> None:
        if delivery["status"] != "pending":
            return
        tries = sum(1 for a in delivery["attempts"] if not a["duplicate"])
        if ok:
            delivery.update(status="succeeded", next_attempt_at=None)
            event = store.objects["event"].get(delivery["event"])
            if event is not None:
                event["pending_webhooks"] = max(0, event["pending_webhooks"] - 1)
        elif tries <= len(self.retry_delays):
            delivery["next_attempt_at"] = time.time() + self.retry_delays[tries - 1]
            self._push(delivery["id"], delivery["next_attempt_at"])
        else:
            delivery.update(status="failed", next_attempt_at=None)


def post(url: str, body: bytes, signature: str) -> tuple[int | None, str | None]:
    """POST the event; (HTTP status, None) or (None, what went wrong)."""
    parts = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname or "", parts.port, timeout=SEND_TIMEOUT)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        "Stripe-Signature": signature,
    }
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, None
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
