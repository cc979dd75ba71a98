"""(being built)"""

from __future__ import annotations

from flask import render_template

from web.admin import blueprint


@blueprint.get("/notifications")
def notifications() -> str:
    return render_template("error.html", code=501, message="not built yet")
