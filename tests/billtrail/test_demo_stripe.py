"""`billtrail demo` with Stripe: the sandbox in process bills three periods, and
the ledger ends up holding every invoice Stripe has, in the same state, with its
history: payments, failures, a void and its replacement, a write-off, a credit
note with its evidence, an invoice past due; usage pushed for every day; the
seal intact. Stripe is compared after the demo through the sandbox state it
saved (`billtrail stripe-sandbox --state`)."""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

from adapters.stripe.client import close_client, make_client
from adapters.stripe.reconcile import reconcile
from adapters.stripe.sandbox import start_sandbox
from billtrail import bootstrap
from billtrail.cli.demo import STATE_FILE
from billtrail.settings import Settings
from ledger.app import Ledger
from ledger.invoices.domain import Status
from ledger.money import Money
from ledger.sources import Source, SourceKind


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from billtrail.cli import main

    directory = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(directory)
        for name in ("STRIPE_API_BASE", "BILLTRAIL_SEAL_KEY", "BILLTRAIL_DATABASE_URL"):
            mp.delenv(name, raising=False)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
            main(["demo", "--no-serve", "--dir", str(directory / "world"), "--seed", "11"])
        assert exited.value.code == 0, out.getvalue()
    return directory / "world", out.getvalue()


@pytest.fixture
def ledger(demo: tuple[Path, str]) -> Iterator[Ledger]:
    directory, _ = demo
    settings = Settings.from_env(
        {
            "BILLTRAIL_DATABASE_URL": f"sqlite:///{directory / 'billtrail.db'}",
            "BILLTRAIL_VAR_DIR": str(directory),
        }
    )
    app = bootstrap.ledger(settings)
    yield app
    app.close()


@pytest.fixture
def stripe_after(demo: tuple[Path, str], tmp_path: Path) -> Iterator[stripe.StripeClient]:
    """Stripe as the demo left it: the sandbox started again from its saved state
    (a copy, so the test leaves the demo's file alone)."""
    directory, _ = demo
    state = tmp_path / STATE_FILE
    state.write_bytes((directory / STATE_FILE).read_bytes())
    with start_sandbox(state_file=state) as running:
        client = make_client(running.api_key, running.url)
        yield client
        close_client(client)


def test_the_demo_says_what_happened(demo: tuple[Path, str]) -> None:
    _, out = demo
    [summary] = [ln for ln in out.splitlines() if ln.startswith("invoices: ")]
    counts = dict((s, int(n)) for n, s in re.findall(r"(\d+) (\w+)", summary.split("(", 1)[1]))
    assert counts["paid"] > counts["open"] > 0
    assert counts["void"] >= 1
    assert counts["uncollectible"] == 1
    assert counts["past_due"] == 1
    assert "reconcile: after corrections: 0 findings" in out
    assert "meter events pushed" in out
    built = re.search(r"built in ([\d.]+)s", out)
    assert built is not None


def test_the_ledger_holds_every_invoice_stripe_has_in_the_same_state(
    ledger: Ledger, stripe_after: stripe.StripeClient
) -> None:
    mine = {i.stripe_id: i for i in ledger.invoices()}
    theirs: dict[str, stripe.Invoice] = {}
    for entity in ledger.entities():
        assert entity.stripe_customer_id is not None
        listed = stripe_after.v1.invoices.list(
            {"customer": entity.stripe_customer_id, "limit": 100}
        )
        theirs.update({i.id: i for i in listed.auto_paging_iter()})
    assert set(mine) == set(theirs)
    for stripe_id, invoice in theirs.items():
        recorded = mine[stripe_id]
        expected = "open" if recorded.status is Status.PAST_DUE else recorded.status.value
        assert invoice.status == expected, stripe_id
        assert recorded.number == invoice.number
        assert Money(recorded.total, recorded.currency).to_minor() == invoice.total
    statuses = Counter(i.status for i in mine.values())
    assert statuses[Status.UNCOLLECTIBLE] == 1
    assert statuses[Status.PAST_DUE] == 1
    # Each voided invoice is replaced, both sides linked.
    for invoice in mine.values():
        if invoice.status is Status.VOID:
            assert invoice.replaced_by is not None
            assert mine[invoice.replaced_by].replaces == invoice.stripe_id
    # The credit note for Brightline's resent calls keeps the call ids as evidence.
    [note] = [n for i in mine.values() for n in i.credit_notes.values()]
    assert len(note.evidence) == 12
    assert all(e.endswith("-r") for e in note.evidence)
    # A payment that failed before it succeeded is in the history.
    failed_then_paid = [i for i in mine.values() if i.status is Status.PAID and i.attempt_count > 1]
    assert failed_then_paid


def test_every_day_was_pushed_and_stripe_billed_what_was_pushed(
    ledger: Ledger, stripe_after: stripe.StripeClient
) -> None:
    report = reconcile(
        ledger, Source(SourceKind.CLI, "after-the-demo", "test"), client=stripe_after
    )
    assert report.findings == []
    assert len(report.figures) >= 30
    assert all(f.counted == f.pushed == f.meter for f in report.figures)


def test_the_seal_is_intact(ledger: Ledger) -> None:
    assert ledger.verify_seal().ok
