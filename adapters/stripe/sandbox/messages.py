"""A request and a response as the sandbox sees them, without HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from adapters.stripe.sandbox.errors import JsonDict, StripeError


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str = ""
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # names in lower case


@dataclass
class Response:
    status: int
    body: JsonDict | None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


def error_response(error: StripeError, request_id: str | None = None) -> Response:
    headers = dict(error.headers)
    if request_id:
        headers["Request-Id"] = request_id
    return Response(error.status, error.body(), headers)
