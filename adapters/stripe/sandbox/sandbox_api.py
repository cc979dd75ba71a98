"""`/_sandbox/...`: the fault switches and controls that only a sandbox
answers (the app refuses the prefix unless it runs with `faults_enabled`).
Parameters come form-encoded, in the query string or as a JSON object; the
README lists every endpoint with a curl example."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from adapters.stripe.sandbox.errors import JsonDict, StripeError, invalid, unrecognized_url
from adapters.stripe.sandbox.events import new_secret
from adapters.stripe.sandbox.faults import HTTP_STATUSES, WHEN, HttpFault, Latency
from adapters.stripe.sandbox.forms import Params, decode_pairs
from adapters.stripe.sandbox.messages import Request, Response, error_response
from adapters.stripe.sandbox.routing import Route, Router, route

if TYPE_CHECKING:
    from adapters.stripe.sandbox.app import Sandbox

ControlHandler = Callable[["Sandbox", Params], JsonDict]


def handle(sandbox: Sandbox, request: Request) -> Response:
    try:
        params = Params(_params(request))
        match = _ROUTER.match(request.method, request.path)
        if match is None:
            raise unrecognized_url(request.method, request.path)
        handler, args = match
        body = handler(sandbox, params, *args)
        params.finish()
        return Response(200, body, {})
    except StripeError as error:
        return error_response(error)


def _params(request: Request) -> JsonDict:
    body = request.body.decode("utf-8", errors="replace")
    if request.headers.get("content-type", "").startswith("application/json") and body.strip():
        try:
            data: Any = json.loads(body)
        except ValueError as exc:
            raise invalid(f"Invalid JSON body: {exc}") from None
        if not isinstance(data, dict):
            raise invalid("The JSON body must be an object.")
        return {k: _as_text(v) for k, v in data.items()}
    pairs = parse_qsl(request.query, keep_blank_values=True)
    pairs += parse_qsl(body, keep_blank_values=True)
    return decode_pairs(pairs)


def _as_text(value: Any) -> Any:
    # Params reads form values (strings); JSON numbers and booleans read the same way.
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return value


def _filters(p: Params) -> tuple[str | None, str | None]:
    return p.choice("method", ("GET", "POST", "DELETE")), p.text("path")


def http_fault(sandbox: Sandbox, p: Params) -> JsonDict:
    status = p.integer("status", required=True)
    if status not in HTTP_STATUSES:
        raise invalid(f"status must be one of {', '.join(map(str, HTTP_STATUSES))}", param="status")
    assert status is not None
    method, path = _filters(p)
    fault = HttpFault(
        kind="status",
        status=status,
        count=p.integer("count", minimum=1, maximum=10_000) or 1,
        when=p.choice("when", WHEN) or "before",
        should_retry=p.boolean("should_retry"),
        code=p.text("code"),
        method=method,
        path=path,
    )
    sandbox.faults.add_http(fault)
    return sandbox.faults.snapshot()


def drop_connection(sandbox: Sandbox, p: Params) -> JsonDict:
    method, path = _filters(p)
    fault = HttpFault(
        kind="drop",
        count=p.integer("count", minimum=1, maximum=10_000) or 1,
        when=p.choice("when", WHEN) or "before",
        method=method,
        path=path,
    )
    sandbox.faults.add_http(fault)
    return sandbox.faults.snapshot()


def latency(sandbox: Sandbox, p: Params) -> JsonDict:
    ms = p.integer("ms", required=True, minimum=0, maximum=120_000)
    count = p.integer("count", minimum=1)
    method, path = _filters(p)
    assert ms is not None
    sandbox.faults.set_latency(Latency(ms / 1000, count, method, path) if ms else None)
    return sandbox.faults.snapshot()


def webhook_faults(sandbox: Sandbox, p: Params) -> JsonDict:
    for kind in ("drop", "duplicate", "reorder"):
        count = p.integer(kind, minimum=0, maximum=10_000)
        if count:
            sandbox.faults.add_webhook(kind, count)
    hold = p.integer("reorder_hold_ms", minimum=0, maximum=600_000)
    if hold is not None:
        sandbox.faults.reorder_hold = hold / 1000
    return sandbox.faults.snapshot()


def show_faults(sandbox: Sandbox, p: Params) -> JsonDict:
    return sandbox.faults.snapshot()


def clear_faults(sandbox: Sandbox, p: Params) -> JsonDict:
    sandbox.faults.clear()
    return sandbox.faults.snapshot()


def reset(sandbox: Sandbox, p: Params) -> JsonDict:
    sandbox.reset()
    return {"reset": True}


def show_clock(sandbox: Sandbox, p: Params) -> JsonDict:
    return {"now": sandbox.clock.now(), "offset": sandbox.clock.offset}


def advance_clock(sandbox: Sandbox, p: Params) -> JsonDict:
    seconds = p.integer("seconds", required=True, minimum=0, maximum=10 * 365 * 86400)
    assert seconds is not None
    sandbox.advance_server_clock(seconds)
    return show_clock(sandbox, p)


def deliveries(sandbox: Sandbox, p: Params) -> JsonDict:
    wanted = {k: p.text(k) for k in ("event", "endpoint", "status", "type")}
    with sandbox.lock:
        found = [
            dict(d, attempts=[dict(a) for a in d["attempts"]])
            for d in sandbox.store.deliveries.values()
            if all(v is None or d[k] == v for k, v in wanted.items())
        ]
    return {"object": "list", "data": found}


def roll_secret(sandbox: Sandbox, p: Params, endpoint_id: str) -> JsonDict:
    """A new signing secret; the old ones stay valid `expires_in` seconds (Stripe
    lets the Dashboard keep an old secret for up to 24 hours)."""
    expires_in = p.integer("expires_in", minimum=0, maximum=7 * 86400)
    with sandbox.lock:
        endpoint = sandbox.store.get("webhook_endpoint", endpoint_id)
        until = time.time() + (86400 if expires_in is None else expires_in)
        kept = [[s, until if e is None else min(e, until)] for s, e in endpoint["_secrets"]]
        secret = new_secret()
        endpoint["_secrets"] = [[secret, None], *kept]
        sandbox.commit(sandbox.new_ctx())
    return {"id": endpoint_id, "secret": secret}


def request_log(sandbox: Sandbox, p: Params) -> JsonDict:
    path = p.text("path")
    found = [r for r in list(sandbox.requests) if path is None or r["path"] == path]
    return {"object": "list", "data": found}


_ROUTER_ROUTES: list[Route] = [
    route("GET", "/_sandbox/faults", show_faults),
    route("DELETE", "/_sandbox/faults", clear_faults),
    route("POST", "/_sandbox/faults/http", http_fault),
    route("POST", "/_sandbox/faults/drop_connection", drop_connection),
    route("POST", "/_sandbox/faults/latency", latency),
    route("POST", "/_sandbox/faults/webhooks", webhook_faults),
    route("POST", "/_sandbox/reset", reset),
    route("GET", "/_sandbox/clock", show_clock),
    route("POST", "/_sandbox/clock/advance", advance_clock),
    route("GET", "/_sandbox/webhook_deliveries", deliveries),
    route("POST", "/_sandbox/webhook_endpoints/{id}/roll_secret", roll_secret),
    route("GET", "/_sandbox/requests", request_log),
]


_ROUTER = Router(_ROUTER_ROUTES)
