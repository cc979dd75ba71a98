"""Money: exact Decimal amounts in one currency, Stripe's minor units, and line
amounts rounded the way Stripe rounds them (half up, to the minor unit)."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import CurrencyMismatch, InvalidAmount
from ledger.money import Money, exponent, line_amount, parse_decimal

# One currency of each exponent Stripe knows: 2 (usd), 0 (jpy), 3 (kwd).
CURRENCIES = {"usd": 2, "eur": 2, "jpy": 0, "krw": 0, "kwd": 3, "bhd": 3}

currencies = st.sampled_from(sorted(CURRENCIES))
minor_units = st.integers(min_value=-(10**15), max_value=10**15)


@st.composite
def money(draw: st.DrawFn, currency: str | None = None) -> Money:
    cur = currency or draw(currencies)
    places = draw(st.integers(min_value=0, max_value=6))
    units = draw(st.integers(min_value=-(10**12), max_value=10**12))
    return Money(Decimal(units).scaleb(-places), cur)


def half_up_minor(quantity: int, unit_price: Decimal, currency: str) -> int:
    """The oracle: exact rational product, rounded half away from zero, in minor units."""
    exact = Fraction(quantity) * Fraction(unit_price) * 10 ** CURRENCIES[currency]
    sign = -1 if exact < 0 else 1
    return sign * math.floor(abs(exact) + Fraction(1, 2))


@pytest.mark.parametrize(("currency", "places"), sorted(CURRENCIES.items()))
def test_each_currency_has_stripes_minor_unit_exponent(currency: str, places: int) -> None:
    assert exponent(currency) == places
    assert exponent(currency.upper()) == places


@given(units=minor_units, currency=currencies)
def test_minor_units_round_trip_exactly(units: int, currency: str) -> None:
    m = Money.from_minor(units, currency)
    assert m.to_minor() == units
    assert m.amount == Fraction(units, 10 ** CURRENCIES[currency])
    assert Money.of(str(m.amount), currency.upper()) == m


def test_minor_units_of_each_exponent() -> None:
    assert Money.from_minor(1234, "usd").amount == Decimal("12.34")
    assert Money.from_minor(1234, "jpy").amount == Decimal("1234")
    assert Money.from_minor(1234, "kwd").amount == Decimal("1.234")
    assert Money.of("12.345", "kwd").to_minor() == 12345
    assert Money.of("500", "JPY").to_minor() == 500


@given(a=money("usd"), b=money("usd"), c=money("usd"))
def test_addition_is_associative_and_commutative(a: Money, b: Money, c: Money) -> None:
    assert (a + b) + c == a + (b + c)
    assert a + b == b + a
    assert (a + b) - b == a
    assert a + Money.zero("usd") == a


@given(a=money(), data=st.data())
def test_combining_two_currencies_raises_currency_mismatch(a: Money, data: st.DataObject) -> None:
    other = data.draw(currencies.filter(lambda c: c != a.currency))
    b = Money(Decimal(1), other)
    with pytest.raises(CurrencyMismatch):
        a + b
    with pytest.raises(CurrencyMismatch):
        a - b
    with pytest.raises(CurrencyMismatch):
        a < b  # noqa: B015
    with pytest.raises(CurrencyMismatch):
        a <= b  # noqa: B015


@given(
    quantity=st.integers(min_value=0, max_value=10**9),
    price_units=st.integers(min_value=0, max_value=10**10),
    places=st.integers(min_value=0, max_value=14),
    currency=currencies,
)
def test_line_amount_is_exact_product_rounded_half_up_to_the_minor_unit(
    quantity: int, price_units: int, places: int, currency: str
) -> None:
    unit_price = Decimal(price_units).scaleb(-places)
    amount = line_amount(quantity, Money(unit_price, currency))
    assert amount.currency == currency
    assert amount.to_minor() == half_up_minor(quantity, unit_price, currency)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        (1, "0.01"),  # 1.25 cents -> 1 cent
        (2, "0.03"),  # 2.5 cents -> 3 cents: half up, not half to even
        (3, "0.04"),  # 3.75 cents -> 4 cents
        (4, "0.05"),
        (1000, "12.50"),
        (0, "0.00"),
    ],
)
def test_sub_cent_unit_price_is_kept_exact_and_only_the_line_is_rounded(
    quantity: int, expected: str
) -> None:
    price = Money.of("0.0125", "usd")
    assert price.amount == Decimal("0.0125")
    assert not price.is_whole_minor()
    assert line_amount(quantity, price) == Money.of(expected, "usd")


def test_negative_half_rounds_away_from_zero() -> None:
    assert line_amount(-2, Money.of("0.0125", "usd")) == Money.of("-0.03", "usd")


@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_floats_are_refused_everywhere(value: float) -> None:
    with pytest.raises(InvalidAmount, match="not float"):
        Money.of(value, "usd")  # type: ignore[arg-type]
    with pytest.raises(InvalidAmount):
        Money(value, "usd")  # type: ignore[arg-type]
    with pytest.raises(InvalidAmount):
        parse_decimal(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money.of("1", "usd") * value  # type: ignore[operator]


def test_booleans_and_non_numbers_are_refused() -> None:
    with pytest.raises(InvalidAmount):
        Money.of(True, "usd")
    with pytest.raises(InvalidAmount):
        Money.from_minor(True, "usd")
    with pytest.raises(InvalidAmount, match="not a number"):
        Money.of("12,50", "usd")
    with pytest.raises(InvalidAmount, match="finite"):
        Money.of("NaN", "usd")
    with pytest.raises(InvalidAmount, match="finite"):
        Money.of("Infinity", "usd")


@pytest.mark.parametrize("code", ["us", "usdd", "u$d", "", "12a", "ÜSD"])
def test_bad_currency_codes_are_refused(code: str) -> None:
    with pytest.raises(InvalidAmount, match="ISO 4217"):
        Money.of("1", code)


def test_currency_is_normalised_to_lower_case() -> None:
    assert Money.of("1", " USD ") == Money.of("1", "usd")


@given(units=minor_units, extra=st.integers(min_value=1, max_value=9), currency=currencies)
def test_non_whole_minor_units_raise_invalid_amount_on_to_minor(
    units: int, extra: int, currency: str
) -> None:
    places = CURRENCIES[currency] + 1
    amount = Decimal(units * 10 + extra).scaleb(-places)  # one digit below the minor unit
    m = Money(amount, currency)
    assert not m.is_whole_minor()
    with pytest.raises(InvalidAmount, match="not a whole number of minor units"):
        m.to_minor()
    assert m.round_minor().is_whole_minor()


def test_an_amount_too_large_for_minor_units_raises_invalid_amount() -> None:
    # 1E+999999 is a finite Decimal; in cents it overflowed (decimal.Overflow, a
    # traceback from `corrections credit --amount 1e999999`).
    with pytest.raises(InvalidAmount, match="too large"):
        Money.of("1e999999", "usd").to_minor()


def test_trailing_zeros_below_the_minor_unit_are_still_whole() -> None:
    assert Money.of("12.3400", "usd").to_minor() == 1234
    assert Money.of("5.000", "jpy").to_minor() == 5
