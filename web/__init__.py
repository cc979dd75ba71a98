"""The web app factory. `create_app` takes the pieces `billtrail.bootstrap` built
(the ledger, the Stripe client, the settings) and registers the blueprints; it
builds nothing concrete itself. Blueprints so far: the Stripe webhook endpoint.
The portal adds its own (and logins) here.

CSRF protection is on for the whole app from the start, so every form a later
blueprint adds is covered by default; the webhook endpoint is exempt (Stripe
signs its deliveries instead).

The app owns background threads (the webhook store's writer, the inbox worker):
`shutdown(app)` stops them."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import stripe
from flask import Flask, jsonify, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException

from ledger.app import Ledger
from web import stripe_webhook

if TYPE_CHECKING:
    from billtrail.settings import Settings

CLOSERS = "billtrail.closers"


def create_app(
    ledger: Ledger,
    stripe_client: stripe.StripeClient | None,
    settings: Settings,
    *,
    start_worker: bool = True,
    batching: bool = True,
    config: dict[str, Any] | None = None,
) -> Flask:
    """`start_worker`: process stored webhooks in a thread (off: they wait for
    `process_pending` or `billtrail sync`). `batching`: store concurrent webhooks
    in one transaction (group commit)."""
    app = Flask(__name__)
    # Without BILLTRAIL_SECRET_KEY (the embedded default) sessions last one process.
    app.config["SECRET_KEY"] = settings.secret_key or secrets.token_hex(32)
    app.config.update(config or {})
    csrf = CSRFProtect(app)
    closers: list[Callable[[], None]] = []
    app.extensions[CLOSERS] = closers

    inbound = stripe_webhook.init_app(
        app,
        ledger,
        stripe_client,
        settings.stripe_webhook_secrets,
        api_key=settings.stripe_api_key,
        batching=batching,
        start_worker=start_worker,
    )
    csrf.exempt(stripe_webhook.blueprint)
    closers.append(inbound.close)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        # Machines (Stripe, API clients) get JSON; pages keep Flask's HTML.
        if request.path.startswith(("/stripe/", "/api/")):
            return jsonify(error=exc.description or exc.name), exc.code or 500
        return exc

    return app


def shutdown(app: Flask) -> None:
    """Stop what the app runs in the background (in reverse order of start)."""
    for close in reversed(app.extensions.get(CLOSERS, [])):
        close()
    app.extensions[CLOSERS] = []
