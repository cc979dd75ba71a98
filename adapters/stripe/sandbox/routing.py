"""Routes: `(method, "/v1/invoices/{id}/pay", handler)`. A handler is called
as `handler(ctx, params, *path_args)` and returns the JSON to serve."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Handler = Callable[..., Any]
_ARG = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


def route(method: str, template: str, handler: Handler) -> Route:
    regex = _ARG.sub(r"([^/]+)", re.escape(template).replace(r"\{", "{").replace(r"\}", "}"))
    return Route(method, re.compile(f"^{regex}$"), handler)


class Router:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = list(routes)

    def match(self, method: str, path: str) -> tuple[Handler, tuple[str, ...]] | None:
        for candidate in self._routes:
            if candidate.method != method:
                continue
            found = candidate.pattern.match(path)
            if found:
                return candidate.handler, found.groups()
        return None
