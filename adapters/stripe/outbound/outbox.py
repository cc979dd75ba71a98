"""Every POST billtrail makes to Stripe goes through the `Outbox`:

1. The request is recorded in the ledger (`StripeRequest.Prepared`) under a key
   derived from ledger facts, with the exact parameters, before anything is sent.
2. It is sent with that key as its `Idempotency-Key` and the recorded parameters
   (never freshly built ones), so a rerun after a crash between Stripe's answer
   and the ledger write sends the same request again and Stripe answers with its
   first response instead of acting twice.
3. Stripe's answer is recorded (`Answered`, with the id of what it made); a 4xx is
   recorded as `Refused` (sending it again would get the same answer).

Retries: the SDK retries 409, 5xx and connection errors itself when the client has
`max_network_retries` set (the key stays the same); it does not retry a 429 unless
Stripe says `Stripe-Should-Retry: true`, so the outbox backs off and tries again.
What is still failing after that is `StripeUnavailable`: nothing after that
request was done, and running again resumes at it.

Stripe forgets idempotency keys after at least 24 hours. A request prepared longer
ago than that and never answered is first looked for in Stripe (`recover`) before
it is sent again; and a create Stripe refuses because the object exists already
(a meter's event name, a product id, a price's lookup key) adopts what `recover`
finds.

`key_prefix` is put before every key sent to Stripe (and every meter event
identifier): empty for a deployment, which owns its Stripe account; the demo
gives each run its own, so runs against one long-lived sandbox never collide.

`after_call` is the seam the fault tests use: it runs after Stripe answered and
before the ledger write, so a test can crash exactly there."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar, cast

import stripe
from stripe import RequestOptions

from ledger.app import Ledger
from ledger.sources import Source
from ledger.stripe_outbox.application import RequestSpec
from ledger.stripe_outbox.domain import StripeRequest

P = TypeVar("P")
T = TypeVar("T", bound=stripe.StripeObject)

# Stripe keeps an idempotency key at least 24 hours; a little margin.
KEY_REUSE_WINDOW = timedelta(hours=23)
RATE_LIMIT_RETRIES = 5
MAX_BACKOFF = 8.0

AfterCall = Callable[[StripeRequest], None]


class OutboundError(Exception):
    """A push or correction could not be completed; the message says why."""


class StripeUnavailable(OutboundError):
    """Stripe kept failing or could not be reached; nothing past this request was
    done. Running again resumes here with the same idempotency key."""


class StripeRefused(OutboundError):
    """Stripe refused the request (4xx). It is recorded as refused and not sent
    again by itself."""

    def __init__(self, request: StripeRequest, message: str, code: str | None = None) -> None:
        super().__init__(f"Stripe refused {request.operation} ({request.key}): {message}")
        self.request = request
        self.code = code


class PlainDecimal(Decimal):
    """A Decimal the SDK sends as plain digits: it encodes with `str()`, which
    writes small values like 1E-7 in exponent form, which Stripe refuses."""

    def __str__(self) -> str:
        return format(self, "f")


def wire(value: Any) -> Any:
    """Recorded parameters as the SDK sends them."""
    if isinstance(value, Decimal):
        return PlainDecimal(value)
    if isinstance(value, Mapping):
        return {k: wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [wire(v) for v in value]
    return value


def was_replayed(obj: stripe.StripeObject | None) -> bool:
    response = obj.last_response if obj is not None else None
    if response is None:
        return False
    return str(response.headers.get("idempotent-replayed", "")).lower() == "true"


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a request came to: the id of the object Stripe made (None for objects
    without one, like meter events), the object when it was sent now (None when
    the ledger already had the answer), and whether Stripe replayed it."""

    request: StripeRequest
    object_id: str | None
    obj: T | None
    replayed: bool


