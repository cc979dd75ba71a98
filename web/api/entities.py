"""/api/entities: the billable entities (a customer sees its own only) and an
entity's calls for a period, a page at a time."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import date, datetime

from flask import Response, abort, request

from projections.calls import calls_of
from projections.entities import EntityRow, get_entity, list_entities
from web.api import answer, blueprint, mine
from web.api.schemas import CallPageOut, CallsQuery, EntityListOut, EntityOut, EntityPath
from web.api.spec import operation
from web.services import services
from web.validation import load

CallCursor = tuple[date, datetime, str]


@blueprint.get("/entities")
@operation(EntityListOut)
def entities() -> Response:
    """The billable entities by name (a customer: its own)."""
    rows = [e for e in list_entities(services().store) if mine(e.entity_id)]
    return answer(EntityListOut(), {"entities": rows})


def _entity(entity_id: str) -> EntityRow:
    entity_id = load(EntityPath(), {"entity_id": entity_id})["entity_id"]
    found = get_entity(services().store, entity_id) if mine(entity_id) else None
    if found is None:
        abort(404, description=f"no entity {entity_id!r}")
    return found


@blueprint.get("/entities/<entity_id>")
@operation(EntityOut, path=EntityPath, errors=(404,))
def entity(entity_id: str) -> Response:
    """One billable entity."""
    return answer(EntityOut(), _entity(entity_id))


@blueprint.get("/entities/<entity_id>/calls")
@operation(CallPageOut, path=EntityPath, query=CallsQuery, errors=(404,))
def calls(entity_id: str) -> Response:
    """An entity's calls on the days [from, to), in time order, a page at a time."""
    found = _entity(entity_id)
    args = load(CallsQuery(), request.args)
    after = _decode(args["after"], args["from_"], args["to"])
    page = calls_of(
        services().store,
        found.entity_id,
        args["from_"],
        args["to"],
        limit=args["limit"],
        after=after,
    )
    return answer(
        CallPageOut(),
        {
            "entity_id": found.entity_id,
            "calls": page.rows,
            "next_cursor": _encode(page.next_cursor) if page.next_cursor else None,
        },
    )


def _encode(cursor: CallCursor) -> str:
    day, started_at, call_id = cursor
    raw = json.dumps([day.isoformat(), started_at.isoformat(), call_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(text: str | None, start: date, end: date) -> CallCursor | None:
    """A cursor this list gave out, for a day of the period asked; else a 400."""
    if text is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        day_text, started_text, call_id = json.loads(raw)
        day = date.fromisoformat(day_text)
        started_at = datetime.fromisoformat(started_text)
        if not (start <= day < end and started_at.tzinfo and isinstance(call_id, str)):
            raise ValueError(text)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        abort(400, description="after: the page cursor does not belong to this list")
    return day, started_at, call_id
