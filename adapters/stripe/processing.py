"""Processing behind the acknowledgement: the events in the inbox are grouped by
the invoice they are about, each invoice is re-read from Stripe once (however
many of its events are waiting), the ledger records whatever in it is new
(`observe_invoice` records only real changes, so order and repetition do not
matter), and the events are marked processed, ignored or failed.

Stripe is called through a token bucket (25 requests/s in test mode, 100 live),
and a 429 slows the bucket down. A Stripe error that may pass (429 after our
retries, 5xx and connection errors after the SDK's) leaves the events pending
for the next pass; a ledger rule the invoice breaks marks them failed (visible,
retried by `sync`).

Two readers of one invoice (two web processes' workers, `sync` beside a worker)
can interleave: A reads a draft, Stripe revises it, B reads and records the
revision, A records what it read. Every fact but a draft's lines only moves
forward, so the ledger ignores what is older in everything else; for the lines,
`read_and_observe` notes the ledger's version of the invoice before reading it,
and a revision the ledger refuses because the invoice changed since
(`StaleSnapshot`) is read again. No lock is held across the request to Stripe.

`process_pending` is one pass, synchronous (tests and `sync` call it);
`InboxWorker` runs passes in a thread of the web process, woken by each stored
webhook, and waits a moment first so the burst of events Stripe sends for one
change (finalized, updated, paid, payment_succeeded...) costs one re-read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import stripe

from adapters.stripe.client import TEST_MODE_RATE, TokenBucket
from adapters.stripe.invoices import InvoiceReader, NotForTheLedger
from ledger.app import Ledger
from ledger.errors import LedgerError
from ledger.invoices.application import InvoiceSnapshot, StaleSnapshot
from ledger.sources import Source, SourceKind
from ledger.stripe_inbox.application import InboxTail, PendingStripeEvent, Settlement
from ledger.stripe_inbox.domain import Disposition

log = logging.getLogger("billtrail.stripe.processing")

SETTLE_BATCH = 500  # settlements per transaction, at most
SETTLE_EVERY = 1.0  # seconds: a slow pass still shows its progress
# Reads of one invoice in one pass when other readers keep recording it meanwhile;
# then its events wait for the next pass.
FRESH_READS = 3


class StripeUnavailable(Exception):
    """Stripe could not answer now (rate limited, failing, unreachable)."""


def is_transient(exc: stripe.StripeError) -> bool:
    if isinstance(exc, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    status = exc.http_status
    return status is None or status >= 500 or status == 409


@dataclass
class ProcessReport:
    invoices_read: int = 0
    invoices_changed: int = 0
    processed: int = 0
    ignored: int = 0
    failed: int = 0
    deferred: int = 0  # left pending: Stripe could not answer this time

    def add(self, other: ProcessReport) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def group_by_invoice(pending: Sequence[PendingStripeEvent]) -> list[list[PendingStripeEvent]]:
    """The events of each invoice together, invoices in the order their first
    waiting event was received."""
    groups: dict[str, list[PendingStripeEvent]] = {}
    for event in sorted(pending, key=lambda p: p.position):
        groups.setdefault(event.invoice_id, []).append(event)
    return list(groups.values())


def observation_source(group: Sequence[PendingStripeEvent]) -> Source:
    """The newest event of the group (by Stripe's time, then arrival): the state
    re-read is at least as new as it, so the observation is recorded under it."""
    newest = max(group, key=lambda p: (p.created, p.position))
    return Source(SourceKind.STRIPE_EVENT, newest.event_id)


Outcome = tuple[Disposition, bool, str]


def observe(
    ledger: Ledger,
    snapshot: InvoiceSnapshot | NotForTheLedger | LedgerError,
    source: Source,
    *,
    read_after: int | None = None,
) -> Outcome:
    """Record a re-read invoice (or what prevented reading it in ledger terms);
    (what became of its events, changed?, detail). `read_after`: the ledger's
    version of the invoice before it was read (`StaleSnapshot` propagates)."""
    if isinstance(snapshot, NotForTheLedger):
        return Disposition.IGNORED, False, snapshot.reason
    if isinstance(snapshot, LedgerError):
        log.warning("an invoice could not be recorded: %s", snapshot)
        return Disposition.FAILED, False, str(snapshot)
    try:
        changed = ledger.observe_invoice(snapshot, source, read_after=read_after)
    except StaleSnapshot:
        raise
    except LedgerError as exc:
        log.warning("invoice %s could not be recorded: %s", snapshot.stripe_id, exc)
        return Disposition.FAILED, False, str(exc)
    return Disposition.PROCESSED, changed, ""


class Reader(Protocol):
    def read(self, invoice_id: str) -> InvoiceSnapshot | NotForTheLedger: ...


def read_and_observe(
    ledger: Ledger, reader: Reader, invoice_id: str, source: Source
) -> Outcome | None:
    """Read the invoice from Stripe now and record it, never after a newer read
    of it was recorded: the ledger's version is noted before each read, and a
    read the ledger refuses as stale is made again. None when other readers kept
    recording it (`FRESH_READS` times): nothing was recorded. Stripe's errors
    propagate."""
    for _ in range(FRESH_READS):
        read_after = ledger.invoice_version(invoice_id)
        snapshot: InvoiceSnapshot | NotForTheLedger | LedgerError
        try:
            snapshot = reader.read(invoice_id)
        except LedgerError as exc:  # the invoice names an entity the ledger lacks
            snapshot = exc
        try:
            return observe(ledger, snapshot, source, read_after=read_after)
        except StaleSnapshot as exc:
            log.info("%s; reading it again", exc)
    return None


def settlements(
    group: Sequence[PendingStripeEvent],
    invoice_id: str,
    outcome: Outcome,
    source: Source,
) -> list[Settlement]:
    disposition, changed, detail = outcome
    return [
        Settlement(
            e.event_id,
            disposition,
            invoice_id=invoice_id,
            changed=changed,
            observed_with=source.id,
            detail=detail,
            version=e.version,
            source=source,
        )
        for e in group
    ]


def settle(
    ledger: Ledger,
    group: Sequence[PendingStripeEvent],
    invoice_id: str,
    outcome: Outcome,
    source: Source,
) -> None:
    ledger.settle_stripe_events(settlements(group, invoice_id, outcome, source))


def process_pending(
    ledger: Ledger,
    client: stripe.StripeClient,
    *,
    limiter: TokenBucket | None = None,
    reader: InvoiceReader | None = None,
    pending: Sequence[PendingStripeEvent] | None = None,
    include_failed: bool = False,
    source: Source | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_invoice: Callable[[int, int], None] = lambda done, total: None,
) -> ProcessReport:
    """One pass over the waiting events (by default every one in the inbox;
    `include_failed` retries failed ones too). Each invoice is re-read once and
    observed under `source` (default: its newest waiting event). Stops early,
    leaving the rest pending, when Stripe is unavailable or `should_stop()`."""
    reader = reader or InvoiceReader(client, ledger, limiter)
    if pending is None:
        pending = ledger.pending_stripe_events(include_failed=include_failed)
    groups = group_by_invoice(pending)
    report = ProcessReport()
    # Settlements are recorded many at a time, not in one transaction per invoice:
    # on SQLite every write transaction takes the one write lock the webhook
    # endpoint needs. A crash before they are recorded only means the invoices are
    # re-read again (observations record only changes; a settlement, once).
    decided: list[Settlement] = []
    flushed_at = time.monotonic()
    try:
        for done, group in enumerate(groups):
            if should_stop():
                report.deferred += sum(len(g) for g in groups[done:])
                break
            invoice_id = group[0].invoice_id
            observed_as = source or observation_source(group)
            try:
                found = read_and_observe(ledger, reader, invoice_id, observed_as)
            except stripe.StripeError as exc:
                if not is_transient(exc):
                    raise
                log.warning("Stripe could not give invoice %s now: %s", invoice_id, exc)
                report.deferred += sum(len(g) for g in groups[done:])
                break
            report.invoices_read += 1
            if found is None:  # other readers kept recording it: the next pass
                report.deferred += len(group)
                on_invoice(done + 1, len(groups))
                continue
            outcome = found
            decided.extend(settlements(group, invoice_id, outcome, observed_as))
            if len(decided) >= SETTLE_BATCH or time.monotonic() - flushed_at >= SETTLE_EVERY:
                ledger.settle_stripe_events(decided)
                decided.clear()
                flushed_at = time.monotonic()
            report.invoices_changed += outcome[1]
            if outcome[0] is Disposition.PROCESSED:
                report.processed += len(group)
            elif outcome[0] is Disposition.IGNORED:
                report.ignored += len(group)
            else:
                report.failed += len(group)
            on_invoice(done + 1, len(groups))
    finally:
        if decided:
            ledger.settle_stripe_events(decided)
    return report


class InboxWorker:
    """Processes the inbox in a thread: a pass when woken (after `settle` seconds,
    so a burst coalesces), and every `poll` seconds anyway (events stored by
    another process, and retries after Stripe was unavailable, with backoff).

    Run one per ledger: with several web processes, start it in one of them (or in
    a process of its own). Two would re-read the same invoices (twice the Stripe
    requests); what they record stays right (observations record only changes,
    never an older read than one recorded (`read_and_observe`), and a settlement
    is recorded once)."""

    def __init__(
        self,
        ledger: Ledger,
        client: stripe.StripeClient,
        *,
        limiter: TokenBucket | None = None,
        settle: float = 0.2,
        poll: float = 5.0,
        backoff: Sequence[float] = (1.0, 2.0, 5.0, 10.0, 30.0),
    ) -> None:
        self.ledger = ledger
        self.client = client
        # Never unthrottled: without a bucket for the key's mode, test mode's limit.
        self.limiter = limiter or TokenBucket(TEST_MODE_RATE)
        self.reader = InvoiceReader(client, ledger, self.limiter)
        self.settle = settle
        self.poll = poll
        self.backoff = tuple(backoff)
        self.report = ProcessReport()
        self.passes = 0
        self._tail: InboxTail = ledger.stripe_inbox_tail()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> InboxWorker:
        self._thread = threading.Thread(target=self._run, name="stripe-inbox", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> ProcessReport:
        """One pass over what is new in the inbox since the last."""
        report = process_pending(
            self.ledger,
            self.client,
            reader=self.reader,
            pending=self._tail.refresh(),
            should_stop=self._stop.is_set,
        )
        self.report.add(report)
        self.passes += 1
        return report

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            woken = self._wake.wait(self.poll)
            if self._stop.is_set():
                return
            if woken:
                self._stop.wait(self.settle)  # let the burst arrive
                self._wake.clear()
            try:
                report = self.run_once()
            except Exception:
                log.exception("processing Stripe events failed; retrying")
                report = ProcessReport(deferred=1)
            if report.deferred:
                delay = self.backoff[min(failures, len(self.backoff) - 1)]
                failures += 1
                self._stop.wait(delay)
                self._wake.set()  # try again at once after the backoff
            else:
                failures = 0
