"""Stripe-shaped errors. Handlers raise `StripeError`; the app turns it into
`{"error": {...}}` with the HTTP status Stripe uses, so the SDK maps it to the
same exception class it would raise against Stripe."""

from __future__ import annotations

from typing import Any

JsonDict = dict[str, Any]

DOC_BASE = "https://stripe.com/docs/error-codes/"


class StripeError(Exception):
    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.headers = headers or {}

    @property
    def stored_for_idempotency(self) -> bool:
        # Stripe saves a key's result only once the endpoint started executing;
        # a request refused by validation can be retried with the same key.
        return self.type != "invalid_request_error"

    def body(self) -> JsonDict:
        error: JsonDict = {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "doc_url": DOC_BASE + self.code.replace("_", "-") if self.code else None,
        }
        if self.decline_code:
            error["decline_code"] = self.decline_code
        return {"error": error}


def invalid(
    message: str, *, param: str | None = None, code: str | None = None, status: int = 400
) -> StripeError:
    return StripeError(status, "invalid_request_error", message, code=code, param=param)


def missing_param(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", param=param, code="parameter_missing")


def unknown_param(param: str) -> StripeError:
    return invalid(f"Received unknown parameter: {param}", param=param, code="parameter_unknown")


def no_such(kind: str, object_id: str, param: str = "id") -> StripeError:
    return invalid(
        f"No such {kind}: '{object_id}'", param=param, code="resource_missing", status=404
    )


def unexpected_state(message: str) -> StripeError:
    return invalid(message, code="invoice_unexpected_state")


def unrecognized_url(method: str, path: str) -> StripeError:
    return invalid(
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
        "or we can help at https://support.stripe.com/.",
        status=404,
    )


def authentication(message: str) -> StripeError:
    return StripeError(401, "invalid_request_error", message)


def card_declined(message: str = "Your card was declined.") -> StripeError:
    return StripeError(
        402, "card_error", message, code="card_declined", decline_code="generic_decline"
    )


def api_error(message: str = "An unknown error occurred", status: int = 500) -> StripeError:
    return StripeError(status, "api_error", message)


def rate_limited(*, should_retry: bool | None, code: str = "rate_limit") -> StripeError:
    headers = {} if should_retry is None else {"Stripe-Should-Retry": str(should_retry).lower()}
    return StripeError(
        429,
        "invalid_request_error",
        "Too many requests hit the API too quickly. We recommend an exponential backoff "
        "of your requests.",
        code=code,
        headers=headers,
    )


def idempotency_mismatch(key: str) -> StripeError:
    return StripeError(
        400,
        "idempotency_error",
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request.",
    )


def idempotency_in_use(key: str) -> StripeError:
    return StripeError(
        409,
        "invalid_request_error",
        f"There is currently another in-progress request using this Idempotent Key: {key}. "
        "Please try again later.",
        code="idempotency_key_in_use",
        headers={"Stripe-Should-Retry": "true"},
    )
