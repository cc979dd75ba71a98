"""How the pages show money, dates and statuses: one place, as Jinja filters.
Amounts are Decimal all the way; a status is always text AND a colour (never
colour alone), so it reads the same to everyone."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from flask import Flask
from markupsafe import Markup, escape

STATUS_LABELS = {
    "draft": "Draft",
    "open": "Open",
    "paid": "Paid",
    "past_due": "Past Due",
    "uncollectible": "Uncollectible",
    "void": "Void",
}
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£"}


def money(amount: Decimal | None, currency: str = "usd") -> str:
    """`$1,234.50`, `€12.00`, `CHF 3.10`; sub-cent amounts keep their digits."""
    if amount is None:
        return ""
    sign = "-" if amount < 0 else ""
    digits = abs(amount)
    places = max(2, -digits.normalize().as_tuple().exponent)  # type: ignore[operator]
    text = f"{digits:,.{places}f}"
    symbol = _SYMBOLS.get(currency.lower())
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{currency.upper()} {text}"


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status.replace("_", " ").title())


def status_badge(status: str) -> Markup:
    css = escape(status.replace("_", "-"))
    return Markup(f'<span class="status status-{css}">{escape(status_label(status))}</span>')


def day(value: date | datetime | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return value.isoformat()


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(
        money=money, status_label=status_label, status_badge=status_badge, day=day
    )
    app.jinja_env.globals.update(STATUS_LABELS=STATUS_LABELS)
