"""Idempotency keys on POST, with Stripe's rules: the first response for a key
is saved (errors and 500s included, but not a request refused by parameter
validation) and replayed to any retry; the same key with other parameters is a
400 `idempotency_error`; a key whose first request is still executing is a
409; keys are forgotten after 24 hours."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass

from adapters.stripe.sandbox.clock import DAY
from adapters.stripe.sandbox.errors import (
    JsonDict,
    idempotency_in_use,
    idempotency_mismatch,
    invalid,
)
from adapters.stripe.sandbox.store import Store

RETENTION = DAY
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Saved:
    status: int
    body: JsonDict
    headers: dict[str, str]


def fingerprint(method: str, path: str, pairs: list[tuple[str, str]]) -> str:
    canonical = json.dumps([method, path, sorted(pairs)])
    return hashlib.sha256(canonical.encode()).hexdigest()


class Idempotency:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()

    def in_flight(self, key: str) -> bool:
        with self._lock:
            return key in self._in_flight

    def begin(self, key: str, print_: str, now: int) -> Saved | None:
        """The saved response to replay, or None after claiming the key."""
        if len(key) > MAX_KEY_LENGTH:
            raise invalid(f"Idempotency keys are at most {MAX_KEY_LENGTH} characters.")
        with self._lock:
            if key in self._in_flight:
                raise idempotency_in_use(key)
            record = self._store.idempotency.get(key)
            if record is not None and record["created"] > now - RETENTION:
                if record["fingerprint"] != print_:
                    raise idempotency_mismatch(key)
                return Saved(record["status"], record["body"], dict(record["headers"]))
            self._in_flight.add(key)
            return None

    def finish(self, key: str, print_: str, saved: Saved | None, now: int) -> None:
        with self._lock:
            self._in_flight.discard(key)
            if saved is not None:
                self._store.idempotency[key] = {
                    "fingerprint": print_,
                    "status": saved.status,
                    "body": saved.body,
                    "headers": saved.headers,
                    "created": now,
                }

    def prune(self, now: int) -> None:
        with self._lock:
            expired = [
                k for k, r in self._store.idempotency.items() if r["created"] <= now - RETENTION
            ]
            for key in expired:
                del self._store.idempotency[key]

    def reset(self, store: Store) -> None:
        with self._lock:
            self._store = store
            self._in_flight.clear()
