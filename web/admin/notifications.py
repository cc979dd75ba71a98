"""Notifications: every notice the ledger queued (about which invoice and
transition, to whom, through which channel) with its delivery state: attempts,
the last error, sent / retrying / gave up / withdrawn. Filter by status, or only
the failing ones (a retry due, or given up) that need an admin."""

from __future__ import annotations

from flask import render_template, request
from marshmallow import Schema, fields, validate

from ledger.notifications.domain import DeliveryStatus
from projections.notifications import list_deliveries
from web.admin import blueprint
from web.services import services
from web.validation import load

PAGE = 100
STATUSES = [s.value for s in DeliveryStatus]


class NotificationsArgs(Schema):
    status = fields.String(validate=validate.OneOf(STATUSES))
    failed = fields.Boolean(load_default=False)
    before = fields.Integer(validate=validate.Range(min=1, max=2**62))


@blueprint.get("/notifications")
def notifications() -> str:
    args = {k: v for k, v in request.args.items() if v != ""}  # a form's empty select
    query = load(NotificationsArgs(), args)
    page = list_deliveries(services().store, limit=PAGE, **query)
    return render_template("admin/notifications.html", page=page, query=query, statuses=STATUSES)
