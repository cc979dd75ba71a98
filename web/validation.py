"""Input validation for views: every query string, form and JSON body goes through
a marshmallow schema, and a value it refuses is a 400 with one clear sentence (an
HTML page for people, `{"error": ...}` for /api/), never a 500."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import abort
from marshmallow import EXCLUDE, Schema, ValidationError, pre_load, validate


def first_error(messages: Any, prefix: str = "") -> str:
    """One sentence from marshmallow's nested messages: the first field and why."""
    if isinstance(messages, Mapping):
        for field, inner in messages.items():
            name = f"{prefix}{field}" if field != "_schema" else prefix.rstrip(".")
            return first_error(inner, f"{name}." if name else "")
    if isinstance(messages, list | tuple) and messages:
        return first_error(messages[0], prefix)
    field = prefix.rstrip(".")
    return f"{field}: {messages}" if field else str(messages)


def load(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` loaded by `schema` (unknown keys ignored), or abort with 400."""
    try:
        loaded: dict[str, Any] = schema.load(dict(data), unknown=EXCLUDE)
    except ValidationError as exc:
        abort(400, description=first_error(exc.messages))
    return loaded


# Printable text only: a NUL reaches PostgreSQL as an error, not as a search.
# `\Z`, not `$`: `$` also matches before a final newline, which let "abc\n" through.
PRINTABLE = validate.Regexp(r"^[^\x00-\x1f\x7f]*\Z", error="must not contain control characters")


class QueryArgs(Schema):
    """A query string or a filter form. A submitted form sends every field, so an
    empty value means "not given", and the page's URLs work on the API too."""

    @pre_load
    def drop_blanks(self, data: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
