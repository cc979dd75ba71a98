"""An admin's actions on an invoice (credit, void, void and regenerate at a
corrected rate, mark uncollectible), against the Stripe sandbox over HTTP: each
needs a reason, restates itself and asks before anything is sent, goes to Stripe
through the adapter with the admin as its actor, and the page then shows what the
ledger recorded of Stripe's answer. Refusals and Stripe failures are a message on
the invoice, never a 500."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import stripe
from flask import Flask
from flask.testing import FlaskClient

from adapters.stripe.outbound.invoice_pull import pull_invoices_from_stripe
from adapters.stripe.sandbox import RunningSandbox, start_sandbox
from adapters.stripe.sandbox.testing import FAST_RETRIES
from adapters.stripe.testing import FastRetries, LoopbackServer
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.invoices.domain import Status
from ledger.sources import Source
from ledger.usage.application import CallRow
from projections.runner import Runner
from web import create_app, shutdown

from .conftest import (
    ADMIN_EMAIL,
    OPERATOR,
    PASSWORD,
    TickingClock,
    World,
    csrf_token,
    log_in,
    screenshot,
)

ENTITY = "umbrella"
CUSTOMER_EMAIL = "ap@umbrella.example"
JULY = datetime(2026, 7, 1, tzinfo=UTC)


# Fixtures: the app wired to a Stripe sandbox, and open invoices in both ---------------


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with start_sandbox(seed="billtrail-web-actions", webhook_retry_delays=FAST_RETRIES) as running:
        yield running


@pytest.fixture
def stripe_client(sandbox: RunningSandbox) -> Iterator[stripe.StripeClient]:
    http = FastRetries(timeout=30)
    yield stripe.StripeClient(
        sandbox.api_key,
        base_addresses={"api": sandbox.url},
        max_network_retries=2,
        http_client=http,
    )
    http.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def stripe_app(
    ledger: Ledger, settings: Settings, clock: TickingClock, stripe_client: stripe.StripeClient
) -> Iterator[Flask]:
    made = create_app(ledger, stripe_client, settings, clock=clock, start_worker=False)
    made.testing = True
    yield made
    shutdown(made)


@dataclass
class StripeWorld:
    ledger: Ledger
    client: stripe.StripeClient
    sandbox: RunningSandbox
    numbers: list[str]  # open invoices, each billing 240 calls at 1.25 cents

    def stripe_id(self, number: str) -> str:
        found = self.ledger.find_invoice(number).stripe_id
        return found

    def posts(self) -> list[dict[str, Any]]:
        return [r for r in self.sandbox.control.requests() if r["method"] == "POST"]


def open_invoice(client: stripe.StripeClient, customer: str, price: str) -> None:
    """An invoice sent by email billing July's 240 calls, finalized (open)."""
    invoice = client.v1.invoices.create(
        {
            "customer": customer,
            "currency": "usd",
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "pending_invoice_items_behavior": "exclude",
        }
    )
    assert invoice.id is not None
    client.v1.invoice_items.create(
        {
            "customer": customer,
            "invoice": invoice.id,
            "currency": "usd",
            "description": "Calls in July",
            "quantity": 240,
            "pricing": {"price": price},
            "period": {
                "start": int(JULY.timestamp()),
                "end": int(datetime(2026, 8, 1, tzinfo=UTC).timestamp()),
            },
        }
    )
    client.v1.invoices.finalize_invoice(invoice.id, {"auto_advance": False})


