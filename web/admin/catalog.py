"""Entities and Rates. Entities: every billable entity as it is now, with links to
its rates and calls. Rates: each entity's per-call rate with its full history in
both times (valid time: from when a price applies; recorded time: when the ledger
learnt it), drawn as a timeline, and the table of versions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from flask import abort, render_template, request
from markupsafe import Markup
from marshmallow import Schema, fields, validate

from projections.entities import list_entities
from projections.rates import RateRow, RateVersionRow, list_rates, rate_of
from web.admin import blueprint
from web.charts import Span, timeline
from web.formatting import money
from web.services import services
from web.validation import load

# An entity id as the ledger accepts it (ledger/entities/domain.py).
ENTITY_ID = validate.Regexp(
    r"^[a-z0-9][a-z0-9-]{0,62}$", error="must be an entity id (lower-case letters, digits, -)"
)


class RatesArgs(Schema):
    entity = fields.String(validate=ENTITY_ID)


@dataclass(frozen=True)
class VersionView:
    """A rate version with when it is in force as known now: from its valid day to
    the next later valid day (None: still), or never (`superseded`: a later
    recording for the same day replaced it); `late`: recorded after it took effect."""

    row: RateVersionRow
    until: date | None
    superseded: bool
    late: bool


def version_views(versions: Sequence[RateVersionRow]) -> list[VersionView]:
    """Each version's span in force. The price on a day is the version with the
    latest valid day on or before it, the later recorded of two on the same day
    (ledger.rates.domain.Rate.version_on); so a version holds from its day to the
    next later day, unless a later recording has its very day."""
    views = []
    for v in versions:
        superseded = any(
            w.effective_from == v.effective_from and w.version > v.version for w in versions
        )
        later = [w.effective_from for w in versions if w.effective_from > v.effective_from]
        late = v.recorded_at.date() > v.effective_from
        views.append(
            VersionView(v, None if superseded else min(later, default=None), superseded, late)
        )
    return views


def rate_chart(rate: RateRow, views: Sequence[VersionView]) -> Markup:
    spans = [
        Span(
            lane=f"v{x.row.version} · {money(x.row.unit_price, rate.currency)}",
            start=x.row.effective_from,
            end=x.until,
            recorded=x.row.recorded_at.date(),
            superseded=x.superseded,
            late=x.late,
        )
        for x in views
    ]
    said = "; ".join(
        f"version {x.row.version} {money(x.row.unit_price, rate.currency)} from "
        f"{x.row.effective_from}"
        + (" (superseded)" if x.superseded else "")
        + f", recorded {x.row.recorded_at.date()}"
        + (" after it took effect" if x.late else "")
        for x in views
    )
    return timeline(
        spans,
        title=f"Rate history of {rate.entity_id}",
        desc=f"Bars: when each version is in force (valid time); diamonds: when it was "
        f"recorded. {said}.",
    )


@blueprint.get("/entities")
def entities() -> str:
    s = services()
    return render_template(
        "admin/entities.html",
        entities=list_entities(s.store),
        dashboard=s.settings.stripe_dashboard,
    )


@blueprint.get("/rates")
def rates() -> str:
    entity = load(RatesArgs(), request.args).get("entity")
    store = services().store
    found = list_rates(store) if entity is None else [rate_of(store, entity)]
    if None in found:
        abort(404, description=f"No entity {entity} with a rate.")
    shown = [(r, views := version_views(r.versions), rate_chart(r, views)) for r in found if r]
    return render_template("admin/rates.html", rates=shown, entity=entity)
