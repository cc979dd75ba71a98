"""The JSON API under /api/: bearer tokens (or a session), read-only, documented
at /api/openapi.json (public) generated from the views' schemas (`web.api.spec`).

Tenancy: an admin sees everything; a customer sees its own entity only. Anything
of another entity answers 404, and so does a list asked explicitly for another
entity (`/api/invoices?entity=B`): an empty list would still be an answer about B."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify
from flask_login import current_user

from projections.invoices import InvoiceRow
from web.api.schemas import DocumentOut, MeOut
from web.api.spec import openapi_document, operation
from web.auth import guard

blueprint = Blueprint("api", __name__, url_prefix="/api")
guard(blueprint, None, public=("api.openapi",))

DOCUMENT = "billtrail.openapi"


def visible_entity(entity_id: str | None) -> str | None:
    """The entity a request may see: a customer's own (asking for another is a
    404), or for an admin `entity_id` as given (None: all)."""
    if current_user.is_admin:
        return entity_id
    own: str | None = current_user.entity_id
    # Never None for a customer: that would be the unfiltered list.
    if own is None or (entity_id is not None and entity_id != own):
        abort(404, description="no such entity")
    return own


def mine(entity_id: str) -> bool:
    """Whether the asker may see something of `entity_id`."""
    return bool(current_user.is_admin or entity_id == current_user.entity_id)


def shown(invoice: InvoiceRow) -> bool:
    """Whether the asker may see `invoice`: a customer sees its entity's issued
    invoices, never a draft (as on its Billing pages)."""
    return mine(invoice.entity_id) and (current_user.is_admin or invoice.number is not None)


def answer(schema: Any, value: Any) -> Response:
    return jsonify(schema.dump(value))


@blueprint.get("/me")
@operation(MeOut)
def me() -> Response:
    """Who the token (or session) belongs to."""
    return answer(MeOut(), current_user)


@blueprint.get("/openapi.json")
@operation(DocumentOut, public=True)
def openapi() -> Response:
    """This document (OpenAPI 3), public."""
    # Built once per app, from the URL map as registered.
    document = current_app.extensions.get(DOCUMENT)
    if document is None:
        document = current_app.extensions[DOCUMENT] = openapi_document(current_app)
    return jsonify(document)


# The resources: each module adds its views to `blueprint`.
from web.api import entities, invoices  # noqa: E402

__all__ = ["blueprint", "entities", "invoices"]