@dataclass(frozen=True)
class Outbox:
    ledger: Ledger
    client: stripe.StripeClient
    source: Source
    after_call: AfterCall | None = None
    sleep: Callable[[float], Any] = time.sleep
    rate_limit_retries: int = RATE_LIMIT_RETRIES
    key_reuse_window: timedelta = KEY_REUSE_WINDOW
    key_prefix: str = ""

    def with_source(self, source: Source) -> Outbox:
        return replace(self, source=source)

    # The ledger side -------------------------------------------------------------

    def prepare(
        self, key: str, operation: str, params: Mapping[str, Any], target: str | None = None
    ) -> StripeRequest:
        return self.ledger.prepare_stripe_request(
            RequestSpec(key, operation, dict(params), target), self.source
        )

    def answer(self, request: StripeRequest, object_id: str | None, replayed: bool) -> None:
        self.ledger.answer_stripe_request(request.key, object_id, replayed, self.source)

    # The Stripe side -------------------------------------------------------------

    def send(
        self,
        request: StripeRequest,
        post: Callable[[P, RequestOptions], T],
        *,
        done_already: Callable[[stripe.InvalidRequestError], bool] | None = None,
    ) -> T | None:
        """POST the recorded request with its key. Returns Stripe's object, or None
        when Stripe refused it in a way `done_already` says means it was done
        before (a meter event identifier Stripe has already seen)."""
        if request.refused:
            raise StripeRefused(request, request.refusal or "refused earlier")
        params = cast(P, wire(request.params))
        options: RequestOptions = {"idempotency_key": self.key_prefix + request.idempotency_key}
        attempt = 0
        while True:
            try:
                obj = post(params, options)
            except stripe.RateLimitError as exc:
                if attempt == self.rate_limit_retries:
                    raise StripeUnavailable(
                        f"Stripe kept rate limiting {request.operation} ({request.key}); "
                        "run again later"
                    ) from exc
                self.sleep(min(0.5 * 2**attempt, MAX_BACKOFF))
                attempt += 1
                continue
            except stripe.InvalidRequestError as exc:
                if done_already is not None and done_already(exc):
                    self._called(request)
                    return None
                self._refuse(request, exc)
            except (stripe.CardError, stripe.PermissionError, stripe.IdempotencyError) as exc:
                self._refuse(request, exc)
            except stripe.AuthenticationError as exc:
                raise StripeUnavailable(f"Stripe refused the API key: {exc.user_message}") from exc
            except (stripe.APIConnectionError, stripe.APIError) as exc:
                raise StripeUnavailable(
                    f"Stripe did not answer {request.operation} ({request.key}): "
                    f"{exc.user_message or exc}; run again to resume"
                ) from exc
            self._called(request)
            return obj

    def _called(self, request: StripeRequest) -> None:
        if self.after_call is not None:
            self.after_call(request)

    def _refuse(self, request: StripeRequest, exc: stripe.StripeError) -> None:
        message = exc.user_message or str(exc)
        self.ledger.refuse_stripe_request(
            request.key, exc.http_status, exc.code, message, self.source
        )
        raise StripeRefused(request, message, exc.code) from exc

    def call(
        self,
        key: str,
        operation: str,
        params: P,
        post: Callable[[P, RequestOptions], T],
        *,
        target: str | None = None,
        recover: Callable[[], str | None] | None = None,
    ) -> Outcome[T]:
        """Prepare (or find) the request of `key`, send it unless the ledger has its
        answer, and record the answer. `params` are used only the first time."""
        request = self.prepare(key, operation, cast(Mapping[str, Any], params), target)
        if request.answered:
            return Outcome(request, request.object_id, None, replayed=True)
        if recover is not None and self._stale(request):
            found = recover()
            if found is not None:
                self._called(request)
                self.answer(request, found, replayed=True)
                return Outcome(request, found, None, replayed=True)
        adopted: list[str] = []

        def exists(error: stripe.InvalidRequestError) -> bool:
            found = recover() if recover is not None else None
            adopted.extend([found] if found else [])
            return found is not None

        obj = self.send(request, post, done_already=exists if recover is not None else None)
        if obj is None:
            self.answer(request, adopted[0], replayed=True)
            return Outcome(request, adopted[0], None, replayed=True)
        object_id = cast(str | None, getattr(obj, "id", None))
        replayed = was_replayed(obj)
        self.answer(request, object_id, replayed)
        return Outcome(request, object_id, obj, replayed)

    def _stale(self, request: StripeRequest) -> bool:
        return self.ledger.clock() - request.prepared_at > self.key_reuse_window
