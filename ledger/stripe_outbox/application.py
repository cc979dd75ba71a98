"""Commands on the Stripe outbox: prepare a request before it is sent, record its
answer or refusal, and open and complete corrections. The adapter
(`adapters/stripe/outbound`) decides what to send; the ledger keeps what was
asked and what Stripe answered."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from ledger.application import MAX_CONFLICT_RETRIES, ConcurrentChange, LedgerBase
from ledger.errors import NotFound, UnknownRate
from ledger.rates.domain import Rate
from ledger.sources import Source
from ledger.stripe_outbox.domain import Correction, StripeRequest
from ledger.usage.domain import Usage


@dataclass(frozen=True)
class RequestSpec:
    """A request to prepare: its key, the SDK operation, its parameters, and the
    Stripe object it acts on (for `invoices.void(target)` and the like)."""

    key: str
    operation: str
    params: dict[str, Any]
    target: str | None = None


@dataclass(frozen=True)
class PriceLink:
    """A Stripe price for a rate version (`version`) or a fixed fee (`fee_id`)."""

    price_id: str
    version: int | None = None
    fee_id: str | None = None


@dataclass(frozen=True)
class UsageAnswer:
    """Stripe accepted the meter event of `key` for one entity and day."""

    key: str
    entity_id: str
    day: date
    quantity: int
    identifier: str
    reported_at: datetime
    replayed: bool


@dataclass(frozen=True)
class RecordedCall:
    """A call the ledger counted: its entity, start (UTC) and duration."""

    call_id: str
    entity_id: str
    started_at: datetime
    duration_seconds: int


def _missing_request(key: str) -> NotFound:
    return NotFound(f"no Stripe request {key!r} was prepared")


def _missing_correction(correction_id: str) -> NotFound:
    return NotFound(f"no correction {correction_id!r}")


class OutboxCommands(LedgerBase):
    # Requests --------------------------------------------------------------------

    def stripe_request(self, key: str) -> StripeRequest | None:
        request_id = StripeRequest.create_id(key)
        if not self.exists(request_id):
            return None
        return self.load(StripeRequest, request_id, lambda: _missing_request(key))

    def prepare_stripe_request(self, spec: RequestSpec, source: Source) -> StripeRequest:
        """The request of `spec.key`: the one prepared before (whatever its
        parameters now), or a new one recorded now."""
        return self.prepare_stripe_requests([spec], source)[0]

    def prepare_stripe_requests(
        self, specs: Sequence[RequestSpec], source: Source
    ) -> list[StripeRequest]:
        """Prepare many requests in one transaction; those prepared before are
        returned as they were recorded, so their parameters win."""
        for _ in range(MAX_CONFLICT_RETRIES):
            found: dict[str, StripeRequest] = {}
            new: list[StripeRequest] = []
            at = self.clock()
            for spec in specs:
                if spec.key in found:
                    continue
                existing = self.stripe_request(spec.key)
                if existing is None:
                    existing = StripeRequest.prepare(
                        spec.key, spec.operation, spec.params, source, at, spec.target
                    )
                    new.append(existing)
                found[spec.key] = existing
            if not new:
                return [found[s.key] for s in specs]
            try:
                self.save(*new)
            except IntegrityError:
                continue  # another run prepared some of them: take theirs
            return [found[s.key] for s in specs]
        raise ConcurrentChange("Stripe requests kept being prepared concurrently; try again")

    def _request_change(
        self, key: str, command: str, source: Source, change: Callable[[StripeRequest], bool]
    ) -> bool:
        return self._change(
            StripeRequest,
            StripeRequest.create_id(key),
            command,
            source,
            change,
            lambda: _missing_request(key),
        )

    def answer_stripe_request(
        self, key: str, object_id: str | None, replayed: bool, source: Source
    ) -> bool:
        at = self.clock()
        return self._request_change(
            key,
            "answer_stripe_request",
            source,
            lambda r: r.answer(object_id, replayed, source, at),
        )

    def refuse_stripe_request(
        self, key: str, http_status: int | None, code: str | None, message: str, source: Source
    ) -> bool:
        at = self.clock()
        return self._request_change(
            key,
            "refuse_stripe_request",
            source,
            lambda r: r.refuse(http_status, code, message, source, at),
        )

    def retry_stripe_request(self, key: str, params: dict[str, Any], source: Source) -> bool:
        at = self.clock()
        return self._request_change(
            key, "retry_stripe_request", source, lambda r: r.retry(params, source, at)
        )

    def record_usage_answers(self, answers: Sequence[UsageAnswer], source: Source) -> int:
        """Record, in one transaction, each accepted meter event: its request
        answered and the day's UsageReported. Returns how many days changed."""
        if not answers:
            return 0
        for _ in range(MAX_CONFLICT_RETRIES):
            at = self.clock()
            changed: dict[str, Aggregate] = {}
            usages: dict[tuple[str, date], Usage] = {}
            days = 0
            for answer in answers:
                request = self._load_request(answer.key)
                usage = usages.get((answer.entity_id, answer.day))
                if usage is None:
                    usage = usages[(answer.entity_id, answer.day)] = self._load_usage(
                        answer.entity_id, answer.day
                    )
                if usage.report_usage(
                    answer.quantity, answer.identifier, answer.reported_at, source, at
                ):
                    days += 1
                    changed[f"usage/{answer.entity_id}/{answer.day}"] = usage
                if request.answer(None, answer.replayed, source, at):
                    changed[f"request/{answer.key}"] = request
            if not changed:
                return 0
            try:
                self.save(*changed.values())
            except IntegrityError:
                continue
            return days
        raise ConcurrentChange("usage reports kept changing concurrently; push again")

    def _load_request(self, key: str) -> StripeRequest:
        return self.load(StripeRequest, StripeRequest.create_id(key), lambda: _missing_request(key))

    def _load_usage(self, entity_id: str, day: date) -> Usage:
        usage_id = Usage.create_id(entity_id, day)
        return self.load(Usage, usage_id, lambda: NotFound(f"no usage of {entity_id} on {day}"))

    def recorded_calls(self, call_ids: Sequence[str]) -> dict[str, RecordedCall]:
        """The calls among `call_ids` the ledger has counted (a correction's
        evidence must be calls it counted)."""
        found: dict[str, RecordedCall] = {}
        for call_id, fingerprint in self.ledger_recorder.call_fingerprints(list(call_ids)).items():
            entity_id, started, duration = fingerprint.rsplit("|", 2)
            found[call_id] = RecordedCall(
                call_id,
                entity_id,
                datetime.fromisoformat(started.replace("Z", "+00:00")),
                int(duration),
            )
        return found

    def link_stripe_prices(
        self, entity_id: str, links: Sequence[PriceLink], source: Source
    ) -> bool:
        """Link the prices a push made for one rate, as one command: a scheduler
        run (an idempotent source) applies a command once per aggregate, so linking
        them one by one would keep only the first."""
        at = self.clock()

        def link(rate: Rate) -> bool:
            changed = False
            for price in links:
                changed |= rate.link_stripe_price(
                    price.price_id, source, at, version=price.version, fee_id=price.fee_id
                )
            return changed

        return self._change(
            Rate,
            Rate.create_id(entity_id),
            "link_stripe_prices",
            source,
            link,
            lambda: UnknownRate(f"no rate is contracted for {entity_id!r}"),
        )

    # Corrections -------------------------------------------------------------------

    def correction(self, correction_id: str) -> Correction | None:
        correction_id_ = Correction.create_id(correction_id)
        if not self.exists(correction_id_):
            return None
        return self.load(Correction, correction_id_, lambda: _missing_correction(correction_id))

    def open_correction(
        self,
        correction_id: str,
        kind: str,
        invoice: str,
        entity_id: str,
        reason: str,
        details: dict[str, Any],
        source: Source,
    ) -> Correction:
        """The correction of that id: opened now, or as it was first opened (a
        rerun acts on the facts recorded the first time)."""
        existing = self.correction(correction_id)
        if existing is not None:
            return existing
        correction = Correction.open(
            correction_id, kind, invoice, entity_id, reason, details, source, self.clock()
        )
        if self._create(correction):
            return correction
        # Opened meanwhile by a concurrent run of the same correction: theirs wins.
        return self.load(
            Correction,
            Correction.create_id(correction_id),
            lambda: _missing_correction(correction_id),
        )

    def complete_correction(
        self, correction_id: str, results: dict[str, Any], source: Source
    ) -> bool:
        at = self.clock()
        return self._change(
            Correction,
            Correction.create_id(correction_id),
            "complete_correction",
            source,
            lambda c: c.complete(results, source, at),
            lambda: _missing_correction(correction_id),
        )
