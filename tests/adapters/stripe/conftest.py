"""Fixtures for the inbound adapter's tests: a seeded sandbox over HTTP, the
adapter's own Stripe client on it, a ledger on each backend, and a billing world
whose Stripe customers are the ledger's billable entities."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import stripe

from adapters.stripe.client import close_client, make_client
from adapters.stripe.sandbox import RunningSandbox, start_sandbox
from adapters.stripe.sandbox.testing import FAST_RETRIES
from adapters.stripe.testing import BillingWorld
from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger

SEAL_KEY = "inbound-tests-seal-key-0123456789abcdef"


SettingsFor = Callable[..., Settings]


def settings_for(database_url: str, var_dir: Path, **env: str) -> Settings:
    return Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": database_url,
            "BILLTRAIL_SEAL_KEY": SEAL_KEY,
            "BILLTRAIL_VAR_DIR": str(var_dir),
            **env,
        }
    )


@pytest.fixture
def make_settings() -> SettingsFor:
    """Settings for a database URL and var dir (and more variables), with the
    tests' seal key."""
    return settings_for


@pytest.fixture
def stripe_sandbox() -> Iterator[RunningSandbox]:
    with start_sandbox(seed="billtrail-inbound", webhook_retry_delays=FAST_RETRIES) as running:
        yield running


@pytest.fixture
def client(stripe_sandbox: RunningSandbox) -> Iterator[stripe.StripeClient]:
    made = make_client(stripe_sandbox.api_key, stripe_sandbox.url)
    yield made
    close_client(made)


@pytest.fixture
def ledger(database_url: str, tmp_path: Path) -> Iterator[Ledger]:
    app = bootstrap.ledger(settings_for(database_url, tmp_path / "var"))
    yield app
    app.close()


@pytest.fixture
def world(client: stripe.StripeClient, ledger: Ledger) -> BillingWorld:
    return BillingWorld.create(client, ledger)
