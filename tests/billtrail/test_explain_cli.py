"""`billtrail explain` end to end on both backends: the world is made with the
operator's commands (entities add, rates set, calls import), the usage pushes and
the invoice Stripe issued are recorded through the ledger's commands (what the
adapter calls), and explain reads it back as a statement or as the documented JSON.
Exit 0 clean, 1 flagged, 2 for a bad INVOICE or --as-of."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from billtrail import bootstrap
from billtrail.explain_schema import SCHEMA_VERSION, ExplanationSchema
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.invoices.application import CreditNoteSnapshot, InvoiceSnapshot
from ledger.invoices.domain import Totals
from ledger.money import Money, line_amount
from ledger.sources import Source
from ledger.values import Line, Period

D = Decimal
PERIOD = Period(date(2026, 1, 1), date(2026, 1, 8))
RATE = D("0.0125")
HEADER = "call_id,entity_id,started_at,duration_seconds\n"
RunCLI = Any


def one_clear_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def ledger(run_cli: RunCLI) -> Iterator[Ledger]:
    """The ledger the CLI uses (the environment run_cli set), for what only the
    Stripe adapter records: pushes and invoices."""
    app = bootstrap.ledger(Settings.from_env())
    yield app
    app.close()


def import_calls(run_cli: RunCLI, tmp_path: Path, per_day: dict[date, int], tag: str) -> None:
    rows = [
        f"{tag}-{day}-{i},acme,{day}T{10 + i % 10:02d}:{i % 60:02d}:00+01:00,{30 + i}\n"
        for day, n in per_day.items()
        for i in range(n)
    ]
    path = tmp_path / f"calls-{tag}.csv"
    path.write_text(HEADER + "".join(rows))
    r = run_cli("calls", "import", str(path), "--json")
    assert r.code == 0, r.err


def push_all(ledger: Ledger, tag: str = "1") -> None:
    for day in PERIOD.days():
        usage = ledger.usage("acme", day)
        if usage is None or usage.calls == usage.reported_quantity:
            continue
        identifier = f"acme-{day}-{tag}"
        ledger.report_usage(
            "acme",
            day,
            usage.calls - usage.reported_quantity,
            identifier,
            ledger.clock(),
            Source("scheduler_run", f"usage-push/{identifier}"),
        )


def stripe_invoice(ledger: Ledger, unit_price: Decimal = RATE) -> InvoiceSnapshot:
    """The invoice Stripe issues: the meter's sum at the price, a fee, 20% tax."""
    quantity = sum(
        (u.reported_quantity for d in PERIOD.days() if (u := ledger.usage("acme", d))), 0
    )
    amount = line_amount(quantity, Money(unit_price, "eur")).amount
    lines = [
        Line("il_u", "usage", "Calls", D(quantity), unit_price, amount, "price_u", PERIOD),
        Line("il_f", "fee", "Platform fee", D(1), D("20.00"), D("20.00"), "price_f"),
    ]
    tax = sum((line_amount(1, Money(x.amount * D("0.2"), "eur")).amount for x in lines), D(0))
    lines.append(Line("tax:txr_1", "tax", "VAT 20%", D(1), None, tax))
    subtotal = sum((x.amount for x in lines if x.kind != "tax"), D(0))
    snap = InvoiceSnapshot(
        stripe_id="in_1",
        entity_id="acme",
        currency="eur",
        period=PERIOD,
        status="open",
        lines=lines,
        totals=Totals(subtotal, tax, subtotal + tax),
        number="ACME-0001",
        issue_date=PERIOD.end,
        due_date=PERIOD.end + timedelta(days=14),
    )
    ledger.observe_invoice(snap, Source("stripe_event", "evt_issued"))
    return snap


@pytest.fixture
def world(run_cli: RunCLI, ledger: Ledger, tmp_path: Path) -> Ledger:
    r = run_cli(
        "entities", "add", "Acme Corp", "--kind", "company", "--id", "acme",
        "--timezone", "Europe/Paris",
    )  # fmt: skip
    assert r.code == 0, r.err
    ledger.link_stripe_customer("acme", "cus_acme", Source("admin", "setup", "ana"))
    r = run_cli(
        "rates", "set", "acme", "--per-call", "0.0125", "--currency", "EUR",
        "--effective-from", "2026-01-01", "--reason", "signed contract",
    )  # fmt: skip
    assert r.code == 0, r.err
    import_calls(run_cli, tmp_path, {d: 10 + i for i, d in enumerate(PERIOD.days())}, "a")
    push_all(ledger)
    return ledger


