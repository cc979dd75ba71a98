"""The sandbox over HTTP: a `ThreadingHTTPServer` on a loopback port, either
in-process (`start_sandbox`, for tests and `billtrail demo`) or in the
foreground (`serve_forever`, for `billtrail stripe-sandbox`)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Collection, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from adapters.stripe.sandbox.app import SANDBOX_API_KEY, Sandbox
from adapters.stripe.sandbox.context import API_VERSION
from adapters.stripe.sandbox.control import SandboxControl
from adapters.stripe.sandbox.messages import Request
from adapters.stripe.sandbox.webhooks import DEFAULT_RETRY_DELAYS

log = logging.getLogger("billtrail.stripe_sandbox.http")

MAX_BODY = 1_000_000


class _Handler(BaseHTTPRequestHandler):
    server: SandboxHTTPServer
    # One request per connection: a dropped response then reads as a closed socket.
    protocol_version = "HTTP/1.0"
    server_version = "billtrail-stripe-sandbox"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(max(length, 0), MAX_BODY)) if length else b""
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = Request(self.command, path, query, body, headers)
        response = self.server.sandbox.handle(request)
        if response.drop:
            self.close_connection = True
            return
        payload = json.dumps(response.body or {}, indent=2).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Stripe-Version", API_VERSION)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response is not the sandbox's problem.
        log.debug("connection from %s ended abruptly", client_address, exc_info=True)


def _url(server: SandboxHTTPServer) -> str:
    host, port = server.server_address[:2]
    shown = host if isinstance(host, str) else host.decode()
    return f"http://{'127.0.0.1' if shown in ('0.0.0.0', '') else shown}:{port}"


class RunningSandbox:
    """A sandbox serving HTTP from a daemon thread. `url` is the SDK's
    `base_addresses["api"]`; `api_key` a key it accepts; `control` drives the
    `/_sandbox/` switches; `stop()` (or leaving the `with` block) shuts it down."""

    api_key = SANDBOX_API_KEY

    def __init__(self, sandbox: Sandbox, server: SandboxHTTPServer) -> None:
        self.sandbox = sandbox
        self._server = server
        self.url = _url(server)
        self.port = int(server.server_address[1])
        self.control = SandboxControl(self.url)
        self._thread = threading.Thread(
            target=server.serve_forever,
            name="sandbox-http",
            kwargs={"poll_interval": 0.02},
            daemon=True,
        )
        self._stopped = False

    def _start(self) -> None:
        self.sandbox.start()
        self._thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self.sandbox.stop()

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def start_sandbox(
    port: int = 0,
    state_file: str | Path | None = None,
    *,
    host: str = "127.0.0.1",
    faults_enabled: bool = True,
    seed: str | None = None,
    api_keys: Collection[str] | None = None,
    webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
) -> RunningSandbox:
    """Start a sandbox on `host:port` (0 picks a free port) and return at once."""
    sandbox = Sandbox(
        state_file=state_file,
        faults_enabled=faults_enabled,
        seed=seed,
        api_keys=api_keys,
        webhook_retry_delays=webhook_retry_delays,
    )
    server = SandboxHTTPServer((host, port), sandbox)
    running = RunningSandbox(sandbox, server)
    sandbox.base_url = running.url
    running._start()
    return running


def serve_forever(
    host: str = "127.0.0.1", port: int = 12111, state_file: str | Path | None = None
) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM, then save and return. A port
    in use or an unreadable state file is one line on stderr and exit status 2."""
    try:
        sandbox = Sandbox(state_file=state_file, faults_enabled=True)
        server = SandboxHTTPServer((host, port), sandbox)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"billtrail: stripe-sandbox cannot start: {exc}\n")
        raise SystemExit(2) from None
    sandbox.base_url = _url(server)
    # SIGINT too: a shell starting us in the background would otherwise ignore Ctrl-C.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    sandbox.start()
    sys.stdout.write(
        f"Stripe sandbox listening on {sandbox.base_url} "
        f"(API key {SANDBOX_API_KEY}; state {state_file or 'in memory'})\n"
    )
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
        sandbox.stop()
    sys.stdout.write("Stripe sandbox stopped\n")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