@pytest.fixture
def stripe_world(
    ledger: Ledger,
    clock: TickingClock,
    stripe_client: stripe.StripeClient,
    sandbox: RunningSandbox,
) -> StripeWorld:
    """One entity billed 1.25 cents a call, 240 calls on 1 July, a Stripe customer
    with three open invoices for them (recorded in the ledger), an admin and the
    entity's customer login."""
    clock.now = datetime(2026, 8, 2, 9, 0, tzinfo=UTC)
    ledger.register_entity("Umbrella Corp", "company", OPERATOR, entity_id=ENTITY, timezone="UTC")
    ledger.set_rate(ENTITY, Decimal("0.0125"), "usd", JULY.date(), "contract", OPERATOR)
    start = JULY + timedelta(hours=10)
    calls = [
        CallRow(i + 1, f"{ENTITY}-{i}", ENTITY, start + timedelta(seconds=30 * i), 60)
        for i in range(240)
    ]
    ledger.record_calls(calls, Source("import_file", "july.csv"))
    customer = stripe_client.v1.customers.create({"name": "Umbrella Corp"})
    ledger.link_stripe_customer(ENTITY, customer.id, OPERATOR)
    # The rate's price in Stripe: what makes the invoices' lines usage lines.
    product = stripe_client.v1.products.create({"name": "Calls handled"})
    price = stripe_client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount_decimal": Decimal("1.25")}
    )
    ledger.link_stripe_price(ENTITY, price.id, OPERATOR, version=1)
    for _ in range(3):
        open_invoice(stripe_client, customer.id, price.id)
    pull_invoices_from_stripe(stripe_client, ledger, Source("sync_run", "web-actions"))
    ledger.add_user(ADMIN_EMAIL, "admin", PASSWORD, OPERATOR)
    ledger.add_user(CUSTOMER_EMAIL, "customer", PASSWORD, OPERATOR, entity_id=ENTITY)
    Runner(ledger).catch_up()
    numbers = sorted(i.number for i in ledger.invoices() if i.number)
    assert len(numbers) == 3
    for number in numbers:
        invoice = ledger.find_invoice(number)
        assert invoice.status is Status.OPEN
        assert [(li.kind, li.quantity) for li in invoice.lines] == [("usage", 240)]
    return StripeWorld(ledger, stripe_client, sandbox, numbers)


@pytest.fixture
def boss(stripe_app: Flask, stripe_world: StripeWorld) -> FlaskClient:
    return log_in(stripe_app.test_client(), ADMIN_EMAIL)


# Helpers -------------------------------------------------------------------------------


def act(
    client: FlaskClient, number: str, action: str, confirmed: bool = True, **fields: str
) -> Any:
    """The action's form posted as the detail page has it; with `confirm`, then the
    confirmation page's form too. Returns the last response."""
    token = csrf_token(client, f"/admin/invoices/{number}")
    path = f"/admin/invoices/{number}/actions/{action}"
    first = client.post(path, data={**fields, "csrf_token": token})
    if not confirmed or first.status_code != 200:
        return first
    page = first.get_data(as_text=True)
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page))
    assert hidden["confirm"] == "yes"
    return client.post(path, data=hidden)


def flashes(client: FlaskClient, path: str) -> str:
    return client.get(path).get_data(as_text=True)


# The actions -----------------------------------------------------------------------------


def test_void_restates_and_asks_before_anything_is_sent(
    boss: FlaskClient, stripe_world: StripeWorld
) -> None:
    number = stripe_world.numbers[0]
    detail = boss.get(f"/admin/invoices/{number}").get_data(as_text=True)
    for action in ("credit", "void", "regenerate", "uncollectible"):
        assert f'action="/admin/invoices/{number}/actions/{action}"' in detail
    before = len(stripe_world.posts())
    asked = act(boss, number, "void", confirmed=False, reason="sent to the wrong company")
    assert asked.status_code == 200
    page = asked.get_data(as_text=True)
    assert f"Void invoice {number} (Umbrella Corp, $3.00) in Stripe" in page
    assert "sent to the wrong company" in page
    assert 'name="confirm" value="yes"' in page
    assert len(stripe_world.posts()) == before
    assert stripe_world.ledger.find_invoice(number).status is Status.OPEN


