"""What the views use, built by `billtrail.bootstrap` and handed to `create_app`:
the ledger (commands), the read models' store (queries), the Stripe client (admin
actions go through the adapter), the settings and the clock. Views reach them with
`services()`; nothing here builds anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import stripe
from flask import current_app

from ledger.app import Ledger
from projections.base import Store

if TYPE_CHECKING:
    from billtrail.settings import Settings

KEY = "billtrail.services"


@dataclass(frozen=True)
class Services:
    ledger: Ledger
    store: Store
    stripe: stripe.StripeClient | None
    settings: Settings
    clock: Callable[[], datetime]


def services() -> Services:
    found: Services = current_app.extensions[KEY]
    return found
