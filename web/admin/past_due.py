"""The past-due queue: every past-due invoice, the longest overdue first, with the
amount still owed, days overdue as of the services clock's today, and the last
notice queued about it; and the aging chart (0-30, 31-60, 61-90, 90+ days)."""

from __future__ import annotations

from flask import render_template

from projections.past_due import past_due_queue
from web.admin import blueprint
from web.charts import aging_chart
from web.services import services


@blueprint.get("/past-due")
def past_due() -> str:
    queue = past_due_queue(services().store, services().clock().date())
    charts = [(c, aging_chart(queue.buckets, c)) for c in queue.currencies]
    return render_template("admin/past_due.html", queue=queue, charts=charts)
