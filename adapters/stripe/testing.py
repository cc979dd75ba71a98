"""Test support for the adapter (tests, the bench and the whole-system
simulation): signing webhook bodies as Stripe does, serving the web app on
loopback with a real WSGI server, a small billing world in the sandbox whose
customers are billable entities of the ledger, a crash between Stripe's answer
and the ledger write, an SDK client that retries without pausing, and what two
ledgers are compared by (invoice histories, every fact)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import stripe
from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from adapters.stripe.invoices import ENTITY_METADATA_KEY
from adapters.stripe.outbound.outbox import AfterCall
from adapters.stripe.processing import process_pending
from adapters.stripe.sandbox import RunningSandbox
from ledger.app import Ledger
from ledger.invoices.domain import Invoice
from ledger.sources import Source
from ledger.stripe_outbox.domain import StripeRequest

ADMIN = Source("admin", "tests", actor="tests@billtrail.example")
# Webhook signing secrets for tests: the current one and one being rolled.
WEBHOOK_SECRET = "whsec_billtrail_tests_current"
ROLLED_WEBHOOK_SECRET = "whsec_billtrail_tests_rolled"


def sign(payload: bytes | str, secrets: list[str] | str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header for `payload`, one `v1` per secret."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    t = int(time.time()) if timestamp is None else timestamp
    keys = [secrets] if isinstance(secrets, str) else secrets
    parts = [
        stripe.WebhookSignature.generate_signature_header(text, key, t).split(",")[1]
        for key in keys
    ]
    return ",".join([f"t={t}", *parts])


def event_body(
    event_id: str,
    event_type: str,
    obj: dict[str, Any],
    created: int = 1_767_225_600,
    *,
    indent: int | None = 2,
) -> bytes:
    """A Stripe event's JSON, shaped like Stripe's (and the sandbox's)."""
    event = {
        "id": event_id,
        "object": "event",
        "account": None,
        "api_version": "2026-10-28.endive",
        "context": None,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }
    return json.dumps(event, indent=indent).encode()


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class LoopbackServer:
    """The app behind werkzeug's threaded WSGI server on 127.0.0.1, in a thread."""

    def __init__(self, app: Flask, port: int = 0) -> None:
        self.server: BaseWSGIServer = make_server(
            "127.0.0.1", port, app, threaded=True, request_handler=_QuietHandler
        )
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/stripe/webhook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A billing world ------------------------------------------------------------------------


@dataclass
class Customer:
    entity_id: str
    customer: Any
    timezone: str


@dataclass
class BillingWorld:
    """Customers of the sandbox that are billable entities of the ledger, on one
    test clock (so every time Stripe reports is simulated, the same on every run
    of a seeded sandbox), with a catalog: a monthly fee and a metered per-call
    price on a meter, and an exclusive tax rate."""

    client: stripe.StripeClient
    ledger: Ledger
    start: int
    clock: Any = None
    meter: Any = None
    fee: Any = None
    per_call: Any = None
    tax_rate: Any = None
    customers: dict[str, Customer] = field(default_factory=dict)

    @classmethod
    def create(
        cls, client: stripe.StripeClient, ledger: Ledger, start: int = 1_767_225_600
    ) -> BillingWorld:
        world = cls(client, ledger, start)
        world.clock = client.v1.test_helpers.test_clocks.create(
            {"frozen_time": start, "name": "billtrail"}
        )
        world.meter = client.v1.billing.meters.create(
            {
                "display_name": "Calls handled",
                "event_name": "billtrail_calls",
                "default_aggregation": {"formula": "sum"},
            }
        )
        product = client.v1.products.create({"name": "Phone platform"})
        world.fee = client.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount": 4900,
                "recurring": {"interval": "month"},
            }
        )
        world.per_call = client.v1.prices.create(
            {
                "product": product.id,
                "currency": "usd",
                "unit_amount_decimal": Decimal("1.25"),  # cents: $0.0125 a call
                "recurring": {
                    "interval": "month",
                    "usage_type": "metered",
                    "meter": world.meter.id,
                },
            }
        )
        world.tax_rate = client.v1.tax_rates.create(
            {"display_name": "VAT", "percentage": 20, "inclusive": False}
        )
        return world

    def customer(
        self,
        entity_id: str,
        *,
        card: str = "pm_card_visa",
        timezone: str = "UTC",
        link: str = "metadata",
    ) -> Customer:
        """A billable entity and its Stripe customer, linked by the customer's
        metadata (`link="metadata"`) or by the ledger (`link="ledger"`)."""
        self.ledger.register_entity(
            entity_id.replace("-", " ").title(),
            "company",
            ADMIN,
            entity_id=entity_id,
            timezone=timezone,
        )
        params: stripe.params.CustomerCreateParams = {
            "email": f"billing@{entity_id}.example",
            "test_clock": self.clock.id,
            "payment_method": card,
            "invoice_settings": {"default_payment_method": card},
        }
        if link == "metadata":
            params["metadata"] = {ENTITY_METADATA_KEY: entity_id}
        customer = self.client.v1.customers.create(params)
        if link == "ledger":
            self.ledger.link_stripe_customer(entity_id, customer.id, ADMIN)
        found = Customer(entity_id, customer, timezone)
        self.customers[entity_id] = found
        return found

    def subscribe(self, who: Customer) -> Any:
        return self.client.v1.subscriptions.create(
            {
                "customer": who.customer.id,
                "items": [{"price": self.fee.id}, {"price": self.per_call.id}],
                "default_tax_rates": [self.tax_rate.id],
            }
        )

    def report_calls(self, who: Customer, calls: int, identifier: str, at: int) -> None:
        self.client.v1.billing.meter_events.create(
            {
                "event_name": self.meter.event_name,
                "payload": {"stripe_customer_id": who.customer.id, "value": str(calls)},
                "identifier": identifier,
                "timestamp": at,
            }
        )

    def manual_invoice(
        self, who: Customer, amounts: list[tuple[str, int]], *, days_until_due: int = 14
    ) -> Any:
        """A draft invoice sent by email, with one line per (description, cents)."""
        invoice = self.client.v1.invoices.create(
            {
                "customer": who.customer.id,
                "collection_method": "send_invoice",
                "days_until_due": days_until_due,
                "default_tax_rates": [self.tax_rate.id],
            }
        )
        for description, cents in amounts:
            self.client.v1.invoice_items.create(
                {
                    "customer": who.customer.id,
                    "invoice": invoice.id,
                    "amount": cents,
                    "currency": "usd",
                    "description": description,
                }
            )
        return self.client.v1.invoices.retrieve(invoice.id)

    def advance(self, seconds: int, timeout: float = 20.0) -> None:
        """Move the test clock and wait until Stripe has run what fell due."""
        target = int(self.clock.frozen_time) + seconds
        self.client.v1.test_helpers.test_clocks.advance(self.clock.id, {"frozen_time": target})
        deadline = time.monotonic() + timeout
        while True:
            clock = self.client.v1.test_helpers.test_clocks.retrieve(self.clock.id)
            if clock.status == "ready":
                self.clock = clock
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"test clock still {clock.status} after {timeout}s")
            time.sleep(0.02)


