"""The sandbox as a function from request to response, free of HTTP: auth,
parameter decoding, fault switches, idempotency, then the handler under one
lock. A POST or DELETE refused with an `invalid_request_error` (or failing
unexpectedly) is rolled back whole, so a bad request changes nothing; webhook
deliveries are queued only for what was committed."""

from __future__ import annotations

import base64
import binascii
import copy
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qsl

from adapters.stripe.sandbox import (
    catalog,
    credit_notes,
    customers,
    events,
    invoices,
    meters,
    sandbox_api,
    subscriptions,
    test_clocks,
)
from adapters.stripe.sandbox.clock import ServerClock
from adapters.stripe.sandbox.context import Ctx
from adapters.stripe.sandbox.errors import (
    JsonDict,
    StripeError,
    api_error,
    authentication,
    unrecognized_url,
)
from adapters.stripe.sandbox.expand import expand
from adapters.stripe.sandbox.faults import Faults, HttpFault
from adapters.stripe.sandbox.forms import Params, decode_pairs, expand_paths
from adapters.stripe.sandbox.idempotency import Idempotency, Saved, fingerprint
from adapters.stripe.sandbox.messages import Request, Response, error_response
from adapters.stripe.sandbox.routing import Router
from adapters.stripe.sandbox.store import Store
from adapters.stripe.sandbox.webhooks import DEFAULT_RETRY_DELAYS, Dispatcher

log = logging.getLogger("billtrail.stripe_sandbox")

SANDBOX_API_KEY = "sk_test_billtrail_sandbox"
TEST_KEY_PREFIXES = ("sk_test_", "rk_test_")
MAX_BODY = 1_000_000
NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)
ROUTES = [
    *customers.ROUTES,
    *catalog.ROUTES,
    *meters.ROUTES,
    *subscriptions.ROUTES,
    *invoices.ROUTES,
    *test_clocks.ROUTES,
    *credit_notes.ROUTES,
    *events.ROUTES,
]