def test_void_goes_to_stripe_and_shows_what_it_reports(
    boss: FlaskClient, stripe_world: StripeWorld
) -> None:
    number = stripe_world.numbers[0]
    stripe_id = stripe_world.stripe_id(number)
    done = act(boss, number, "void", reason="sent to the wrong company")
    assert done.status_code == 302
    assert done.headers["Location"].startswith(f"/admin/invoices/{number}/actions/result?")
    page = boss.get(done.headers["Location"]).get_data(as_text=True)
    assert f"Void invoice on {number} is done." in page
    assert "Stripe reports it done" in page
    assert '<span class="status status-void">Void</span>' in page
    assert f"by</dt><dd>{ADMIN_EMAIL}".lower() in page.lower()
    assert stripe_world.client.v1.invoices.retrieve(stripe_id).status == "void"
    correction = stripe_world.ledger.correction(f"void/{stripe_id}")
    assert correction is not None
    assert (correction.actor, correction.reason) == (ADMIN_EMAIL, "sent to the wrong company")


def test_a_credit_becomes_a_credit_note(boss: FlaskClient, stripe_world: StripeWorld) -> None:
    number = stripe_world.numbers[1]
    done = act(boss, number, "credit", amount="0.50", reason="goodwill")
    page = boss.get(done.headers["Location"]).get_data(as_text=True)
    assert "Stripe reports it done" in page
    assert re.search(r'id="credit-note">\S+ · \$0\.50', page)
    invoice = stripe_world.ledger.find_invoice(number)
    assert invoice.credited == Decimal("0.50")
    [note] = invoice.credit_notes.values()
    assert stripe_world.client.v1.credit_notes.retrieve(note.credit_note_id).total == 50


def test_void_and_regenerate_at_the_corrected_rate(
    boss: FlaskClient, stripe_world: StripeWorld
) -> None:
    number = stripe_world.numbers[2]
    asked = act(
        boss,
        number,
        "regenerate",
        confirmed=False,
        unit_price="0.011",
        effective_from="2026-07-01",
        reason="volume discount",
    )
    assert "price per call to $0.011 from 2026-07-01, void invoice" in asked.get_data(as_text=True)
    done = act(
        boss,
        number,
        "regenerate",
        unit_price="0.011",
        effective_from="2026-07-01",
        reason="volume discount",
    )
    page = boss.get(done.headers["Location"]).get_data(as_text=True)
    assert "Stripe reports it done" in page
    ledger = stripe_world.ledger
    old = ledger.find_invoice(number)
    assert old.status is Status.VOID
    assert old.replaced_by is not None
    new = ledger.invoice(old.replaced_by)
    # 240 calls at 1.1 cents.
    assert (new.status, new.total) == (Status.OPEN, Decimal("2.64"))
    assert re.search(r'id="replacement"><a href="/admin/invoices/[^"]+">[^<]+</a> <span', page)
    assert "$2.64" in page
    assert [v.unit_price for v in ledger.rate(ENTITY).versions][-1] == Decimal("0.011")


def test_mark_uncollectible(boss: FlaskClient, stripe_world: StripeWorld) -> None:
    number = stripe_world.numbers[0]
    done = act(boss, number, "uncollectible", reason="customer went bust")
    page = boss.get(done.headers["Location"]).get_data(as_text=True)
    assert '<span class="status status-uncollectible">Uncollectible</span>' in page
    stripe_id = stripe_world.stripe_id(number)
    assert stripe_world.client.v1.invoices.retrieve(stripe_id).status == "uncollectible"
    # Then only voiding (or regenerating) is left to do with it, once the read
    # models have caught up (in process on SQLite; PostgreSQL runs them apart).
    Runner(stripe_world.ledger).catch_up()
    detail = boss.get(f"/admin/invoices/{number}").get_data(as_text=True)
    assert f"/admin/invoices/{number}/actions/void" in detail
    assert f"/admin/invoices/{number}/actions/uncollectible" not in detail
    assert f"/admin/invoices/{number}/actions/credit" not in detail


# Refusals and failures ---------------------------------------------------------------------


