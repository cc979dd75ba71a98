"""`POST /stripe/webhook`: Stripe's deliveries. Exempt from CSRF (Stripe has no
session or token) and protected by its signature instead. The view holds no rule:
it hands the raw body and the `Stripe-Signature` header to
`adapters.stripe.webhooks.handle_webhook` and answers what it says.

Behind the acknowledgement, an `InboxWorker` thread re-reads the invoices the
stored events are about (when the app was given a Stripe client)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import stripe
from flask import Blueprint, Flask, Response, current_app, request
from flask.typing import ResponseReturnValue

from adapters.stripe.client import TokenBucket, limiter_for
from adapters.stripe.processing import InboxWorker
from adapters.stripe.webhooks import (
    MAX_PAYLOAD_BYTES,
    BatchingReceiver,
    DirectReceiver,
    handle_webhook,
)
from ledger.app import Ledger

EXTENSION = "billtrail.stripe_webhook"

blueprint = Blueprint("stripe_webhook", __name__, url_prefix="/stripe")


@dataclass
class StripeInbound:
    """What the endpoint needs, built once per app."""

    secrets: tuple[str, ...]
    receiver: BatchingReceiver | DirectReceiver
    worker: InboxWorker | None

    def close(self) -> None:
        self.receiver.close()
        if self.worker is not None:
            self.worker.stop()


@blueprint.post("/webhook")
def webhook() -> ResponseReturnValue:
    inbound: StripeInbound = current_app.extensions[EXTENSION]
    if request.content_length is not None and request.content_length > MAX_PAYLOAD_BYTES:
        return _json({"error": "the body is larger than a Stripe event can be"}, 413)
    # Bounded even without a Content-Length (a chunked body): werkzeug answers 413.
    request.max_content_length = MAX_PAYLOAD_BYTES
    result = handle_webhook(
        request.get_data(cache=False),
        request.headers.get("Stripe-Signature"),
        secrets=inbound.secrets,
        receive=inbound.receiver,
    )
    return _json(result.body, result.status)


def _json(body: dict[str, object], status: int) -> Response:
    # A small body of plain values: json.dumps directly, not Flask's JSON provider
    # (a measurable share of an acknowledgement's time at a thousand a second).
    return current_app.response_class(json.dumps(body), status, mimetype="application/json")


def init_app(
    app: Flask,
    ledger: Ledger,
    client: stripe.StripeClient | None,
    secrets: Sequence[str],
    *,
    api_key: str = "",
    batching: bool = True,
    start_worker: bool = True,
    limiter: TokenBucket | None = None,
) -> StripeInbound:
    worker = None
    if client is not None and start_worker:
        worker = InboxWorker(ledger, client, limiter=limiter or limiter_for(api_key)).start()
    wake = worker.wake if worker is not None else (lambda: None)
    receiver = BatchingReceiver(ledger, wake) if batching else DirectReceiver(ledger, wake)
    inbound = StripeInbound(tuple(secrets), receiver, worker)
    app.extensions[EXTENSION] = inbound
    app.register_blueprint(blueprint)
    return inbound