class Sandbox:
    def __init__(
        self,
        *,
        state_file: str | Path | None = None,
        faults_enabled: bool = False,
        api_keys: Collection[str] | None = None,
        seed: str | None = None,
        webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        clock_source: Callable[[], float] = time.time,
        base_url: str = "",
    ) -> None:
        self.state_file = Path(state_file) if state_file else None
        self.store = Store.load(self.state_file, seed) if self.state_file else Store(seed)
        self._seed = seed
        self._resets = 0
        self.lock = threading.RLock()
        self.clock = ServerClock(clock_source, self.store.server_offset)
        self.faults_enabled = faults_enabled
        self.faults = Faults()
        self.idempotency = Idempotency(self.store)
        self.dispatcher = Dispatcher(
            self.lock, lambda: self.store, self.faults, webhook_retry_delays, self._persist
        )
        self.router = Router(ROUTES)
        self.requests: deque[JsonDict] = deque(maxlen=5000)
        self.base_url = base_url
        self._api_keys = frozenset(api_keys) if api_keys else None
        self._workers: list[threading.Thread] = []

    # Lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.dispatcher.start()
        with self.lock:
            self.dispatcher.resume()
            advancing = [
                c["id"]
                for c in self.store.all("test_helpers.test_clock")
                if c["status"] == "advancing"
            ]
        for clock_id in advancing:
            self._start_advance(clock_id)

    def stop(self) -> None:
        for worker in list(self._workers):
            worker.join(timeout=30)
        self.dispatcher.stop()
        with self.lock:
            self._persist()

    def reset(self) -> None:
        with self.lock:
            self.dispatcher.clear()
            # A new seed: ids from before the reset must not come back (a webhook
            # consumer deduplicating on event ids would drop the new events).
            self._resets += 1
            seed = f"{self._seed}/reset-{self._resets}" if self._seed else None
            self.store = Store(seed=seed)
            self.idempotency.reset(self.store)
            self.faults.clear()
            self.clock.reset()
            self.requests.clear()
            self._persist()

    def _persist(self) -> None:
        if self.state_file is not None:
            self.store.server_offset = self.clock.offset
            self.store.save(self.state_file)

    # Requests -------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        try:
            if request.path == "/_sandbox" or request.path.startswith("/_sandbox/"):
                return self._handle_control(request)
            return self._handle_api(request)
        except Exception:
            log.exception("sandbox failed on %s %s", request.method, request.path)
            return error_response(api_error())

    def _handle_control(self, request: Request) -> Response:
        if not self.faults_enabled:
            return error_response(unrecognized_url(request.method, request.path))
        return sandbox_api.handle(self, request)

    def _handle_api(self, request: Request) -> Response:
        request_id = f"req_{secrets.token_hex(7)}"
        fault = self._take_fault(request, "before")
        if fault is not None:
            return self._finish(request, self._fault_response(fault, request_id), fault=True)
        try:
            self._authenticate(request.headers)
            pairs = self._pairs(request)
            params = decode_pairs(pairs)
        except StripeError as error:
            return self._finish(request, error_response(error, request_id))
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        if key:
            return self._idempotent(request, params, pairs, key, request_id)
        response, _ = self._execute(request, params, request_id, None)
        return self._finish(request, response)

    def _idempotent(
        self,
        request: Request,
        params: JsonDict,
        pairs: list[tuple[str, str]],
        key: str,
        request_id: str,
    ) -> Response:
        print_ = fingerprint(request.method, request.path, pairs)
        now = self.clock.now()
        try:
            saved = self.idempotency.begin(key, print_, now)
        except StripeError as error:
            return self._finish(request, error_response(error, request_id))
        if saved is not None:
            headers = {**saved.headers, "Idempotent-Replayed": "true"}
            return self._finish(request, Response(saved.status, saved.body, headers), replayed=True)
        keep: Saved | None = None
        try:
            response, store_it = self._execute(request, params, request_id, key)
            if store_it:
                keep = Saved(
                    response.status, copy.deepcopy(response.body or {}), dict(response.headers)
                )
        finally:
            self.idempotency.finish(key, print_, keep, now)
        return self._finish(request, response)

    def _finish(
        self, request: Request, response: Response, *, replayed: bool = False, fault: bool = False
    ) -> Response:
        if not fault:
            after = self._take_fault(request, "after")
            if after is not None:
                response, fault = self._fault_response(after, None), True
        self.requests.append(
            {
                "at": time.time(),
                "method": request.method,
                "path": request.path,
                "idempotency_key": request.headers.get("idempotency-key"),
                "status": response.status,
                "dropped": response.drop,
                "replayed": replayed,
                "fault": fault,
            }
        )
        return response

    def _take_fault(self, request: Request, when: str) -> HttpFault | None:
        if not self.faults_enabled:
            return None
        return self.faults.take_http(request.method, request.path, when)

    def _fault_response(self, fault: HttpFault, request_id: str | None) -> Response:
        if fault.kind == "drop":
            return Response(0, None, drop=True)
        return error_response(fault.error(), request_id)

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        value = headers.get("authorization", "").strip()
        scheme, _, credentials = value.partition(" ")
        key = credentials.strip() if scheme.lower() == "bearer" else ""
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(credentials).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        if not key:
            raise authentication(NO_KEY)
        allowed = key in self._api_keys if self._api_keys else key.startswith(TEST_KEY_PREFIXES)
        if not allowed:
            masked = key[:8] + "*" * max(0, len(key) - 12) + key[-4:]
            raise authentication(f"Invalid API Key provided: {masked}")

    def _pairs(self, request: Request) -> list[tuple[str, str]]:
        pairs = parse_qsl(request.query, keep_blank_values=True, errors="replace")
        if request.method == "POST":
            body = request.body[:MAX_BODY].decode("utf-8", errors="replace")
            pairs += parse_qsl(body, keep_blank_values=True, errors="replace")
        return pairs

    # Execution ------------------------------------------------------------------------

    def new_ctx(self, request_id: str | None = None, key: str | None = None) -> Ctx:
        return Ctx(
            store=self.store,
            server=self.clock,
            publish=events.record_event,
            base_url=self.base_url,
            request_id=request_id,
            idempotency_key=key,
            advance_clock=self._start_advance,
        )

    def _execute(
        self, request: Request, params: JsonDict, request_id: str, key: str | None
    ) -> tuple[Response, bool]:
        delay = (
            self.faults.take_latency(request.method, request.path) if self.faults_enabled else 0.0
        )
        if delay:
            time.sleep(delay)
        with self.lock:
            ctx = self.new_ctx(request_id, key)
            undoable = request.method != "GET"
            if undoable:
                self.store.begin()
            response, commit, store_it = self._run_handler(ctx, request, params)
            if undoable and not commit:
                self.store.rollback()
                ctx.events.clear()
                ctx.after_commit.clear()
            self.store.end()
            self.commit(ctx, persist=request.method != "GET" or bool(ctx.events))
        for hook in ctx.after_commit:
            hook()
        return response, store_it

    def _run_handler(
        self, ctx: Ctx, request: Request, params: JsonDict
    ) -> tuple[Response, bool, bool]:
        """(response, commit the changes, save the response for the idempotency key)."""
        try:
            test_clocks.run_due_jobs(ctx, None, self.clock.now())
            match = self.router.match(request.method, request.path)
            if match is None:
                raise unrecognized_url(request.method, request.path)
            handler, args = match
            body = handler(ctx, Params(params), *args)
            body = expand(ctx, body, expand_paths(params))
            return Response(200, body, {"Request-Id": ctx.request_id or ""}), True, True
        except StripeError as error:
            commit = error.type != "invalid_request_error"
            return error_response(error, ctx.request_id), commit, error.stored_for_idempotency
        except Exception:
            log.exception("sandbox handler failed on %s %s", request.method, request.path)
            return error_response(api_error(), ctx.request_id), False, True

    def commit(self, ctx: Ctx, *, persist: bool = True) -> None:
        """Queue the webhooks of what `ctx` published and save the state (under the lock)."""
        for event in ctx.events:
            self.dispatcher.enqueue(event, events.endpoints_for(ctx, event["type"]))
        ctx.events.clear()
        if persist:
            self._persist()

    # Background work ------------------------------------------------------------------

    def _start_advance(self, clock_id: str) -> None:
        worker = threading.Thread(
            target=self._advance, args=(clock_id,), name=f"sandbox-{clock_id}", daemon=True
        )
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def _advance(self, clock_id: str) -> None:
        with self.lock:
            ctx = self.new_ctx()
            try:
                test_clocks.complete_advance(ctx, clock_id)
            except Exception:
                log.exception("advancing test clock %s failed", clock_id)
            self.commit(ctx)

    def advance_server_clock(self, seconds: int) -> int:
        with self.lock:
            now = self.clock.advance(seconds)
            ctx = self.new_ctx()
            test_clocks.run_due_jobs(ctx, None, now)
            self.idempotency.prune(now)
            self.commit(ctx)
            return now
