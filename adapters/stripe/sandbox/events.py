"""Events and webhook endpoints.

Every state change publishes an event whose `data.object` is the object as
served at that moment (`previous_attributes` on `*.updated`). An event's
`created` is the time on the clock of the object it is about (simulated time
for test-clock objects); `/v1/events` serves an event for 30 days of server
clock time after it was recorded, as Stripe serves the last 30 days, so
advancing a test clock hides nothing and `/_sandbox/clock/advance` expires."""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

from adapters.stripe.sandbox.clock import DAY
from adapters.stripe.sandbox.context import API_VERSION, Ctx, public, renders
from adapters.stripe.sandbox.errors import JsonDict, invalid, no_such
from adapters.stripe.sandbox.forms import Params, apply_metadata
from adapters.stripe.sandbox.pagination import list_response, newest_first, range_filter
from adapters.stripe.sandbox.routing import Route, route

RETENTION = 30 * DAY
MAX_TYPES = 20
_EVENT_TYPE = re.compile(r"^(\*|[a-z0-9_]+(\.[a-z0-9_]+)+)$")


def record_event(ctx: Ctx, event_type: str, obj: JsonDict, previous: JsonDict | None) -> JsonDict:
    data: JsonDict = {"object": ctx.render(obj)}
    if previous is not None:
        data["previous_attributes"] = previous
    event = {
        "id": ctx.store.new_id("evt"),
        "object": "event",
        "account": None,
        "api_version": API_VERSION,
        "context": None,
        "created": ctx.now_of(obj),
        "data": data,
        "livemode": False,
        "pending_webhooks": 0,
        "request": {"id": ctx.request_id, "idempotency_key": ctx.idempotency_key},
        "type": event_type,
        "_recorded": ctx.server.now(),
    }
    ctx.store.add("event", event)
    ctx.events.append(event)
    return event


def endpoints_for(ctx: Ctx, event_type: str) -> list[JsonDict]:
    return [
        e
        for e in ctx.store.scan("webhook_endpoint")
        if not e.get("_deleted")
        and e["status"] == "enabled"
        and ("*" in e["enabled_events"] or event_type in e["enabled_events"])
    ]


# Events -----------------------------------------------------------------------------


def _visible(ctx: Ctx, event: JsonDict) -> bool:
    return int(event["_recorded"]) >= ctx.server.now() - RETENTION


def _delivered(ctx: Ctx, event: JsonDict) -> bool:
    """All of the event's deliveries succeeded (an event with none counts as delivered)."""
    return all(
        d["status"] == "succeeded"
        for d in ctx.store.deliveries.values()
        if d["event"] == event["id"]
    )


def retrieve_event(ctx: Ctx, p: Params, event_id: str) -> JsonDict:
    p.finish()
    event = ctx.store.get("event", event_id)
    if not _visible(ctx, event):
        raise no_such("event", event_id)
    return ctx.render(event)


def _type_matcher(p: Params) -> set[str] | None:
    single = p.text("type")
    many = p.strings("types")
    if single and many:
        raise invalid("You may only specify one of these parameters: type, types.", param="types")
    if many is not None and len(many) > MAX_TYPES:
        raise invalid(f"You may pass at most {MAX_TYPES} types.", param="types")
    wanted = [single] if single else many
    return set(wanted) if wanted else None


def _type_matches(event_type: str, wanted: set[str] | None) -> bool:
    if wanted is None:
        return True
    return any(
        event_type == w or (w.endswith(".*") and event_type.startswith(w[:-1])) for w in wanted
    )


def list_events(ctx: Ctx, p: Params) -> JsonDict:
    wanted = _type_matcher(p)
    created = range_filter(p, "created")
    delivery_success = p.boolean("delivery_success")
    found = [
        e
        for e in ctx.store.all("event")
        if _visible(ctx, e)
        and _type_matches(e["type"], wanted)
        and created(e["created"])
        and (delivery_success is None or _delivered(ctx, e) == delivery_success)
    ]
    result = list_response(ctx, p, newest_first(found), "/v1/events")
    p.finish()
    return result


# Webhook endpoints ------------------------------------------------------------------


