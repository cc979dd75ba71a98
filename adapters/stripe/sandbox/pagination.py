"""List responses as Stripe serves them: newest first, `limit` 1-100 (default
10), `starting_after` / `ending_before` cursors, `has_more`, and the `url` the
SDK's auto-pagination needs. Also the `created`-style range filters."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from adapters.stripe.sandbox.context import Ctx
from adapters.stripe.sandbox.errors import JsonDict, invalid
from adapters.stripe.sandbox.forms import Params

RANGE_OPS = ("gt", "gte", "lt", "lte")


def newest_first(objects: Sequence[JsonDict]) -> list[JsonDict]:
    # Creation order, not `created`: objects on test clocks carry simulated times.
    return sorted(objects, key=lambda o: int(o.get("_seq", 0)), reverse=True)


def list_response(
    ctx: Ctx,
    params: Params,
    objects: Sequence[JsonDict],
    url: str,
    render: Callable[[JsonDict], JsonDict] | None = None,
    id_of: Callable[[JsonDict], str] = lambda o: str(o["id"]),
) -> JsonDict:
    """`objects` already filtered and in the order to serve."""
    limit = params.integer("limit", minimum=1, maximum=100)
    limit = 10 if limit is None else limit
    after = params.text("starting_after")
    before = params.text("ending_before")
    if after and before:
        raise invalid(
            "You may only specify one of these parameters: starting_after, ending_before.",
            param="ending_before",
        )
    ids = [id_of(o) for o in objects]
    if after:
        start = _cursor(ids, after, "starting_after") + 1
        page, has_more = objects[start : start + limit], len(objects) > start + limit
    elif before:
        end = _cursor(ids, before, "ending_before")
        page, has_more = objects[max(0, end - limit) : end], end - limit > 0
    else:
        page, has_more = objects[:limit], len(objects) > limit
    draw = render or ctx.render
    return {"object": "list", "data": [draw(o) for o in page], "has_more": has_more, "url": url}


def _cursor(ids: list[str], cursor: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise invalid(
            f"No such object: '{cursor}'", param=param, code="resource_missing", status=404
        ) from None


def range_filter(params: Params, key: str) -> Callable[[int | None], bool]:
    """`key=ts` or `key[gt|gte|lt|lte]=ts`, Stripe's range filter, parsed once."""
    if not isinstance(params.raw(key), dict):
        exact = params.integer(key)
        return lambda value: exact is None or value == exact
    bounds = params.nested(key)
    assert bounds is not None
    limits = [(op, bounds.integer(op)) for op in RANGE_OPS]
    checks: dict[str, Callable[[int, int], bool]] = {
        "gt": lambda v, b: v > b,
        "gte": lambda v, b: v >= b,
        "lt": lambda v, b: v < b,
        "lte": lambda v, b: v <= b,
    }

    def accept(value: int | None) -> bool:
        if value is None:
            return False
        return all(checks[op](value, b) for op, b in limits if b is not None)

    return accept