def test_a_refused_action_is_a_message_on_the_invoice(
    boss: FlaskClient, stripe_world: StripeWorld
) -> None:
    number = stripe_world.numbers[0]
    act(boss, number, "void", reason="duplicate")
    posts = len(stripe_world.posts())
    refused = act(boss, number, "credit", amount="1.00", reason="too late")
    assert refused.status_code == 302
    assert refused.headers["Location"] == f"/admin/invoices/{number}"
    page = flashes(boss, refused.headers["Location"])
    assert f"Issue credit on {number} was not done" in page
    assert "only an open or paid invoice takes a credit note" in page
    assert len(stripe_world.posts()) == posts
    assert stripe_world.ledger.find_invoice(number).credit_notes == {}


def test_stripe_refusing_is_a_message_and_the_result_waits_for_stripe(
    boss: FlaskClient, stripe_world: StripeWorld
) -> None:
    number = stripe_world.numbers[0]
    stripe_id = stripe_world.stripe_id(number)
    # Someone voided it in the Stripe dashboard; the ledger has not heard yet.
    stripe_world.client.v1.invoices.void_invoice(stripe_id)
    failed = act(boss, number, "uncollectible", reason="customer went bust")
    assert failed.status_code == 302
    page = flashes(boss, failed.headers["Location"])
    assert f"Mark uncollectible on {number} was not done" in page
    assert "Stripe refused invoices.mark_uncollectible" in page
    assert stripe_world.ledger.find_invoice(number).status is Status.OPEN
    waiting = boss.get(f"/admin/invoices/{number}/actions/result?correction=write-off/{stripe_id}")
    assert waiting.status_code == 200
    text = waiting.get_data(as_text=True)
    assert "Waiting for Stripe" in text
    assert "(not finished)" in text


def test_stripe_not_answering_is_a_message(boss: FlaskClient, stripe_world: StripeWorld) -> None:
    number = stripe_world.numbers[1]
    stripe_id = stripe_world.stripe_id(number)
    stripe_world.sandbox.control.fail_next(
        500, count=10, path=f"/v1/invoices/{stripe_id}/mark_uncollectible"
    )
    failed = act(boss, number, "uncollectible", reason="bust")
    page = flashes(boss, failed.headers["Location"])
    assert f"Mark uncollectible on {number} was not done" in page
    assert stripe_world.ledger.find_invoice(number).status is Status.OPEN


# Bad input, CSRF, roles, no Stripe ----------------------------------------------------------


BAD_INPUT = [
    ("void", {}),
    ("void", {"reason": "   "}),
    ("void", {"reason": "x" * 501}),
    ("void", {"reason": "ok", "confirm": "maybe"}),
    ("credit", {"reason": "ok"}),
    ("credit", {"reason": "ok", "amount": "abc"}),
    ("credit", {"reason": "ok", "amount": "-1"}),
    ("credit", {"reason": "ok", "amount": "0"}),
    ("credit", {"reason": "ok", "amount": "NaN"}),
    ("credit", {"reason": "ok", "amount": "1e9"}),
    ("regenerate", {"reason": "ok", "unit_price": "0.01"}),
    ("regenerate", {"reason": "ok", "unit_price": "0.01", "effective_from": "July"}),
    ("regenerate", {"reason": "ok", "unit_price": "", "effective_from": "2026-07-01"}),
]


def test_bad_action_input_is_a_400_page_and_nothing_is_sent(
    boss: FlaskClient, stripe_world: StripeWorld
) -> None:
    number = stripe_world.numbers[0]
    before = len(stripe_world.posts())
    for action, fields in BAD_INPUT:
        for confirmed in ("", "yes"):
            response = act(
                boss, number, action, confirmed=False, **{"confirm": confirmed, **fields}
            )
            assert response.status_code == 400, (action, fields)
            assert response.mimetype == "text/html"
            assert "Bad request" in response.get_data(as_text=True)
    assert len(stripe_world.posts()) == before
    assert stripe_world.ledger.find_invoice(number).status is Status.OPEN


