"""`expand[]`: replace an id at a dotted path with the object it names, as
Stripe does (`customer`, `data.customer` on lists, `lines.data.price`...), up
to Stripe's four levels."""

from __future__ import annotations

from typing import Any

from adapters.stripe.sandbox.context import Ctx
from adapters.stripe.sandbox.errors import JsonDict, invalid

MAX_DEPTH = 4


def expand(ctx: Ctx, obj: JsonDict, paths: list[str]) -> JsonDict:
    for path in paths:
        segments = path.split(".")
        if len(segments) > MAX_DEPTH + 1 or not all(segments):
            raise invalid(
                f"You cannot expand more than {MAX_DEPTH} levels of a property: {path}",
                param="expand",
            )
        obj = _expand_at(ctx, obj, segments, path)
    return obj


def _expand_at(ctx: Ctx, value: Any, segments: list[str], path: str) -> Any:
    if not segments:
        return value
    if isinstance(value, list):
        return [_expand_at(ctx, v, segments, path) for v in value]
    if not isinstance(value, dict):
        return value
    head, rest = segments[0], segments[1:]
    if head not in value:
        raise invalid(f"This property cannot be expanded ({head}).", param="expand")
    child = value[head]
    if isinstance(child, str):
        found = ctx.store.find(child)
        if found is None:
            raise invalid(f"This property cannot be expanded ({head}).", param="expand")
        child = ctx.render(found)
    value[head] = _expand_at(ctx, child, rest, path)
    return value
