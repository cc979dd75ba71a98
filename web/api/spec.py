"""The OpenAPI 3 document of /api/, generated. A view declares what it takes and
answers with `@operation(...)` (marshmallow schemas); the document walks the app's
URL map, so every /api/ route is in it with the schemas the view really loads and
dumps. A route without a declaration fails the document's test, not silently."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema

from billtrail.explain_schema import DecimalString
from web.api.schemas import ErrorOut

F = TypeVar("F", bound=Callable[..., Any])

ATTRIBUTE = "api_operation"
TITLE = "billtrail API"
VERSION = "1"
ERROR_TEXT = {
    400: "Bad input: `error` says which parameter and why.",
    401: "No login: send `Authorization: Bearer <token>`.",
    404: "No such thing, or not yours.",
}


@dataclass(frozen=True)
class Operation:
    response: type[Schema]
    query: type[Schema] | None = None
    path: type[Schema] | None = None
    errors: tuple[int, ...] = (401,)
    public: bool = False


def operation(
    response: type[Schema],
    *,
    query: type[Schema] | None = None,
    path: type[Schema] | None = None,
    errors: tuple[int, ...] = (),
    public: bool = False,
) -> Callable[[F], F]:
    """Declare a view's parameters and answer for the document. Errors 401 (unless
    `public`) and 400 (when it takes parameters) are added."""
    implied = (() if public else (401,)) + ((400,) if query or path else ())
    declared = Operation(response, query, path, tuple(sorted({*implied, *errors})), public)

    def mark(view: F) -> F:
        setattr(view, ATTRIBUTE, declared)
        return view

    return mark


_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def openapi_document(app: Flask) -> dict[str, Any]:
    """The document for every route of the `api` blueprint."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title=TITLE,
        version=VERSION,
        openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": "Invoices, explanations, entities and calls, read-only."},
    )
    # apispec is untyped: called through Any.
    untyped: Any = plugin
    untyped.map_to_openapi_type(DecimalString, "string", "decimal")
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", schema=ErrorOut)
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.endpoint.startswith("api."):
            continue
        view = app.view_functions[rule.endpoint]
        declared: Operation | None = getattr(view, ATTRIBUTE, None)
        if declared is None:
            continue
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        spec.path(
            path=_ARGUMENT.sub(r"{\1}", rule.rule),
            operations={m.lower(): _operation(rule.endpoint, view, declared) for m in methods},
        )
    document: dict[str, Any] = spec.to_dict()
    return document


def undocumented(app: Flask) -> list[str]:
    """The /api/ routes with no `@operation` (the document's test wants none)."""
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("api.")
        and getattr(app.view_functions[rule.endpoint], ATTRIBUTE, None) is None
    )


def _operation(endpoint: str, view: Callable[..., Any], declared: Operation) -> dict[str, Any]:
    doc = (view.__doc__ or endpoint).strip()
    summary, _, description = doc.partition("\n")
    parameters: list[dict[str, Any]] = []
    if declared.path is not None:
        parameters.append({"in": "path", "schema": declared.path})
    if declared.query is not None:
        parameters.append({"in": "query", "schema": declared.query})
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": declared.response}},
        }
    }
    for code in declared.errors:
        responses[str(code)] = {
            "description": ERROR_TEXT.get(code, "Error"),
            "content": {"application/json": {"schema": "Error"}},
        }
    op: dict[str, Any] = {
        "operationId": endpoint.removeprefix("api."),
        "summary": summary.strip(),
        "parameters": parameters,
        "responses": responses,
        "security": [] if declared.public else [{"bearer": []}],
    }
    if description.strip():
        op["description"] = " ".join(description.split())
    return op
