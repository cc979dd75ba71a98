"""The admin portal under /admin: every page needs the admin role. The check is on
the blueprint, so no page can forget it; anyone else logged in gets 404."""

from __future__ import annotations

from flask import Blueprint

from ledger.users.domain import Role
from web.auth import guard

blueprint = Blueprint("admin", __name__, url_prefix="/admin")
guard(blueprint, Role.ADMIN)


# The pages: each module adds its views to `blueprint`.
from web.admin import (  # noqa: E402
    actions,
    calls,
    catalog,
    invoices,
    notifications,
    past_due,
    receipts,
)

__all__ = [
    "actions",
    "blueprint",
    "calls",
    "catalog",
    "invoices",
    "notifications",
    "past_due",
    "receipts",
]
