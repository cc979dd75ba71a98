"""(being built)"""

from __future__ import annotations

from flask import render_template

from web.admin import blueprint


@blueprint.get("/entities")
def entities() -> str:
    return render_template("error.html", code=501, message="not built yet")


@blueprint.get("/rates")
def rates() -> str:
    return render_template("error.html", code=501, message="not built yet")
