"""(being built)"""

from __future__ import annotations

from web.admin import blueprint  # noqa: F401