def test_a_clean_invoice_exits_0_with_a_statement(run_cli: RunCLI, world: Ledger) -> None:
    stripe_invoice(world)
    r = run_cli("explain", "ACME-0001")
    assert r.code == 0, r.out + r.err
    assert "Invoice ACME-0001 (in_1) for Acme Corp" in r.out
    assert "Period      2026-01-01 to 2026-01-07 (days in Europe/Paris)" in r.out
    assert "0.0125 EUR (v1)" in r.out
    assert '"signed contract"' in r.out
    assert "Calls (usage)" in r.out
    assert "= 91 x 0.0125 EUR (ok)" in r.out
    assert "No mismatch found" in r.out
    assert r.err == ""


def test_json_follows_the_documented_schema(run_cli: RunCLI, world: Ledger) -> None:
    stripe_invoice(world)
    r = run_cli("explain", "in_1", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.last_line)
    assert ExplanationSchema().validate(doc) == {}
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["invoice"] == {
        "number": "ACME-0001",
        "stripe_id": "in_1",
        "entity_id": "acme",
        "period_start": "2026-01-01",
        "period_end": "2026-01-08",
        "status": "open",
        "currency": "eur",
        "issue_date": "2026-01-08",
        "due_date": "2026-01-22",
        "subtotal": "21.14",
        "tax": "4.23",
        "total": "25.37",
        "credited": "0",
        "amount_paid": "0",
        "replaces": None,
        "replaced_by": None,
    }
    usage = doc["lines"][0]
    assert {k: usage[k] for k in ("kind", "quantity", "unit_amount", "amount")} == {
        "kind": "usage",
        "quantity": "91",
        "unit_amount": "0.0125",
        "amount": "1.14",
    }
    assert [x["kind"] for x in doc["lines"]] == ["usage", "fee", "tax"]
    day = doc["days"][0]
    assert {k: day[k] for k in ("date", "calls", "duplicates", "late_calls", "rate")} == {
        "date": "2026-01-01",
        "calls": 10,
        "duplicates": 0,
        "late_calls": 0,
        "rate": "0.0125",
    }
    assert day["rate_recorded_at"].endswith("+00:00")
    assert len(doc["usage_pushed"]) == 7
    assert doc["usage_pushed"][0]["identifier"] == "acme-2026-01-01-1"
    assert [t["event"] for t in doc["timeline"]] == ["drafted", "issued"]
    assert doc["timeline"][1]["source"] == {
        "kind": "stripe_event",
        "id": "evt_issued",
        "actor": None,
    }
    assert doc["flags"] == []
    assert doc["ok"] is True


def test_late_calls_exit_1_and_as_of_the_issue_exits_0(
    run_cli: RunCLI, world: Ledger, tmp_path: Path
) -> None:
    stripe_invoice(world)
    issued_at = json.loads(run_cli("explain", "in_1", "--json").last_line)["issued_at"]
    import_calls(run_cli, tmp_path, {date(2026, 1, 3): 4}, "late")
    r = run_cli("explain", "ACME-0001")
    assert r.code == 1
    assert "USAGE_VS_CALLS_NOW" in r.out
    assert "4 calls arrived after the invoice was issued" in r.out
    doc = json.loads(run_cli("explain", "ACME-0001", "--json").last_line)
    assert [f["code"] for f in doc["flags"]] == ["USAGE_VS_CALLS_NOW"]
    assert next(d for d in doc["days"] if d["date"] == "2026-01-03")["late_calls"] == 4
    then = run_cli("explain", "ACME-0001", "--as-of", issued_at)
    assert then.code == 0, then.out


def test_a_retroactive_rate_correction_is_flagged_by_the_cli(
    run_cli: RunCLI, world: Ledger
) -> None:
    stripe_invoice(world)
    r = run_cli(
        "rates", "set", "acme", "--per-call", "0.0100", "--currency", "EUR",
        "--effective-from", "2026-01-01", "--reason", "contract typo",
    )  # fmt: skip
    assert r.code == 0, r.err
    r = run_cli("explain", "ACME-0001")
    assert r.code == 1
    assert "RATE_CORRECTED_AFTER_ISSUE" in r.out
    assert "corrected after issue (was 0.0125 EUR)" in r.out
    assert "(recorded after the invoice was issued)" in r.out


