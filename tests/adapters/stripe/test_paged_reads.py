"""An invoice with more lines than Stripe embeds is read in several requests: its
totals with the first lines, the rest from the lines list. A draft Stripe revises
between them must not be recorded as the mix (the old totals with the new lines,
the gap taken up by a "Discounts" line: a state Stripe never had), on both
backends against the sandbox."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import stripe

from adapters.stripe.invoices import PAGED_READS
from adapters.stripe.processing import process_pending
from adapters.stripe.testing import BillingWorld
from ledger.app import Ledger
from ledger.errors import NotFound
from ledger.values import LineKind

from .test_stale_reads import add_item, stripe_event, stripe_total

TWELVE = [(f"Item {n}", 100) for n in range(1, 13)]  # more than the 10 Stripe embeds


def revise_before_lines_pages(
    monkeypatch: pytest.MonkeyPatch,
    client: stripe.StripeClient,
    revise: Callable[[], Any],
    times: int,
) -> list[int]:
    """Runs `revise` before each of the first `times` requests for an invoice's
    further lines (after its totals and first lines were read); the list counts
    those requests."""
    service = client.v1.invoices.line_items
    listed = service.list
    calls: list[int] = []

    def list_after_a_revision(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= times:
            revise()
        return listed(*args, **kwargs)

    monkeypatch.setattr(service, "list", list_after_a_revision)
    return calls


def test_a_draft_revised_between_its_lines_pages_is_read_again_not_recorded_as_a_mix(
    world: BillingWorld,
    ledger: Ledger,
    client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world.customer("acme")
    draft = world.manual_invoice(world.customers["acme"], TWELVE)
    assert draft.lines.has_more
    stripe_event(ledger, draft.id, "invoice.created")
    calls = revise_before_lines_pages(
        monkeypatch, client, lambda: add_item(world, client, draft, 1_000), times=1
    )

    report = process_pending(ledger, client)

    recorded = ledger.invoice(draft.id)
    assert recorded.total == stripe_total(client, draft.id) == Decimal("26.40")  # 22 + 20%
    untaxed = [line for line in recorded.lines if line.kind != LineKind.TAX.value]
    assert [line.amount for line in untaxed] == [Decimal(1)] * 12 + [Decimal(10)]
    assert "Discounts" not in [line.description for line in recorded.lines]
    assert len(calls) == 2  # the mix was noticed and the lines read again
    assert (report.processed, report.failed, report.deferred) == (1, 0, 0)


def test_a_draft_revised_between_its_lines_pages_every_time_is_left_for_the_next_pass(
    world: BillingWorld,
    ledger: Ledger,
    client: stripe.StripeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world.customer("acme")
    draft = world.manual_invoice(world.customers["acme"], TWELVE)
    stripe_event(ledger, draft.id, "invoice.created")
    calls = revise_before_lines_pages(
        monkeypatch, client, lambda: add_item(world, client, draft, 1_000), times=99
    )

    report = process_pending(ledger, client)

    assert len(calls) == PAGED_READS
    assert (report.processed, report.failed, report.deferred) == (0, 0, 1)
    assert len(ledger.pending_stripe_events()) == 1  # still waiting
    with pytest.raises(NotFound):  # nothing of the invoice recorded, least of all a mix
        ledger.invoice(draft.id)
