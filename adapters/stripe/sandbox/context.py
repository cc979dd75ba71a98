"""What a handler sees: the store, the clocks, who is asking, and how to
publish an event. Renderers (object type -> served JSON) are registered here
by the resource modules, so events, expansion and responses all serve an
object the same way."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.stripe.sandbox.clock import ServerClock
from adapters.stripe.sandbox.errors import JsonDict
from adapters.stripe.sandbox.store import Store

API_VERSION = "2026-10-28.endive"

Renderer = Callable[["Ctx", JsonDict], JsonDict]
_RENDERERS: dict[str, Renderer] = {}


def renders(object_type: str) -> Callable[[Renderer], Renderer]:
    def register(fn: Renderer) -> Renderer:
        _RENDERERS[object_type] = fn
        return fn

    return register


def public(obj: JsonDict) -> JsonDict:
    """A deep copy without the private `_` fields."""
    return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}


@dataclass
class Ctx:
    store: Store
    server: ServerClock
    publish: Callable[[Ctx, str, JsonDict, JsonDict | None], JsonDict]
    base_url: str = ""
    request_id: str | None = None
    idempotency_key: str | None = None
    advance_clock: Callable[[str], None] = lambda clock_id: None
    # Events published by this request; webhooks go out only once it commits.
    events: list[JsonDict] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def now(self, clock_id: str | None) -> int:
        if clock_id:
            clock = self.store.objects["test_helpers.test_clock"].get(clock_id)
            if clock is not None:
                return int(clock["frozen_time"])
        return self.server.now()

    def now_of(self, obj: JsonDict) -> int:
        return self.now(clock_of(obj))

    def render(self, obj: JsonDict) -> JsonDict:
        renderer = _RENDERERS.get(obj.get("object", ""))
        return renderer(self, obj) if renderer else public(obj)

    def emit(self, event_type: str, obj: JsonDict, previous: JsonDict | None = None) -> JsonDict:
        return self.publish(self, event_type, obj, previous)

    def emit_updated(self, event_type: str, obj: JsonDict, before: JsonDict) -> None:
        """`*.updated` with `previous_attributes`: the top-level fields that changed."""
        after = self.render(obj)
        previous = {k: v for k, v in before.items() if after.get(k) != v}
        if previous:
            self.emit(event_type, obj, previous)


def clock_of(obj: JsonDict) -> str | None:
    if obj.get("object") == "test_helpers.test_clock":
        return str(obj["id"])
    clock = obj.get("test_clock")
    return clock if isinstance(clock, str) else None
