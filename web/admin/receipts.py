"""(being built) The receipt PDF of an invoice, for admins."""

from __future__ import annotations

from web.admin import blueprint  # noqa: F401
