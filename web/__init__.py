"""The web app factory. `create_app` takes the pieces `billtrail.bootstrap` built
(the ledger, the Stripe client, the settings, the clock) and registers the
blueprints; it builds nothing concrete itself.

Blueprints: `auth` (/login, /logout), `admin` (/admin/...), `billing` (a
customer's /billing), `api` (/api/..., bearer tokens, OpenAPI), and the Stripe
webhook endpoint. CSRF protection is on for the whole app, so every form is covered
by default; the webhook endpoint (Stripe signs its deliveries) and the token-auth
API (no cookies, so nothing to forge) are exempt.

The app owns background threads (the webhook store's writer, the inbox worker):
`shutdown(app)` stops them."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import stripe
from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from ledger.app import Ledger
from ledger.application import Clock, utc_now
from projections.base import Store
from web import auth, formatting, stripe_webhook
from web.services import KEY, Services

if TYPE_CHECKING:
    from billtrail.settings import Settings

CLOSERS = "billtrail.closers"

# Pages are self-contained: no CDN, no inline script, nothing fetched from outside.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(
    ledger: Ledger,
    stripe_client: stripe.StripeClient | None,
    settings: Settings,
    *,
    clock: Clock = utc_now,
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
    app.config.update(
        SESSION_COOKIE_NAME="billtrail_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as the session
        MAX_CONTENT_LENGTH=1 << 20,
    )
    app.config.update(config or {})
    app.extensions[KEY] = Services(
        ledger=ledger,
        store=Store.of(ledger),
        stripe=stripe_client,
        settings=settings,
        clock=clock,
    )
    csrf = CSRFProtect(app)
    closers: list[Callable[[], None]] = []
    app.extensions[CLOSERS] = closers
    formatting.init_app(app)
    auth.init_app(app)

    from web import admin, api, billing

    app.register_blueprint(admin.blueprint)
    app.register_blueprint(billing.blueprint)
    app.register_blueprint(api.blueprint)
    csrf.exempt(api.blueprint)

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

    @app.after_request
    def secure_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> Any:
        return render_template(
            "error.html", code=400, message=f"The form expired or was forged: {exc.description}"
        ), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        # Machines (Stripe, API clients) get JSON; people get a page.
        code = exc.code or 500
        if request.path.startswith(("/stripe/", "/api/")):
            response = jsonify(error=exc.description or exc.name)
            if code == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="billtrail"'
            return response, code
        if code in (301, 302, 303, 307, 308):
            return exc
        return render_template("error.html", code=code, message=exc.description), code

    return app


def shutdown(app: Flask) -> None:
    """Stop what the app runs in the background (in reverse order of start)."""
    for close in reversed(app.extensions.get(CLOSERS, [])):
        close()
    app.extensions[CLOSERS] = []
