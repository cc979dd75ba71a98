"""(being built) "Your Billing": a customer's own invoices and receipts."""

from __future__ import annotations

from flask import Blueprint, render_template

from ledger.users.domain import Role
from web.auth import guard

blueprint = Blueprint("billing", __name__, url_prefix="/billing")
guard(blueprint, Role.CUSTOMER)


@blueprint.get("")
def home() -> str:
    return render_template("error.html", code=501, message="not built yet")
