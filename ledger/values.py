"""Small immutable values shared by the aggregates. All of them are stored inside
events, so each has a transcoding (ledger.transcoding) and never changes shape
without an upcaster."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

from ledger.errors import LedgerError

LEDGER_NS = uuid5(NAMESPACE_URL, "https://billtrail.invalid/ledger")


def natural_id(kind: str, *parts: str) -> UUID:
    """Deterministic aggregate id from a natural key, so creating twice collides."""
    return uuid5(LEDGER_NS, "/".join((kind, *parts)))


class InvalidPeriod(LedgerError):
    pass


class InvalidLine(LedgerError):
    pass


@dataclass(frozen=True)
class Period:
    """A billing period of whole days: start inclusive, end exclusive."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise InvalidPeriod(f"period end {self.end} is not after its start {self.start}")

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days)]

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day < self.end

    def __str__(self) -> str:
        return f"{self.start} to {self.end - timedelta(days=1)}"


class LineKind(StrEnum):
    USAGE = "usage"
    FEE = "fee"
    ADJUSTMENT = "adjustment"
    TAX = "tax"


@dataclass(frozen=True)
class Line:
    """One invoice line as Stripe billed it. Amounts are Decimal in major units of
    the invoice currency; `unit_amount` keeps sub-cent precision."""

    line_id: str
    kind: str
    description: str
    quantity: Decimal
    unit_amount: Decimal | None
    amount: Decimal
    price_id: str | None = None
    period: Period | None = None

    def __post_init__(self) -> None:
        if self.kind not in LineKind.__members__.values():
            raise InvalidLine(
                f"invoice line kind must be usage, fee, adjustment or tax: {self.kind!r}"
            )
        for name in ("quantity", "unit_amount", "amount"):
            value = getattr(self, name)
            if value is None and name == "unit_amount":
                continue
            if not isinstance(value, Decimal) or not value.is_finite():
                raise InvalidLine(f"invoice line {name} must be a finite Decimal, got {value!r}")