def test_a_wrong_unit_price_and_a_duplicate_push_are_flagged(
    run_cli: RunCLI, world: Ledger
) -> None:
    day = PERIOD.days()[1]
    usage = world.usage("acme", day)
    assert usage is not None
    world.report_usage(
        "acme", day, usage.calls, "acme-dup", world.clock(), Source("scheduler_run", "dup")
    )
    stripe_invoice(world, unit_price=D("0.0150"))
    doc = json.loads(run_cli("explain", "ACME-0001", "--json").last_line)
    assert {f["code"] for f in doc["flags"]} == {
        "RATE_MISMATCH",
        "DUPLICATE_PUSH",
        "USAGE_VS_CALLS_THEN",
    }
    dup = next(f for f in doc["flags"] if f["code"] == "DUPLICATE_PUSH")
    assert dup["days"] == [str(day)]
    assert run_cli("explain", "ACME-0001").code == 1


def test_a_credit_note_is_listed_with_the_total_after_it(run_cli: RunCLI, world: Ledger) -> None:
    snap = stripe_invoice(world)
    note = CreditNoteSnapshot("cn_1", "ACME-0001-CN-01", D("5.00"), "duplicate", "goodwill")
    world.observe_invoice(
        InvoiceSnapshot(**{**snap.__dict__, "credit_notes": [note]}),
        Source("stripe_event", "evt_credit"),
    )
    r = run_cli("explain", "ACME-0001")
    assert r.code == 0, r.out
    assert "Credit note ACME-0001-CN-01: duplicate" in r.out
    assert "-5.00 EUR" in r.out
    assert "Total after credit notes" in r.out
    doc = json.loads(run_cli("explain", "ACME-0001", "--json").last_line)
    assert doc["credit_notes"][0]["amount"] == "5.00"
    assert doc["net_total"] == "20.37"


def test_runs_of_identical_days_are_one_row_of_the_statement(
    run_cli: RunCLI, ledger: Ledger, tmp_path: Path
) -> None:
    r = run_cli(
        "entities", "add", "Acme Corp", "--kind", "company", "--id", "acme",
        "--timezone", "Europe/Paris",
    )  # fmt: skip
    assert r.code == 0, r.err
    r = run_cli(
        "rates", "set", "acme", "--per-call", "0.0125", "--currency", "EUR",
        "--effective-from", "2026-01-01",
    )  # fmt: skip
    assert r.code == 0, r.err
    import_calls(run_cli, tmp_path, {date(2026, 1, 1): 5, date(2026, 1, 2): 5}, "a")
    push_all(ledger)
    stripe_invoice(ledger)
    r = run_cli("explain", "ACME-0001")
    assert r.code == 0, r.out
    rows = [line for line in r.out.splitlines() if line.startswith("  2026-01-0")]
    assert rows[0].startswith("  2026-01-01 to 2026-01-02 (each)")
    assert rows[1].startswith("  2026-01-03 to 2026-01-07 (each)")
    assert " 0 " in rows[1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("explain", "NOPE-404"), "no invoice 'NOPE-404'"),
        (("explain", "in_missing"), "no invoice 'in_missing'"),
        (("explain", "ACME-0001", "--as-of", "yesterday"), "--as-of must be an ISO 8601 time"),
        (("explain", "ACME-0001", "--as-of", "2020-01-01"), "first recorded at"),
    ],
)
def test_a_bad_invoice_or_instant_is_one_line_and_exit_2(
    run_cli: RunCLI, world: Ledger, args: tuple[str, ...], needle: str
) -> None:
    stripe_invoice(world)
    r = run_cli(*args)
    assert r.code == 2
    assert needle in one_clear_line(r.err)


# End to end through the Stripe sandbox ------------------------------------------------
#
# The operator's commands make the entity, its rate and fee, and import the calls;
# the Stripe adapter pushes customer, prices, subscription and usage to the sandbox
# (on a test clock from 1 July), Stripe bills the period, and the adapter pulls the
# invoice back into the ledger. Then `billtrail explain` reads it.

FIRST_DAY = date(2026, 7, 1)
ZONE = "America/Chicago"  # Stripe's monthly period from 1 July local is July, whole


