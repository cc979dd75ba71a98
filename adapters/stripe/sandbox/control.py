"""A small client for the `/_sandbox/` endpoints, over HTTP like curl, so the
tests and the demo drive exactly what the README documents."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

JsonDict = dict[str, Any]
T = TypeVar("T")


class SandboxControlError(RuntimeError):
    def __init__(self, status: int, body: JsonDict) -> None:
        super().__init__(f"sandbox control answered {status}: {body}")
        self.status = status
        self.body = body


class SandboxControl:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def call(self, verb: str, route: str, /, **params: Any) -> JsonDict:
        data = {k: _text(v) for k, v in params.items() if v is not None}
        url = f"{self.base_url}{route}"
        body = None
        if verb == "GET":
            url += f"?{urlencode(data)}" if data else ""
        else:
            body = urlencode(data).encode()
        request = urllib.request.Request(url, data=body, method=verb)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                result: JsonDict = json.loads(response.read())
                return result
        except urllib.error.HTTPError as error:
            with error:
                raise SandboxControlError(error.code, json.loads(error.read() or b"{}")) from None

    # Fault switches ------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        when: str = "before",
        should_retry: bool | None = None,
        code: str | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> JsonDict:
        return self.call(
            "POST",
            "/_sandbox/faults/http",
            status=status,
            count=count,
            when=when,
            should_retry=should_retry,
            code=code,
            method=method,
            path=path,
        )

    def drop_connections(
        self,
        count: int = 1,
        *,
        when: str = "before",
        method: str | None = None,
        path: str | None = None,
    ) -> JsonDict:
        return self.call(
            "POST",
            "/_sandbox/faults/drop_connection",
            count=count,
            when=when,
            method=method,
            path=path,
        )

    def add_latency(
        self,
        ms: int,
        count: int | None = None,
        *,
        method: str | None = None,
        path: str | None = None,
    ) -> JsonDict:
        return self.call(
            "POST", "/_sandbox/faults/latency", ms=ms, count=count, method=method, path=path
        )

    def webhook_faults(
        self,
        *,
        drop: int = 0,
        duplicate: int = 0,
        reorder: int = 0,
        reorder_hold_ms: int | None = None,
    ) -> JsonDict:
        return self.call(
            "POST",
            "/_sandbox/faults/webhooks",
            drop=drop,
            duplicate=duplicate,
            reorder=reorder,
            reorder_hold_ms=reorder_hold_ms,
        )

    def faults(self) -> JsonDict:
        return self.call("GET", "/_sandbox/faults")

    def clear_faults(self) -> JsonDict:
        return self.call("DELETE", "/_sandbox/faults")

    # State and clocks ----------------------------------------------------------------

    def reset(self) -> JsonDict:
        return self.call("POST", "/_sandbox/reset")

    def server_time(self) -> int:
        return int(self.call("GET", "/_sandbox/clock")["now"])

    def advance_server_clock(self, seconds: int) -> int:
        return int(self.call("POST", "/_sandbox/clock/advance", seconds=seconds)["now"])

    def roll_webhook_secret(self, endpoint_id: str, expires_in: int | None = None) -> str:
        path = f"/_sandbox/webhook_endpoints/{endpoint_id}/roll_secret"
        return str(self.call("POST", path, expires_in=expires_in)["secret"])

    # Observing -----------------------------------------------------------------------

    def deliveries(self, **filters: str) -> list[JsonDict]:
        found = self.call("GET", "/_sandbox/webhook_deliveries", **filters)["data"]
        return list(found)

    def requests(self, path: str | None = None) -> list[JsonDict]:
        found = self.call("GET", "/_sandbox/requests", path=path)["data"]
        return list(found)

    def wait_for_deliveries(
        self, predicate: Callable[[list[JsonDict]], bool], timeout: float = 10.0, **filters: str
    ) -> list[JsonDict]:
        """Poll the recorded deliveries until `predicate` holds (or fail at the deadline)."""
        return wait_until(lambda: self.deliveries(**filters), predicate, timeout)


def wait_until(
    read: Callable[[], T],
    predicate: Callable[[T], bool],
    timeout: float = 10.0,
    interval: float = 0.02,
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s; last value: {value!r}")
        time.sleep(interval)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
