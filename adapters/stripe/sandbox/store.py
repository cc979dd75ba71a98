"""The sandbox's state: every object in the Stripe shape it is served in, keyed
by object type and id, plus the bookkeeping the API needs (idempotency records,
webhook deliveries, the server clock's offset). Private fields start with `_`
and are never served. Everything is plain JSON, so `--state FILE` is one
`json.dump` written atomically."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from adapters.stripe.sandbox.errors import JsonDict, no_such

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
STATE_VERSION = 1

# Object type -> (id prefix, the noun Stripe uses in "No such ..." messages).
KINDS: dict[str, tuple[str, str]] = {
    "customer": ("cus", "customer"),
    "product": ("prod", "product"),
    "price": ("price", "price"),
    "tax_rate": ("txr", "tax_rate"),
    "payment_method": ("pm", "PaymentMethod"),
    "billing.meter": ("mtr", "billing.meter"),
    "billing.meter_event": ("mevt", "billing.meter_event"),
    "subscription": ("sub", "subscription"),
    "subscription_item": ("si", "subscription_item"),
    "invoice": ("in", "invoice"),
    "invoiceitem": ("ii", "invoiceitem"),
    "credit_note": ("cn", "credit_note"),
    "event": ("evt", "event"),
    "webhook_endpoint": ("we", "webhook_endpoint"),
    "test_helpers.test_clock": ("clock", "test_clock"),
}
PREFIXES = {prefix: kind for kind, (prefix, _) in KINDS.items()}
# Every resource (fixtures3.json name) the sandbox serves, stored or embedded.
SERVED_OBJECTS = (
    *KINDS,
    "line_item",
    "credit_note_line_item",
    "plan",
    "billing.meter_event_adjustment",
    "billing.meter_event_summary",
    "deleted_customer",
    "deleted_invoice",
    "deleted_invoiceitem",
    "deleted_webhook_endpoint",
    "deleted_test_helpers.test_clock",
)


class Store:
    def __init__(self, seed: str | None = None) -> None:
        self.seed = seed or secrets.token_hex(8)
        self.seq = 0
        self.server_offset = 0
        self.objects: dict[str, dict[str, JsonDict]] = {kind: {} for kind in KINDS}
        self.idempotency: dict[str, JsonDict] = {}
        self.deliveries: dict[str, JsonDict] = {}
        self._journal: dict[tuple[str, str], JsonDict | None] | None = None
        self._journal_seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def new_id(self, prefix: str) -> str:
        """Ids look like Stripe's and are a pure function of the seed and a
        counter, so a seeded sandbox replays the same ids."""
        digest = hashlib.sha256(f"{self.seed}:{self.next_seq()}".encode()).digest()
        number = int.from_bytes(digest[:12], "big")
        chars = []
        for _ in range(14):
            number, rest = divmod(number, 62)
            chars.append(_ALPHABET[rest])
        return f"{prefix}_{''.join(chars)}"

    def add(self, kind: str, obj: JsonDict, key: str | None = None) -> JsonDict:
        key = key or obj["id"]
        self._remember(kind, key, self.objects[kind].get(key))
        obj["_seq"] = self.seq
        self.objects[kind][key] = obj
        return obj

    def get(self, kind: str, object_id: str, param: str = "id") -> JsonDict:
        obj = self.lookup(kind, object_id) if isinstance(object_id, str) else None
        if obj is None:
            raise no_such(KINDS[kind][1], str(object_id), param)
        return obj

    def lookup(self, kind: str, key: str) -> JsonDict | None:
        obj = self.objects[kind].get(key)
        if obj is not None:
            self._remember(kind, key, obj)
        return obj

    def peek(self, kind: str, key: str) -> JsonDict:
        """An object known to exist, for a caller that only reads it."""
        return self.objects[kind][key]

    def has(self, kind: str, key: str) -> bool:
        return key in self.objects[kind]

    def find(self, object_id: str) -> JsonDict | None:
        kind = PREFIXES.get(object_id.split("_", 1)[0])
        return self.lookup(kind, object_id) if kind else None

    def all(self, kind: str) -> list[JsonDict]:
        """Every object of a kind, for a caller that may change them."""
        for key, obj in self.objects[kind].items():
            self._remember(kind, key, obj)
        return list(self.objects[kind].values())

    def scan(self, kind: str) -> list[JsonDict]:
        """Every object of a kind, for a caller that only reads them."""
        return list(self.objects[kind].values())

    # The undo journal --------------------------------------------------------------
    # While a request runs, the first access to an object through the methods above
    # keeps a copy of it, so a refused request can be undone by restoring only what
    # it could have touched (copying the whole state per request was too slow).

    def begin(self) -> None:
        self._journal = {}
        self._journal_seq = self.seq

    def end(self) -> None:
        self._journal = None

    def rollback(self) -> None:
        for (kind, key), before in (self._journal or {}).items():
            if before is None:
                self.objects[kind].pop(key, None)
            else:
                self.objects[kind][key] = before
        self.seq = self._journal_seq
        self._journal = None

    def _remember(self, kind: str, key: str, obj: JsonDict | None) -> None:
        if self._journal is not None and (kind, key) not in self._journal:
            self._journal[(kind, key)] = copy.deepcopy(obj) if obj is not None else None

    # Persistence -----------------------------------------------------------------

    def to_json(self) -> JsonDict:
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "seq": self.seq,
            "server_offset": self.server_offset,
            "objects": self.objects,
            "idempotency": self.idempotency,
            "deliveries": self.deliveries,
        }

    @classmethod
    def from_json(cls, data: JsonDict) -> Store:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported sandbox state version {data.get('version')!r}")
        store = cls(seed=data["seed"])
        store.seq = data["seq"]
        store.server_offset = data.get("server_offset", 0)
        for kind in KINDS:
            store.objects[kind] = data["objects"].get(kind, {})
        store.idempotency = data.get("idempotency", {})
        store.deliveries = data.get("deliveries", {})
        return store

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(self.to_json(), out, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path, seed: str | None = None) -> Store:
        if not path.exists() or path.stat().st_size == 0:
            return cls(seed=seed)
        with path.open(encoding="utf-8") as src:
            data: Any = json.load(src)
        return cls.from_json(data)