@dataclass
class StripeWorld:
    run_cli: RunCLI
    ledger: Ledger
    client: Any
    clocks: Any
    tmp_path: Path
    july_end: datetime  # the end of the subscription's first period, as Stripe has it
    runs: int = 0

    def outbox(self) -> Any:
        from adapters.stripe.outbound.outbox import Outbox

        self.runs += 1
        return Outbox(self.ledger, self.client, Source("cli", f"push-{self.runs}", "ops"))

    def import_calls(self, per_day: dict[date, int], tag: str) -> None:
        rows = [
            f"{tag}-{day}-{i},beta,{day}T{9 + i % 8:02d}:{i % 60:02d}:00-05:00,{30 + i}\n"
            for day, n in per_day.items()
            for i in range(n)
        ]
        path = self.tmp_path / f"calls-{tag}.csv"
        path.write_text(HEADER + "".join(rows))
        r = self.run_cli("calls", "import", str(path))
        assert r.code == 0, r.err

    def bill_july(self, before_finalizing: Callable[[], object] = lambda: None) -> str:
        """Usage pushed after the period, Stripe's renewal invoice finalized and
        charged, every invoice pulled into the ledger; the one billing usage.
        `before_finalizing` runs while the invoice is still a draft."""
        from adapters.stripe.outbound.invoice_pull import pull_invoices_from_stripe
        from adapters.stripe.outbound.usage import push_usage

        end = self.july_end
        self.clocks.advance(end + timedelta(minutes=30))
        july = [FIRST_DAY + timedelta(days=i) for i in range(31)]
        push_usage(self.outbox(), days=july)
        before_finalizing()
        self.clocks.advance(end + timedelta(hours=2))
        pull_invoices_from_stripe(self.client, self.ledger, Source("sync_run", "pull"))
        return self.usage_invoice()

    def usage_invoice(self) -> str:
        [invoice] = [i for i in self.ledger.invoices() if any(x.kind == "usage" for x in i.lines)]
        assert invoice.number is not None
        return invoice.number

    def pull(self) -> None:
        from adapters.stripe.outbound.invoice_pull import pull_invoices_from_stripe

        self.runs += 1
        pull_invoices_from_stripe(self.client, self.ledger, Source("sync_run", f"pull-{self.runs}"))


@pytest.fixture
def stripe_world(run_cli: RunCLI, ledger: Ledger, tmp_path: Path) -> Iterator[StripeWorld]:
    from zoneinfo import ZoneInfo

    from adapters.stripe.client import close_client, make_client
    from adapters.stripe.outbound.clocks import EntityClocks
    from adapters.stripe.outbound.customers import push_customers
    from adapters.stripe.outbound.outbox import Outbox
    from adapters.stripe.outbound.push import push_all
    from adapters.stripe.outbound.subscriptions import subscription_of
    from adapters.stripe.sandbox import start_sandbox
    from adapters.stripe.sandbox.testing import FAST_RETRIES

    r = run_cli(
        "entities", "add", "Beta Org", "--kind", "organization", "--id", "beta",
        "--timezone", ZONE, "--email", "billing@beta.example",
    )  # fmt: skip
    assert r.code == 0, r.err
    r = run_cli(
        "rates", "set", "beta", "--per-call", "0.0125", "--currency", "USD",
        "--effective-from", str(FIRST_DAY), "--reason", "signed contract",
    )  # fmt: skip
    assert r.code == 0, r.err
    ledger.add_fixed_fee(
        "beta", "platform", "monthly_minimum", "Platform fee", D("49.00"), FIRST_DAY,
        Source("admin", "setup", "ana"),
    )  # fmt: skip
    with start_sandbox(seed="billtrail-explain", webhook_retry_delays=FAST_RETRIES) as sandbox:
        client = make_client(sandbox.api_key, sandbox.url)
        try:
            clocks = EntityClocks.create(client, {"beta": ZoneInfo(ZONE)}, FIRST_DAY)
            # The customer first, then its card (what the customer does in Stripe),
            # then prices and the subscription, whose first invoice is charged at once.
            outbox = Outbox(ledger, client, Source("cli", "push", "ops"))
            push_customers(outbox, test_clocks=clocks.clocks)
            customer = ledger.entity("beta").stripe_customer_id
            pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
            client.v1.customers.update(
                customer, {"invoice_settings": {"default_payment_method": pm.id}}
            )
            push_all(outbox, test_clocks=clocks.clocks)
            subscription = client.v1.subscriptions.retrieve(subscription_of(outbox, "beta"))
            end = datetime.fromtimestamp(subscription.items.data[0].current_period_end, UTC)
            world = StripeWorld(run_cli, ledger, client, clocks, tmp_path, end)
            world.import_calls({FIRST_DAY + timedelta(days=i): 20 + i for i in range(31)}, "jul")
            yield world
        finally:
            close_client(client)


def explain_json(run_cli: RunCLI, *args: str) -> dict[str, Any]:
    r = run_cli("explain", *args, "--json")
    doc: dict[str, Any] = json.loads(r.last_line)
    assert r.code == (0 if doc["ok"] else 1)
    return doc


