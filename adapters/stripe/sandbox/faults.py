"""Fault switches: what `/_sandbox/faults/...` turns on, consumed by the API
layer and the webhook dispatcher. Each switch counts down and turns itself
off, so a test states exactly how many requests or deliveries misbehave."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

from adapters.stripe.sandbox.errors import JsonDict, StripeError, api_error, rate_limited

HTTP_STATUSES = (409, 429, 500, 502, 503, 504)
WHEN = ("before", "after")
WEBHOOK_FAULTS = ("drop", "duplicate", "reorder")


@dataclass
class HttpFault:
    """`kind` "status" answers with `status`; "drop" closes the connection unanswered.
    `when` "before" refuses the request; "after" runs it (its effects and its saved
    idempotent response stay) and then answers with the fault instead."""

    kind: str
    count: int
    when: str = "before"
    status: int = 500
    should_retry: bool | None = None
    code: str | None = None
    method: str | None = None
    path: str | None = None

    def matches(self, method: str, path: str, when: str) -> bool:
        return (
            self.count > 0
            and self.when == when
            and self.method in (None, method)
            and (self.path is None or path.startswith(self.path))
        )

    def error(self) -> StripeError:
        if self.status == 429:
            return rate_limited(should_retry=self.should_retry, code=self.code or "rate_limit")
        headers = (
            {}
            if self.should_retry is None
            else {"Stripe-Should-Retry": str(self.should_retry).lower()}
        )
        if self.status == 409:
            return StripeError(
                409,
                "invalid_request_error",
                "The request conflicted with another concurrent request.",
                code=self.code or "lock_timeout",
                headers=headers,
            )
        error = api_error(status=self.status)
        error.code, error.headers = self.code, headers
        return error


@dataclass
class Latency:
    seconds: float
    count: int | None
    method: str | None = None
    path: str | None = None


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._http: list[HttpFault] = []
        self._latency: Latency | None = None
        self._webhooks = dict.fromkeys(WEBHOOK_FAULTS, 0)
        self.reorder_hold = 2.0

    def add_http(self, fault: HttpFault) -> None:
        with self._lock:
            self._http.append(fault)

    def take_http(self, method: str, path: str, when: str) -> HttpFault | None:
        with self._lock:
            for fault in self._http:
                if fault.matches(method, path, when):
                    fault.count -= 1
                    return fault
            return None

    def set_latency(self, latency: Latency | None) -> None:
        with self._lock:
            self._latency = latency

    def take_latency(self, method: str, path: str) -> float:
        with self._lock:
            latency = self._latency
            if (
                latency is None
                or latency.method not in (None, method)
                or (latency.path is not None and not path.startswith(latency.path))
            ):
                return 0.0
            if latency.count is not None:
                latency.count -= 1
                if latency.count <= 0:
                    self._latency = None
            return latency.seconds

    def add_webhook(self, kind: str, count: int) -> None:
        with self._lock:
            self._webhooks[kind] += count

    def take_webhook(self, kind: str) -> bool:
        with self._lock:
            if self._webhooks[kind] <= 0:
                return False
            self._webhooks[kind] -= 1
            return True

    def pending_webhook(self, kind: str) -> int:
        with self._lock:
            return self._webhooks[kind]

    def clear(self) -> None:
        with self._lock:
            self._http.clear()
            self._latency = None
            self._webhooks = dict.fromkeys(WEBHOOK_FAULTS, 0)

    def snapshot(self) -> JsonDict:
        with self._lock:
            return {
                "http": [asdict(f) for f in self._http if f.count > 0],
                "latency": asdict(self._latency) if self._latency else None,
                "webhooks": dict(self._webhooks),
            }
