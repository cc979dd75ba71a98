"""Fixtures for the web app's tests: a ledger on each backend, settings with two
webhook secrets (a rotation in progress), and the app from the factory, with its
background threads stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from adapters.stripe.testing import ROLLED_WEBHOOK_SECRET, WEBHOOK_SECRET
from billtrail import bootstrap
from billtrail.settings import Settings
from ledger.app import Ledger
from web import create_app, shutdown

SEAL_KEY = "web-tests-seal-key-0123456789abcdef012345"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": database_url,
            "BILLTRAIL_SEAL_KEY": SEAL_KEY,
            "BILLTRAIL_VAR_DIR": str(tmp_path / "var"),
            "STRIPE_WEBHOOK_SECRET": f"{WEBHOOK_SECRET}, {ROLLED_WEBHOOK_SECRET}",
        }
    )


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    app = bootstrap.ledger(settings)
    yield app
    app.close()


@pytest.fixture
def app(ledger: Ledger, settings: Settings) -> Iterator[Flask]:
    made = create_app(ledger, None, settings)
    made.testing = True
    yield made
    shutdown(made)


@pytest.fixture
def http(app: Flask) -> FlaskClient:
    return app.test_client()