def test_unknown_actions_and_invoices_are_404(boss: FlaskClient, stripe_world: StripeWorld) -> None:
    number = stripe_world.numbers[0]
    token = csrf_token(boss, f"/admin/invoices/{number}")
    data = {"reason": "r", "csrf_token": token}
    assert boss.post(f"/admin/invoices/{number}/actions/refund", data=data).status_code == 404
    assert boss.post("/admin/invoices/NOPE-1/actions/void", data=data).status_code == 404
    result = f"/admin/invoices/{number}/actions/result"
    assert boss.get(result).status_code == 400
    assert boss.get(f"{result}?correction=void/in_nope").status_code == 404


def test_an_action_without_the_csrf_token_is_refused(
    boss: FlaskClient, stripe_world: StripeWorld
) -> None:
    number = stripe_world.numbers[0]
    response = boss.post(
        f"/admin/invoices/{number}/actions/void", data={"reason": "r", "confirm": "yes"}
    )
    assert response.status_code == 400
    assert "The form expired or was forged" in response.get_data(as_text=True)
    assert stripe_world.ledger.find_invoice(number).status is Status.OPEN


def test_only_admins_act_on_invoices(stripe_app: Flask, stripe_world: StripeWorld) -> None:
    number = stripe_world.numbers[0]
    customer = log_in(stripe_app.test_client(), CUSTOMER_EMAIL)
    token = csrf_token(customer, "/billing")
    data = {"reason": "r", "confirm": "yes", "csrf_token": token}
    assert customer.post(f"/admin/invoices/{number}/actions/void", data=data).status_code == 404
    anonymous = stripe_app.test_client().post(
        f"/admin/invoices/{number}/actions/void", data={"reason": "r"}
    )
    assert anonymous.status_code in (302, 400)  # the login page, or no CSRF token first
    assert stripe_world.ledger.find_invoice(number).status is Status.OPEN


def test_without_stripe_the_actions_say_so(
    admin: FlaskClient, world: World, ledger: Ledger
) -> None:
    number = world.one("acme", "open")
    detail = admin.get(f"/admin/invoices/{number}").get_data(as_text=True)
    assert "Stripe is not configured" in detail
    token = csrf_token(admin, f"/admin/invoices/{number}")
    response = admin.post(
        f"/admin/invoices/{number}/actions/void", data={"reason": "r", "csrf_token": token}
    )
    assert response.status_code == 503
    assert "Stripe is not configured" in response.get_data(as_text=True)
    assert ledger.find_invoice(number).status is Status.OPEN


# In the browser ---------------------------------------------------------------------------


@pytest.fixture
def stripe_page(chromium: Any, stripe_app: Flask, stripe_world: StripeWorld) -> Iterator[Any]:
    """A browser page on the app wired to the sandbox, served on loopback."""
    with LoopbackServer(stripe_app) as server:
        context = chromium.new_context(base_url=server.url)
        context.set_default_timeout(15_000)
        try:
            yield context.new_page()
        finally:
            context.close()


@pytest.mark.browser
def test_an_admin_voids_an_invoice_in_the_browser(
    stripe_page: Any, stripe_world: StripeWorld
) -> None:
    page = stripe_page
    number = stripe_world.numbers[0]
    page.goto("/login")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"/admin/invoices/{number}")
    # The browser will not send it without a reason.
    page.get_by_role("button", name="Void invoice…").click()
    assert page.url.endswith(f"/admin/invoices/{number}")
    page.locator("#void-reason").fill("sent to the wrong company")
    page.get_by_role("button", name="Void invoice…").click()
    assert page.get_by_role("heading", name="Void invoice: please confirm").is_visible()
    assert stripe_world.ledger.find_invoice(number).status is Status.OPEN
    page.get_by_role("button", name="Yes: void invoice").click()
    page.wait_for_url("**/actions/result?**")
    assert "Stripe reports it done" in page.locator("#action-state").inner_text()
    assert page.locator("#invoice-status").inner_text().strip().endswith("Void")
    screenshot(page, "invoice-action")
    stripe_id = stripe_world.stripe_id(number)
    assert stripe_world.client.v1.invoices.retrieve(stripe_id).status == "void"
