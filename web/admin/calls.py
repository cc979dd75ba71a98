"""(being built)"""

from __future__ import annotations

from flask import render_template

from web.admin import blueprint


@blueprint.get("/calls")
def calls() -> str:
    return render_template("error.html", code=501, message="not built yet")