@renders("webhook_endpoint")
def render_endpoint(ctx: Ctx, endpoint: JsonDict) -> JsonDict:
    if endpoint.get("_deleted"):
        return {"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True}
    return public(endpoint)


def _url(p: Params, required: bool) -> str | None:
    url = p.text("url", required=required)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(
            f"Invalid URL: {url}. URLs must begin with http:// or https://.",
            param="url",
            code="url_invalid",
        )
    return url


def _enabled_events(p: Params, required: bool) -> list[str] | None:
    events = p.strings("enabled_events")
    if events is None and not required:
        return None
    if not events:
        raise invalid(
            "Missing required param: enabled_events.",
            param="enabled_events",
            code="parameter_missing",
        )
    for name in events:
        if not _EVENT_TYPE.match(name):
            raise invalid(
                f"Invalid enabled_events: {name} is not an event type.", param="enabled_events"
            )
    return events


def new_secret() -> str:
    return f"whsec_{secrets.token_urlsafe(24)}"


def create_endpoint(ctx: Ctx, p: Params) -> JsonDict:
    url = _url(p, required=True)
    events = _enabled_events(p, required=True)
    endpoint: JsonDict = {
        "id": ctx.store.new_id("we"),
        "object": "webhook_endpoint",
        "api_version": p.text("api_version") or None,
        "application": None,
        "created": ctx.server.now(),
        "description": p.text("description") or None,
        "enabled_events": events,
        "livemode": False,
        "metadata": apply_metadata({}, p.metadata()),
        "status": "enabled",
        "url": url,
        # (secret, expires_at): more than one while a rolled secret is still honoured.
        "_secrets": [[new_secret(), None]],
    }
    p.boolean("connect")
    p.finish()
    ctx.store.add("webhook_endpoint", endpoint)
    served = ctx.render(endpoint)
    # Stripe returns the signing secret only in the response to create.
    served["secret"] = endpoint["_secrets"][0][0]
    return served


def _live_endpoint(ctx: Ctx, endpoint_id: str) -> JsonDict:
    endpoint = ctx.store.get("webhook_endpoint", endpoint_id)
    if endpoint.get("_deleted"):
        raise no_such("webhook_endpoint", endpoint_id)
    return endpoint


def retrieve_endpoint(ctx: Ctx, p: Params, endpoint_id: str) -> JsonDict:
    p.finish()
    return ctx.render(_live_endpoint(ctx, endpoint_id))


def update_endpoint(ctx: Ctx, p: Params, endpoint_id: str) -> JsonDict:
    endpoint = _live_endpoint(ctx, endpoint_id)
    url = _url(p, required=False)
    events = _enabled_events(p, required=False)
    disabled = p.boolean("disabled")
    given, description = p.optional_text("description")
    metadata = p.metadata()
    p.finish()
    if url:
        endpoint["url"] = url
    if events:
        endpoint["enabled_events"] = events
    if disabled is not None:
        endpoint["status"] = "disabled" if disabled else "enabled"
    if given:
        endpoint["description"] = description
    endpoint["metadata"] = apply_metadata(endpoint["metadata"], metadata)
    return ctx.render(endpoint)


def delete_endpoint(ctx: Ctx, p: Params, endpoint_id: str) -> JsonDict:
    p.finish()
    endpoint = _live_endpoint(ctx, endpoint_id)
    endpoint["_deleted"] = True
    return ctx.render(endpoint)


def list_endpoints(ctx: Ctx, p: Params) -> JsonDict:
    found = [e for e in ctx.store.all("webhook_endpoint") if not e.get("_deleted")]
    result = list_response(ctx, p, newest_first(found), "/v1/webhook_endpoints")
    p.finish()
    return result


ROUTES: list[Route] = [
    route("GET", "/v1/events", list_events),
    route("GET", "/v1/events/{id}", retrieve_event),
    route("POST", "/v1/webhook_endpoints", create_endpoint),
    route("GET", "/v1/webhook_endpoints", list_endpoints),
    route("GET", "/v1/webhook_endpoints/{id}", retrieve_endpoint),
    route("POST", "/v1/webhook_endpoints/{id}", update_endpoint),
    route("DELETE", "/v1/webhook_endpoints/{id}", delete_endpoint),
]
