"""The Stripe client billtrail uses: the official SDK's `StripeClient`, never the
SDK's module globals (two clients in one process, the sandbox's and a real one,
must not leak settings into each other).

- Retries are explicit: `StripeClient` does not retry at all unless told to
  (`max_network_retries=None` means one attempt). With retries on, the SDK retries
  409, 5xx and connection errors with backoff, reusing the idempotency key of the
  call; it does not retry a 429 unless Stripe says `Stripe-Should-Retry: true`.
- One HTTP session shared by every thread: the SDK's `RequestsClient` otherwise
  opens a session per thread and `close()` closes only the calling thread's,
  leaving the worker thread's socket open (a ResourceWarning, and in a
  long-running process a leak). `close_client` closes the shared one.
- `TokenBucket`: Stripe's rate limits (25 requests/s in test mode and in a
  sandbox, 100 live) are per account; callers that make many reads (the webhook
  worker, `sync`) take a token before each request.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import stripe

R = TypeVar("R")

DEFAULT_TIMEOUT = 30.0
TEST_MODE_RATE = 25.0
LIVE_MODE_RATE = 100.0


class SharedSessionClient(stripe.RequestsClient):
    """The SDK's requests-based HTTP client with one session for all threads."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.shared_session = requests.Session()
        super().__init__(timeout=timeout, session=self.shared_session)

    def close(self) -> None:
        self.shared_session.close()


_OWNED: weakref.WeakKeyDictionary[stripe.StripeClient, SharedSessionClient] = (
    weakref.WeakKeyDictionary()
)


def make_client(
    api_key: str,
    api_base: str | None,
    *,
    max_network_retries: int = 3,
    http_client: stripe.HTTPClient | None = None,
) -> stripe.StripeClient:
    """A StripeClient on `api_base` (the sandbox's URL; None: Stripe itself). With
    no `http_client`, one is made and `close_client` closes it."""
    owned = None
    if http_client is None:
        owned = http_client = SharedSessionClient()
    client = stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        max_network_retries=max_network_retries,
        http_client=http_client,
    )
    if owned is not None:
        _OWNED[client] = owned
    return client


def close_client(client: stripe.StripeClient) -> None:
    """Close the HTTP session `make_client` opened for `client` (a no-op for a
    client made with someone else's `http_client`: its owner closes that)."""
    owned = _OWNED.pop(client, None)
    if owned is not None:
        owned.close()


def is_live_key(api_key: str) -> bool:
    return api_key.startswith(("sk_live_", "rk_live_"))


def default_rate(api_key: str) -> float:
    """Requests per second that stay inside Stripe's limit for this key's mode."""
    return LIVE_MODE_RATE if is_live_key(api_key) else TEST_MODE_RATE


class TokenBucket:
    """At most `rate` acquisitions per second on average, bursts up to `burst`.
    Thread-safe; `acquire` sleeps until a token is free (that is the point: the
    caller is a background worker that must slow down, not fail)."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("a token bucket needs a positive rate")
        self.rate = rate
        self.capacity = burst if burst is not None else rate
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def acquire(self, tokens: float = 1.0) -> None:
        while True:
            with self._lock:
                self._refill()
                # A hair of slack: float arithmetic would otherwise leave 0.999... tokens
                # after a sleep of exactly the computed wait, and loop on ever tinier waits.
                if self._tokens >= tokens - 1e-9:
                    self._tokens -= tokens
                    return
                wait = (tokens - self._tokens) / self.rate
            self._sleep(wait)

    def drain(self) -> None:
        """Forget the burst allowance (after a 429: Stripe says we went too fast)."""
        with self._lock:
            self._refill()
            self._tokens = min(self._tokens, 0.0)


def limiter_for(api_key: str) -> TokenBucket:
    return TokenBucket(default_rate(api_key))


class Throttle:
    """Calls Stripe inside the rate limit: a token before every request, and on a
    429 (which the SDK does not retry unless Stripe says so) the burst allowance
    is dropped and the request tried again after a growing pause. Other errors
    are the SDK's to retry (it retries 409, 5xx and connection errors)."""

    def __init__(
        self,
        limiter: TokenBucket | None = None,
        *,
        retries: int = 4,
        backoff: float = 0.5,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.limiter = limiter
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        self.rate_limited = 0

    def __call__(self, request: Callable[[], R]) -> R:
        attempt = 0
        while True:
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                return request()
            except stripe.RateLimitError:
                self.rate_limited += 1
                if attempt >= self.retries:
                    raise
                if self.limiter is not None:
                    self.limiter.drain()
                self._sleep(self.backoff * 2**attempt)
                attempt += 1
