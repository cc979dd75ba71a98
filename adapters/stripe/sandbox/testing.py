"""Test support for code that talks to the sandbox (the sandbox's own tests, and
the adapter's later): StripeClients that close their HTTP sessions, where a
contract scenario runs (the sandbox or Stripe test mode), and a webhook
receiver that records what it is sent."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import stripe

from adapters.stripe.sandbox import SANDBOX_API_KEY, RunningSandbox, wait_until

# Webhook retries in tests: fast, so a test of three retries takes well under a second.
FAST_RETRIES = (0.05, 0.1, 0.2)
CONTRACT_SKIP_REASON = "contract tests need STRIPE_API_KEY with a Stripe test-mode key (not CI)"


def real_stripe_key() -> str | None:
    """A Stripe test-mode key from the environment, when contract tests may run."""
    key = os.environ.get("STRIPE_API_KEY", "")
    if os.environ.get("CI") == "true":
        return None
    if key.startswith("sk_test_") and key != SANDBOX_API_KEY:
        return key
    return None


class Clients:
    """Makes StripeClients with their own HTTP client, and closes those at the end
    (an unclosed requests session is a ResourceWarning, which fails the test)."""

    def __init__(self) -> None:
        self._http: list[stripe.RequestsClient] = []

    def make(self, api_key: str, base: str | None, retries: int = 2) -> stripe.StripeClient:
        http = stripe.RequestsClient(timeout=30)
        self._http.append(http)
        addresses: Any = {"api": base} if base else None
        return stripe.StripeClient(
            api_key, base_addresses=addresses, max_network_retries=retries, http_client=http
        )

    def close(self) -> None:
        for http in self._http:
            http.close()  # type: ignore[no-untyped-call]  # unannotated in the SDK


@dataclass
class StripeTarget:
    """Where a contract scenario runs: the sandbox, or Stripe test mode."""

    name: str
    client: stripe.StripeClient
    sandbox: RunningSandbox | None
    # How long a test clock may take to advance (Stripe takes seconds to minutes).
    clock_timeout: float = 15.0
    cleanups: list[Callable[[], Any]] = field(default_factory=list)

    @property
    def is_sandbox(self) -> bool:
        return self.sandbox is not None

    def advance(self, clock_id: str, frozen_time: int) -> Any:
        """Advance a test clock and wait until it reports `ready`."""
        self.client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": frozen_time})
        return wait_until(
            lambda: self.client.v1.test_helpers.test_clocks.retrieve(clock_id),
            lambda clock: clock.status == "ready",
            timeout=self.clock_timeout,
            interval=0.02 if self.is_sandbox else 2.0,
        )

    def eventually(self, read: Callable[[], Any], predicate: Callable[[Any], bool]) -> Any:
        """Stripe applies meter events asynchronously; the sandbox at once."""
        return wait_until(
            read,
            predicate,
            timeout=5.0 if self.is_sandbox else 120.0,
            interval=0.02 if self.is_sandbox else 2.0,
        )


# Webhook receiver ----------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


class WebhookReceiver:
    """An endpoint that records every POST with its raw body and answers with the
    next status from `statuses` (200 once they run out)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.received.append(
                        Received(
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            status,
                            time.time(),
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/stripe/webhook"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        return wait_until(self.snapshot, predicate, timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
