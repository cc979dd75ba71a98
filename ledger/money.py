"""Money: a Decimal amount in one ISO currency. Never float. Stripe speaks integer
minor units (cents) plus `unit_amount_decimal` strings for sub-cent unit prices; the
conversions here are exact or raise."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from ledger.errors import CurrencyMismatch, InvalidAmount

# Stripe's lists: https://docs.stripe.com/currencies#zero-decimal and #three-decimal.
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])

# Stripe rounds a line's quantity x unit_amount_decimal to the nearest minor unit,
# halves away from zero. Every place that rounds money goes through `round_minor`.
ROUNDING = ROUND_HALF_UP


def exponent(currency: str) -> int:
    """Digits after the decimal point of the currency's minor unit."""
    c = currency.lower()
    if c in ZERO_DECIMAL:
        return 0
    if c in THREE_DECIMAL:
        return 3
    return 2


def normalise_currency(currency: str) -> str:
    c = currency.strip().lower()
    if len(c) != 3 or not c.isascii() or not c.isalpha():
        raise InvalidAmount(f"not an ISO 4217 currency code: {currency!r}")
    return c


def parse_decimal(text: str | int | Decimal, what: str = "amount") -> Decimal:
    """A finite Decimal from user or Stripe text; floats are refused on purpose."""
    if isinstance(text, float | bool):
        raise InvalidAmount(f"{what} must be given as text or Decimal, not {type(text).__name__}")
    try:
        value = Decimal(text.strip() if isinstance(text, str) else text)
    except InvalidOperation as exc:
        raise InvalidAmount(f"{what} is not a number: {text!r}") from exc
    if not value.is_finite():
        raise InvalidAmount(f"{what} is not a finite number: {text!r}")
    return value


@dataclass(frozen=True, order=False)
class Money:
    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, Decimal) or not self.amount.is_finite():
            raise InvalidAmount(f"Money needs a finite Decimal amount, got {self.amount!r}")
        object.__setattr__(self, "currency", normalise_currency(self.currency))

    @classmethod
    def of(cls, amount: str | int | Decimal, currency: str) -> Money:
        return cls(parse_decimal(amount), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    @classmethod
    def from_minor(cls, units: int, currency: str) -> Money:
        if isinstance(units, bool) or not isinstance(units, int):
            raise InvalidAmount(f"minor units must be an integer, got {units!r}")
        return cls(Decimal(units).scaleb(-exponent(currency)), currency)

    def to_minor(self) -> int:
        """Exact integer minor units; an amount with sub-minor digits raises."""
        try:
            scaled = self.amount.scaleb(exponent(self.currency))
        except ArithmeticError as exc:  # decimal.Overflow: an exponent like 1E+999999
            raise InvalidAmount(f"{self.amount} {self.currency.upper()} is too large") from exc
        if scaled != scaled.to_integral_value():
            raise InvalidAmount(
                f"{self.amount} {self.currency.upper()} is not a whole number of minor units"
            )
        return int(scaled)

    def round_minor(self) -> Money:
        """Rounded to the currency's minor unit, as Stripe rounds a line amount."""
        quantum = Decimal(1).scaleb(-exponent(self.currency))
        return Money(self.amount.quantize(quantum, rounding=ROUNDING), self.currency)

    def _check(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(
                f"cannot combine {self.currency.upper()} with {other.currency.upper()}"
            )

    def __add__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount - other.amount, self.currency)

    def __mul__(self, factor: int | Decimal) -> Money:
        if isinstance(factor, bool) or not isinstance(factor, int | Decimal):
            raise TypeError(
                f"Money can be multiplied by int or Decimal, not {type(factor).__name__}"
            )
        return Money(self.amount * factor, self.currency)

    __rmul__ = __mul__

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._check(other)
        return self.amount <= other.amount

    def is_zero(self) -> bool:
        return self.amount == 0

    def __str__(self) -> str:
        return f"{self.amount} {self.currency.upper()}"

    def is_whole_minor(self) -> bool:
        scaled = self.amount.scaleb(exponent(self.currency))
        return scaled == scaled.to_integral_value()


def line_amount(quantity: Decimal | int, unit_amount: Money) -> Money:
    """quantity x unit price, rounded to the minor unit the way Stripe rounds it."""
    return (unit_amount * Decimal(quantity)).round_minor()
