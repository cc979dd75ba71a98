"""Fixtures for the Stripe sandbox tests.

`sandbox` is a real HTTP server on an ephemeral loopback port; `stripe_client`
the official SDK pointed at it (never the SDK's globals), with retries on.
`stripe_target` runs a scenario twice: against the sandbox, and against Stripe
test mode when STRIPE_API_KEY holds a real test key (skipped otherwise, and
always with CI=true), so the sandbox cannot drift from Stripe unnoticed.
`webhook_receiver` is an HTTP endpoint that records what it is sent."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import stripe

from adapters.stripe.sandbox import SANDBOX_API_KEY, RunningSandbox, start_sandbox
from adapters.stripe.sandbox.testing import (
    CONTRACT_SKIP_REASON,
    FAST_RETRIES,
    Clients,
    StripeTarget,
    WebhookReceiver,
    real_stripe_key,
)


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start_sandbox(seed="billtrail-tests", webhook_retry_delays=FAST_RETRIES) as running:
        yield running


@pytest.fixture
def clients() -> Iterator[Clients]:
    made = Clients()
    yield made
    made.close()


@pytest.fixture
def stripe_client(sandbox: RunningSandbox, clients: Clients) -> stripe.StripeClient:
    return clients.make(sandbox.api_key, sandbox.url)


@pytest.fixture
def client_factory(sandbox: RunningSandbox, clients: Clients) -> Callable[..., stripe.StripeClient]:
    """More clients on the sandbox (another key, another retry setting)."""

    def make(api_key: str = SANDBOX_API_KEY, retries: int = 2) -> stripe.StripeClient:
        return clients.make(api_key, sandbox.url, retries)

    return make


@pytest.fixture(params=["sandbox", "stripe"])
def stripe_target(request: pytest.FixtureRequest, clients: Clients) -> Iterator[StripeTarget]:
    if request.param == "sandbox":
        with start_sandbox(seed="billtrail-contract", webhook_retry_delays=FAST_RETRIES) as sb:
            yield StripeTarget("sandbox", clients.make(sb.api_key, sb.url), sb)
        return
    key = real_stripe_key()
    if key is None:
        pytest.skip(CONTRACT_SKIP_REASON)
    target = StripeTarget("stripe", clients.make(key, None), None, clock_timeout=600.0)
    try:
        yield target
    finally:
        for cleanup in reversed(target.cleanups):
            with contextlib.suppress(stripe.StripeError):
                cleanup()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()