def codes(doc: dict[str, Any]) -> set[str]:
    return {f["code"] for f in doc["flags"]}


def test_through_stripe_a_clean_period_then_late_calls_a_correction_and_a_credit_note(
    stripe_world: StripeWorld, run_cli: RunCLI
) -> None:
    number = stripe_world.bill_july()
    clean = run_cli("explain", number)
    assert clean.code == 0, clean.out
    doc = explain_json(run_cli, number)
    assert doc["flags"] == []
    usage = next(x for x in doc["lines"] if x["kind"] == "usage")
    assert usage["quantity"] == str(sum(20 + i for i in range(31)))
    assert usage["unit_amount"] == "0.0125"
    assert [t["event"] for t in doc["timeline"]][-1] == "paid"
    assert doc["entity"]["stripe_customer_id"] is not None
    issued_at = doc["issued_at"]

    stripe_world.import_calls({date(2026, 7, 9): 3}, "late")
    assert codes(explain_json(run_cli, number)) == {"USAGE_VS_CALLS_NOW"}

    r = run_cli(
        "rates", "set", "beta", "--per-call", "0.0100", "--currency", "USD",
        "--effective-from", str(FIRST_DAY), "--reason", "contract typo",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert codes(explain_json(run_cli, number)) == {
        "USAGE_VS_CALLS_NOW",
        "RATE_CORRECTED_AFTER_ISSUE",
    }

    invoice_id = doc["invoice"]["stripe_id"]
    stripe_world.client.v1.credit_notes.create(
        {"invoice": invoice_id, "amount": 500, "reason": "order_change", "memo": "rate typo"}
    )
    stripe_world.pull()
    doc = explain_json(run_cli, number)
    [note] = doc["credit_notes"]
    assert (note["amount"], note["reason"]) == ("5.00", "order_change")
    assert doc["net_total"] == str(D(doc["invoice"]["total"]) - D("5.00"))
    assert codes(doc) == {"USAGE_VS_CALLS_NOW", "RATE_CORRECTED_AFTER_ISSUE"}

    # As of the moment it was issued, the invoice was right.
    then = run_cli("explain", number, "--as-of", issued_at)
    assert then.code == 0, then.out


def test_through_stripe_a_mid_period_price_and_a_duplicate_push_are_flagged(
    stripe_world: StripeWorld, run_cli: RunCLI
) -> None:
    from zoneinfo import ZoneInfo

    from adapters.stripe.outbound.catalog import METER_EVENT_NAME, push_prices
    from adapters.stripe.outbound.usage import meter_timestamp

    # A new price from 15 July, recorded during the period: Stripe keeps billing the
    # subscription's price for every day (the adapter cannot swap it mid-period).
    r = run_cli(
        "rates", "set", "beta", "--per-call", "0.0150", "--currency", "USD",
        "--effective-from", "2026-07-15", "--reason", "index",
    )  # fmt: skip
    assert r.code == 0, r.err
    push_prices(stripe_world.outbox())
    # A day's usage sent twice: a second meter event beside the pushed one, recorded.
    # A day's usage sent twice: after the adapter pushed it, someone resends it by
    # hand (its own identifier), and records it, while the invoice is a draft.
    day = date(2026, 7, 4)

    def resend() -> None:
        customer = stripe_world.ledger.entity("beta").stripe_customer_id
        stripe_world.client.v1.billing.meter_events.create(
            {
                "event_name": METER_EVENT_NAME,
                "identifier": "manual-resend-0704",
                "timestamp": meter_timestamp(day, ZoneInfo(ZONE)),
                "payload": {"stripe_customer_id": customer, "value": "23"},
            }
        )
        stripe_world.ledger.report_usage(
            "beta", day, 23, "manual-resend-0704", stripe_world.ledger.clock(),
            Source("admin", "manual-resend", "ana"),
        )  # fmt: skip

    number = stripe_world.bill_july(before_finalizing=resend)
    doc = explain_json(run_cli, number)
    assert codes(doc) == {"RATE_MISMATCH", "DUPLICATE_PUSH", "USAGE_VS_CALLS_THEN"}
    mismatch = next(f for f in doc["flags"] if f["code"] == "RATE_MISMATCH")
    assert mismatch["days"][0] == "2026-07-15"
    assert mismatch["days"][-1] == "2026-07-31"
    dup = next(f for f in doc["flags"] if f["code"] == "DUPLICATE_PUSH")
    assert dup["days"] == ["2026-07-04"]
    assert "manual-resend-0704" in dup["message"]
