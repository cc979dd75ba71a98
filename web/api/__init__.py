"""(being built) The JSON API under /api/: bearer tokens (or a session), OpenAPI."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask_login import current_user

from web.auth import guard

blueprint = Blueprint("api", __name__, url_prefix="/api")
guard(blueprint, None, public=("api.openapi",))


@blueprint.get("/me")
def me() -> Response:
    """Who the token (or session) belongs to."""
    return jsonify(
        email=current_user.email, role=current_user.role, entity_id=current_user.entity_id
    )
