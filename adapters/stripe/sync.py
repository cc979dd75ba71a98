"""`billtrail sync`: backfill and repair the ledger from Stripe's lists, for
when webhooks were missed (the endpoint was down longer than Stripe retries, a
secret was wrong, billtrail was installed on an account with history).

One run, in order:

1. Events: the invoice and credit-note events Stripe has (the last 30 days)
   that the inbox lacks are stored in it, exactly as a webhook would have stored
   them. The first run reads the whole list (newest first); later runs read only
   the events after the newest one stored (oldest first). If that event is too
   old for Stripe to find, the run starts over with a full read of both lists.
2. Invoices (the first run, a run given `since`, or a run resuming one): every
   invoice (created on or after `since`) is listed and observed (a draft is
   read again on its own first: see `_observe_listed`), and the waiting events
   of each invoice are settled by that observation.
3. Whatever is still waiting in the inbox (events of invoices not listed,
   events a live worker has not reached, events that failed before) is
   processed: one re-read per invoice.

The cursor lives in the ledger (a `SyncCursor`), saved after each page of events
and every `CHECKPOINT_PAGES` pages of invoices, so a run that stops resumes
where it stopped. A cursor that did not move is not recorded, and observations
record only real changes: a run right after another records nothing.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Protocol

import stripe

from adapters.stripe.client import TEST_MODE_RATE, Throttle, TokenBucket
from adapters.stripe.invoices import InvoiceReader, NotForTheLedger, pages
from adapters.stripe.processing import (
    Outcome,
    ProcessReport,
    observe,
    process_pending,
    read_and_observe,
    settle,
)
from adapters.stripe.webhooks import incoming_event, parse_event
from ledger.app import Ledger
from ledger.errors import LedgerError
from ledger.invoices.application import InvoiceSnapshot
from ledger.sources import Source, SourceKind
from ledger.stripe_inbox.domain import Channel, Disposition, SyncPosition, sha256_hex

log = logging.getLogger("billtrail.stripe.sync")

CURSOR = "stripe"
PAGE = 100
CHECKPOINT_PAGES = 10
# The events `sync` reads (Stripe filters on at most 20 types).
EVENT_TYPES = [
    "invoice.created",
    "invoice.deleted",
    "invoice.finalization_failed",
    "invoice.finalized",
    "invoice.marked_uncollectible",
    "invoice.overdue",
    "invoice.paid",
    "invoice.payment_action_required",
    "invoice.payment_failed",
    "invoice.payment_succeeded",
    "invoice.sent",
    "invoice.updated",
    "invoice.voided",
    "invoice.will_be_due",
    "credit_note.created",
    "credit_note.updated",
    "credit_note.voided",
    "invoiceitem.created",
    "invoiceitem.deleted",
]


class Progress(Protocol):
    def __call__(self, phase: str, done: int, total: int | None) -> None: ...


def _silent(phase: str, done: int, total: int | None) -> None:
    pass


@dataclass
class SyncReport:
    run: str
    events_read: int = 0
    events_stored: int = 0
    invoices_listed: int = 0
    invoices_changed: int = 0
    invoices_ignored: int = 0
    invoices_failed: int = 0
    restarted: bool = False  # the cursor's event was gone from Stripe's list
    processing: ProcessReport = field(default_factory=ProcessReport)

    def summary(self) -> str:
        p = self.processing
        return (
            f"{self.events_stored} new events of {self.events_read} read, "
            f"{self.invoices_listed} invoices listed ({self.invoices_changed} changed), "
            f"{p.invoices_read} re-read for waiting events ({p.invoices_changed} changed); "
            f"events: {p.processed} processed, {p.ignored} ignored, {p.failed} failed, "
            f"{p.deferred} still waiting"
        )


class Sync:
    def __init__(
        self,
        ledger: Ledger,
        client: stripe.StripeClient,
        *,
        limiter: TokenBucket | None = None,
        run_id: str | None = None,
        progress: Progress = _silent,
        cursor: str = CURSOR,
    ) -> None:
        self.ledger = ledger
        self.client = client
        # Never unthrottled: without a bucket for the key's mode, test mode's limit.
        self.limiter = limiter or TokenBucket(TEST_MODE_RATE)
        self.call = Throttle(self.limiter)
        self.reader = InvoiceReader(client, ledger, self.limiter)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.run_id = run_id or f"sync-{stamp}-{uuid.uuid4().hex[:6]}"
        self.source = Source(SourceKind.SYNC_RUN, self.run_id)
        self.progress = progress
        self.cursor = cursor
        self.position = ledger.sync_position(cursor)
        self.report = SyncReport(self.run_id)
        self.pause: Callable[[float], Any] = time.sleep

    def _save(self, position: SyncPosition) -> None:
        self.ledger.move_sync_cursor(self.cursor, position, self.source)
        self.position = position

    # The run ---------------------------------------------------------------------------

    def run(self, since: date | None = None) -> SyncReport:
        try:
            self.read_events()
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404 or self.position.events_after is None:
                raise
            # The newest event we stored is older than Stripe keeps (30 days): events
            # were missed for good. Re-read every invoice, and the events list anew.
            log.warning("sync cursor %s is gone from Stripe; re-reading everything", exc)
            self.report.restarted = True
            self._save(SyncPosition())
            self.read_events()
            since = None
        listing = self.position.invoices_listing_after is not None
        if since is not None or listing or not self.position.invoices_listed:
            self.read_invoices(since)
        self.report.processing = self.process_waiting()
        return self.report

    # 1. Events -------------------------------------------------------------------------

    def _event_page(self, **cursor: str) -> tuple[list[dict[str, Any]], bool]:
        params: stripe.params.EventListParams = {"limit": PAGE, "types": list(EVENT_TYPES)}
        if "starting_after" in cursor:
            params["starting_after"] = cursor["starting_after"]
        if "ending_before" in cursor:
            params["ending_before"] = cursor["ending_before"]
        page = self.call(lambda: self.client.v1.events.list(params))
        # The events as Stripe sent them (decimal strings and all), not as re-rendered
        # by the SDK's objects.
        response = page.last_response
        raw: list[dict[str, Any]] = (
            list(response.data["data"])  # type: ignore[index]
            if response is not None
            else [e.to_dict() for e in page.data]
        )
        return raw, page.has_more

    def _store(self, events: list[dict[str, Any]]) -> None:
        incoming = []
        for raw in events:
            text = json.dumps(raw, indent=2, ensure_ascii=False)
            event, problem = parse_event(text)
            if event is None:
                log.warning("skipped a malformed event in Stripe's list: %s", problem)
                continue
            incoming.append(incoming_event(event, text, sha256_hex(text), Channel.EVENTS_LIST))
        stored = self.ledger.receive_stripe_events(incoming, self.source)
        self.report.events_read += len(events)
        self.report.events_stored += sum(stored)
        self.progress("events", self.report.events_read, None)

    def read_events(self) -> None:
        if self.position.events_after is not None:
            self._read_newer_events(self.position.events_after)
        else:
            self._read_all_events()

    def _read_newer_events(self, after: str) -> None:
        """Oldest first from the cursor: each page is the events just newer than
        the last one stored, served newest first."""
        while True:
            events, more = self._event_page(ending_before=after)
            if not events:
                return
            events.reverse()
            self._store(events)
            after = str(events[-1]["id"])
            self._save(replace(self.position, events_after=after))
            if not more:
                return

    def _read_all_events(self) -> None:
        """Newest first, the whole list; the newest event becomes the cursor once
        the list has been read to its end."""
        head = self.position.events_head
        after = self.position.events_listing_after
        pages_read = 0
        while True:
            events, more = self._event_page(**({"starting_after": after} if after else {}))
            if not events:
                break
            head = head or str(events[0]["id"])
            self._store(events)
            after = str(events[-1]["id"])
            pages_read += 1
            if more and pages_read % CHECKPOINT_PAGES == 0:
                self._save(replace(self.position, events_head=head, events_listing_after=after))
            if not more:
                break
        self._save(
            replace(self.position, events_after=head, events_head=None, events_listing_after=None)
        )

    # 2. Invoices -------------------------------------------------------------------------

    def _credit_notes(self, created_gte: int | None) -> dict[str, list[stripe.CreditNote]]:
        """Every credit note (since the bound), by invoice: one list read instead of
        one per invoice."""

        def page(after: str | None) -> stripe.ListObject[stripe.CreditNote]:
            params: stripe.params.CreditNoteListParams = {"limit": PAGE}
            if created_gte is not None:
                params["created"] = {"gte": created_gte}
            if after is not None:
                params["starting_after"] = after
            return self.call(lambda: self.client.v1.credit_notes.list(params))

        found: dict[str, list[stripe.CreditNote]] = {}
        for note in pages(page):
            invoice = note.invoice
            invoice_id = invoice if isinstance(invoice, str) else invoice.id
            found.setdefault(invoice_id, []).append(note)
        return found

    def _invoices(self, created_gte: int | None, after: str | None) -> Iterator[stripe.Invoice]:
        def page(cursor: str | None) -> stripe.ListObject[stripe.Invoice]:
            params: stripe.params.InvoiceListParams = {"limit": PAGE, "expand": ["data.customer"]}
            if created_gte is not None:
                params["created"] = {"gte": created_gte}
            if cursor is not None:
                params["starting_after"] = cursor
            return self.call(lambda: self.client.v1.invoices.list(params))

        return pages(lambda cursor: page(cursor or after))

    def read_invoices(self, since: date | None) -> None:
        position = self.position
        if since is not None:
            created_gte: int | None = int(
                datetime.combine(since, datetime.min.time(), UTC).timestamp()
            )
            resume = position.invoices_listing_since == created_gte
        else:
            created_gte = position.invoices_listing_since
            resume = True
        after = position.invoices_listing_after if resume else None
        notes = self._credit_notes(created_gte)
        # Waiting events by invoice: the listing's observation settles them.
        waiting: dict[str, list[Any]] = {}
        for pending in self.ledger.pending_stripe_events(include_failed=True):
            waiting.setdefault(pending.invoice_id, []).append(pending)
        for done, invoice in enumerate(self._invoices(created_gte, after), start=1):
            outcome = self._observe_listed(invoice, notes.get(invoice.id, []))
            if outcome is None:  # left waiting for step 3
                self.progress("invoices", done, None)
                continue
            if invoice.id in waiting:
                settle(self.ledger, waiting.pop(invoice.id), invoice.id, outcome, self.source)
            disposition, changed, _ = outcome
            self.report.invoices_listed += 1
            self.report.invoices_changed += changed
            self.report.invoices_ignored += disposition is Disposition.IGNORED
            self.report.invoices_failed += disposition is Disposition.FAILED
            self.progress("invoices", done, None)
            if done % (PAGE * CHECKPOINT_PAGES) == 0:
                self._save(
                    replace(
                        self.position,
                        invoices_listing_after=invoice.id,
                        invoices_listing_since=created_gte,
                    )
                )
        self._save(
            replace(
                self.position,
                invoices_listing_after=None,
                invoices_listing_since=None,
                invoices_listed=True,
            )
        )

    def _observe_listed(
        self, invoice: stripe.Invoice, notes: list[stripe.CreditNote]
    ) -> Outcome | None:
        """A listed invoice recorded. A listed draft is read again: the page may
        be older than a revision a worker recorded since, and a draft's lines are
        the one fact whose age the ledger cannot tell (every other fact only moves
        forward, so an old page records nothing older)."""
        if invoice.status == "draft":
            return read_and_observe(self.ledger, self.reader, invoice.id, self.source)
        snapshot: InvoiceSnapshot | NotForTheLedger | LedgerError
        try:
            snapshot = self.reader.snapshot_of(invoice, notes)
        except LedgerError as exc:
            snapshot = exc
        return observe(self.ledger, snapshot, self.source)

    # 3. What still waits -------------------------------------------------------------

    def process_waiting(self, rounds: int = 5) -> ProcessReport:
        total = ProcessReport()
        for attempt in range(rounds):
            if attempt:
                self.pause(min(2.0**attempt, 30.0))
            report = process_pending(
                self.ledger,
                self.client,
                reader=self.reader,
                include_failed=True,
                on_invoice=lambda done, of: self.progress("processing", done, of),
            )
            deferred = report.deferred
            report.deferred = 0
            total.add(report)
            if not deferred:
                return total
            total.deferred = deferred  # Stripe was unavailable: try again, a few times
        return total


def run_sync(
    ledger: Ledger,
    client: stripe.StripeClient,
    *,
    since: date | None = None,
    limiter: TokenBucket | None = None,
    run_id: str | None = None,
    progress: Progress = _silent,
) -> SyncReport:
    return Sync(ledger, client, limiter=limiter, run_id=run_id, progress=progress).run(since)