# Comparing ledgers ------------------------------------------------------------------------

_NOT_COMPARED = {"timestamp", "source"}


def invoice_histories(ledger: Ledger) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Every invoice's events, as (event type, payload without when it was
    recorded and from which source), by Stripe invoice id."""
    histories: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for drafted in ledger.events_of_topics([Invoice.Drafted.TOPIC]):
        events = ledger.history(drafted.originator_id)
        histories[drafted.stripe_id] = [
            (
                type(e).__name__,
                {k: v for k, v in e.__dict__.items() if k not in _NOT_COMPARED},
            )
            for e in events
        ]
    return histories


# Who recorded a fact, when, and whether Stripe replayed an answer differ between
# two runs of the same world by design; the facts must not. The inbox and the sync
# cursor hold how events reached the ledger, not facts of billing.
PROVENANCE = frozenset({"timestamp", "source", "originator_topic", "replayed", "answered_at"})
HOW_IT_ARRIVED = ("billtrail:StripeEvent", "billtrail:SyncCursor")


def facts(
    ledger: Ledger, *, skip: tuple[str, ...] = HOW_IT_ARRIVED
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Every aggregate's events in order: what was recorded, not who or when
    (events whose topic starts with one of `skip` left out)."""
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    position = None
    while True:
        notes = ledger.recorder.select_notifications(
            start=position, limit=500, inclusive_of_start=False
        )
        if not notes:
            return found
        for note in notes:
            position = note.id
            if note.topic.startswith(skip):
                continue
            event = ledger.mapper.to_domain_event(note)
            body = {k: v for k, v in vars(event).items() if k not in PROVENANCE}
            body.pop("originator_id")
            body.pop("originator_version")
            found.setdefault(str(note.originator_id), []).append((note.topic, body))


# Quiet moments ---------------------------------------------------------------------------


def settled(sandbox: RunningSandbox, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until every webhook delivery is delivered or given up (held and retried
    ones included); returns the deliveries."""
    return sandbox.control.wait_for_deliveries(
        lambda found: all(d["status"] != "pending" for d in found), timeout=timeout
    )


def drain(ledger: Ledger, client: stripe.StripeClient, passes: int = 10) -> None:
    """Process the inbox until nothing is deferred (Stripe answered every re-read),
    as the worker does at a quiet moment."""
    for _ in range(passes):
        if not process_pending(ledger, client).deferred:
            return
    raise AssertionError(f"events still waiting after {passes} passes")


# Faults ---------------------------------------------------------------------------------


class Crash(Exception):
    """A process dying between Stripe's answer and the ledger write."""


def crash_once(key_prefix: str) -> tuple[AfterCall, list[str]]:
    """An outbox `after_call` hook that raises the first time a request whose key
    starts with `key_prefix` has been answered; the list gets the keys it crashed on."""
    crashed: list[str] = []

    def hook(request: StripeRequest) -> None:
        if request.key.startswith(key_prefix) and not crashed:
            crashed.append(request.key)
            raise Crash(request.key)

    return hook, crashed


class FastRetries(stripe.RequestsClient):
    """The SDK's HTTP client, pausing 10 ms between its retries instead of 0.5 s
    or more (the retries themselves are the SDK's)."""

    def _sleep_time_seconds(self, num_retries: int) -> float:
        return 0.01
