"""Rate: an entity's contract, bitemporal (valid time `effective_from`, recorded time
the event's timestamp), with fixed fees and links to Stripe prices."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.app import Ledger
from ledger.errors import (
    EntityArchived,
    InvalidAmount,
    InvalidRate,
    LedgerError,
    NotRecordedYet,
    UnknownEntity,
    UnknownRate,
)
from ledger.rates.domain import Rate
from ledger.sources import Source

ADMIN = Source("admin", "admin-1", actor="alice@example.com")
D = Decimal


def head(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


@pytest.fixture
def acme(ledger: Ledger) -> str:
    ledger.register_entity("Acme", "company", ADMIN)
    return "acme"


def test_first_set_rate_contracts_version_one(ledger: Ledger, clock, acme: str) -> None:
    assert ledger.set_rate(acme, D("0.0125"), "USD", date(2026, 1, 1), "signed", ADMIN) is True
    rate = ledger.rate(acme)
    assert rate.currency == "usd"
    [v1] = rate.versions
    assert (v1.version, v1.unit_price, v1.effective_from) == (1, D("0.0125"), date(2026, 1, 1))
    assert v1.recorded_at == clock.now
    assert (v1.reason, v1.source) == ("signed", ADMIN)
    assert type(ledger.history(rate.id)[0]).__name__ == "Contracted"


def test_set_rate_for_an_unknown_entity_raises_and_records_nothing(ledger: Ledger) -> None:
    with pytest.raises(UnknownEntity):
        ledger.set_rate("ghost", D("0.01"), "usd", date(2026, 1, 1), "x", ADMIN)
    assert head(ledger) == 0


def test_rate_of_an_entity_without_a_contract_raises_unknown_rate(ledger: Ledger, acme) -> None:
    with pytest.raises(UnknownRate, match="acme"):
        ledger.rate(acme)
    with pytest.raises(UnknownRate, match="acme"):
        ledger.add_fixed_fee(acme, "setup", "setup", "Setup", D("10"), date(2026, 1, 1), ADMIN)


def test_revision_adds_a_version_and_the_same_revision_is_a_no_op(
    ledger: Ledger, clock, acme: str
) -> None:
    ledger.set_rate(acme, D("0.01"), "usd", date(2026, 1, 1), "signed", ADMIN)
    clock.advance(days=10)
    assert ledger.set_rate(acme, D("0.02"), "usd", date(2026, 2, 1), "new terms", ADMIN) is True
    before = head(ledger)
    clock.advance(days=1)
    assert ledger.set_rate(acme, D("0.020"), "usd", date(2026, 2, 1), "again", ADMIN) is False
    assert ledger.set_rate(acme, D("0.01"), "usd", date(2026, 1, 1), "again", ADMIN) is False
    assert head(ledger) == before
    assert [(v.version, v.unit_price) for v in ledger.rate(acme).versions] == [
        (1, D("0.01")),
        (2, D("0.02")),
    ]


def test_currency_change_is_refused(ledger: Ledger, acme: str) -> None:
    ledger.set_rate(acme, D("0.01"), "usd", date(2026, 1, 1), "signed", ADMIN)
    with pytest.raises(InvalidRate, match="needs a new contract"):
        ledger.set_rate(acme, D("0.01"), "eur", date(2026, 2, 1), "switch", ADMIN)
    assert len(ledger.rate(acme).versions) == 1


@pytest.mark.parametrize(
    ("price", "error", "message"),
    [
        (D("-0.01"), InvalidRate, "cannot be negative"),
        (D("0.000000000000001"), InvalidRate, "at most 14 decimal places"),
        (D("NaN"), InvalidRate, "decimal number"),
        (D("1E+999999"), InvalidRate, "at most 1000000"),  # overflowed usage x rate
        (0.01, InvalidRate, "decimal number"),
    ],
)
def test_bad_prices_are_refused_on_contract_and_revision(
    ledger: Ledger, acme: str, price: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ledger.set_rate(acme, price, "usd", date(2026, 1, 1), "x", ADMIN)  # type: ignore[arg-type]
    ledger.set_rate(acme, D("0.01"), "usd", date(2026, 1, 1), "signed", ADMIN)
    with pytest.raises(error, match=message):
        ledger.set_rate(acme, price, "usd", date(2026, 2, 1), "x", ADMIN)  # type: ignore[arg-type]
    assert head(ledger) == 2


def test_a_bad_currency_code_is_refused(ledger: Ledger, acme: str) -> None:
    with pytest.raises(InvalidAmount, match="ISO 4217"):
        ledger.set_rate(acme, D("0.01"), "dollars", date(2026, 1, 1), "x", ADMIN)


def test_version_on_picks_the_latest_effective_version_and_the_later_recorded_on_ties(
    ledger: Ledger, clock, acme: str
) -> None:
    ledger.set_rate(acme, D("0.01"), "usd", date(2026, 1, 10), "signed", ADMIN)
    clock.advance(hours=1)
    ledger.set_rate(acme, D("0.02"), "usd", date(2026, 3, 1), "march", ADMIN)
    clock.advance(hours=1)
    ledger.set_rate(acme, D("0.03"), "usd", date(2026, 3, 1), "march, corrected", ADMIN)
    assert ledger.rate_on(acme, date(2026, 1, 9)) is None
    assert ledger.rate_on(acme, date(2026, 1, 10)).unit_price == D("0.01")
    assert ledger.rate_on(acme, date(2026, 2, 28)).unit_price == D("0.01")
    on_march = ledger.rate_on(acme, date(2026, 3, 1))
    assert (on_march.version, on_march.unit_price) == (3, D("0.03"))


def test_a_correction_recorded_on_5_march_effective_1_february_answers_both_ways(
    ledger: Ledger, clock, acme: str
) -> None:
    clock.set(datetime(2026, 1, 1, 8, 0, tzinfo=UTC))
    ledger.set_rate(acme, D("0.0100"), "usd", date(2026, 1, 1), "signed", ADMIN)
    corrected_at = clock.set(datetime(2026, 3, 5, 14, 30, tzinfo=UTC))
    ledger.set_rate(acme, D("0.0080"), "usd", date(2026, 2, 1), "discount agreed in Jan", ADMIN)
    clock.advance(days=30)

    feb_10 = date(2026, 2, 10)
    # As the ledger knew it before the correction: February still at the old price.
    before = ledger.rate_on(acme, feb_10, as_recorded=datetime(2026, 3, 4, tzinfo=UTC))
    assert (before.version, before.unit_price) == (1, D("0.0100"))
    just_before = ledger.rate_on(acme, feb_10, as_recorded=corrected_at - timedelta(microseconds=1))
    assert just_before.version == 1
    # From the correction's recorded time on: February at the corrected price.
    at = ledger.rate_on(acme, feb_10, as_recorded=corrected_at)
    assert (at.version, at.unit_price, at.effective_from) == (2, D("0.0080"), date(2026, 2, 1))
    assert at.recorded_at == corrected_at
    assert at.reason == "discount agreed in Jan"
    assert ledger.rate_on(acme, feb_10).version == 2
    # January was never corrected: both answers agree.
    jan_20 = date(2026, 1, 20)
    assert ledger.rate_on(acme, jan_20, as_recorded=corrected_at - timedelta(days=1)).version == 1
    assert ledger.rate_on(acme, jan_20).version == 1
    # Before the contract was recorded there is no rate to ask about.
    with pytest.raises(NotRecordedYet):
        ledger.rate_on(acme, feb_10, as_recorded=datetime(2025, 12, 31, tzinfo=UTC))


def test_fixed_fees_are_added_ended_and_apply_by_valid_time(
    ledger: Ledger, clock, acme: str
) -> None:
    ledger.set_rate(acme, D("0.01"), "usd", date(2026, 1, 1), "signed", ADMIN)
    assert ledger.add_fixed_fee(
        acme, "min", "monthly_minimum", "Monthly minimum", D("49.00"), date(2026, 1, 1), ADMIN
    )
    assert ledger.add_fixed_fee(acme, "sup", "addon", "Support", D("10"), date(2026, 2, 1), ADMIN)
    # The same fee again is a no-op; other terms under the same id are refused.
    assert not ledger.add_fixed_fee(
        acme, "min", "monthly_minimum", "Monthly minimum", D("49.00"), date(2026, 1, 1), ADMIN
    )
    with pytest.raises(InvalidRate, match="other terms"):
        ledger.add_fixed_fee(
            acme, "min", "monthly_minimum", "Min", D("59"), date(2026, 1, 1), ADMIN
        )
    assert ledger.end_fixed_fee(acme, "min", date(2026, 3, 1), "renegotiated", ADMIN) is True
    assert ledger.end_fixed_fee(acme, "min", date(2026, 3, 1), "again", ADMIN) is False
    rate = ledger.rate(acme)
    assert rate.fees["min"].effective_until == date(2026, 3, 1)
    assert [f.fee_id for f in rate.fees_on(date(2026, 1, 15))] == ["min"]
    assert sorted(f.fee_id for f in rate.fees_on(date(2026, 2, 28))) == ["min", "sup"]
    assert [f.fee_id for f in rate.fees_on(date(2026, 3, 1))] == ["sup"]


@pytest.mark.parametrize(
    ("kind", "amount", "message"),
    [
        ("discount", D("1"), "fee kind must be"),
        ("setup", D("-1"), "cannot be negative"),
        ("setup", 0.1, "must be a decimal amount"),  # a float would be stored for good
        ("setup", D("Infinity"), "must be a decimal amount"),
    ],
)
def test_bad_fees_are_refused(
    ledger: Ledger, acme: str, kind: str, amount: object, message: str
) -> None:
    ledger.set_rate(acme, D("0.01"), "usd", date(2026, 1, 1), "signed", ADMIN)
    with pytest.raises(InvalidRate, match=message):
        ledger.add_fixed_fee(acme, "f", kind, "Fee", amount, date(2026, 1, 1), ADMIN)  # type: ignore[arg-type]
    assert ledger.rate(acme).fees == {}


def test_ending_an_unknown_fee_or_before_its_start_is_refused(ledger: Ledger, acme: str) -> None:
    ledger.set_rate(acme, D("0.01"), "usd", date(2026, 1, 1), "signed", ADMIN)
    ledger.add_fixed_fee(acme, "setup", "setup", "Setup", D("99"), date(2026, 2, 1), ADMIN)
    with pytest.raises(InvalidRate, match="no fee"):
        ledger.end_fixed_fee(acme, "nope", date(2026, 3, 1), "x", ADMIN)
    with pytest.raises(InvalidRate, match="cannot end before it starts"):
        ledger.end_fixed_fee(acme, "setup", date(2026, 1, 31), "x", ADMIN)


def test_stripe_prices_link_to_exactly_one_version_or_fee(ledger: Ledger, acme: str) -> None:
    ledger.set_rate(acme, D("0.01"), "usd", date(2026, 1, 1), "signed", ADMIN)
    ledger.set_rate(acme, D("0.02"), "usd", date(2026, 2, 1), "raise", ADMIN)
    ledger.add_fixed_fee(acme, "setup", "setup", "Setup", D("99"), date(2026, 1, 1), ADMIN)
    assert ledger.link_stripe_price(acme, "price_v2", ADMIN, version=2) is True
    assert ledger.link_stripe_price(acme, "price_v2", ADMIN, version=2) is False
    assert ledger.link_stripe_price(acme, "price_fee", ADMIN, fee_id="setup") is True
    rate = ledger.rate(acme)
    assert [v.stripe_price_id for v in rate.versions] == [None, "price_v2"]
    assert rate.fees["setup"].stripe_price_id == "price_fee"
    for kwargs, message in [
        ({}, "exactly one"),
        ({"version": 1, "fee_id": "setup"}, "exactly one"),
        ({"version": 3}, "no version 3"),
        ({"version": 0}, "no version 0"),
        ({"fee_id": "monthly"}, "no fee monthly"),
    ]:
        with pytest.raises(InvalidRate, match=message):
            ledger.link_stripe_price(acme, "price_x", ADMIN, **kwargs)  # type: ignore[arg-type]


def test_replaying_an_import_line_after_a_later_revision_changes_nothing(
    ledger: Ledger, clock, acme: str
) -> None:
    """The contract came from an import file; an admin then corrected the price. The
    same import line applied again (a re-run of the same file) must not undo it."""
    line = Source("import_file", "rates-2026.csv#L2")
    assert ledger.set_rate(acme, D("0.01"), "usd", date(2026, 1, 1), "import", line) is True
    clock.advance(days=1)
    assert ledger.set_rate(acme, D("0.02"), "usd", date(2026, 1, 1), "typo fixed", ADMIN) is True
    before = head(ledger)
    clock.advance(days=1)
    assert ledger.set_rate(acme, D("0.01"), "usd", date(2026, 1, 1), "import", line) is False
    assert head(ledger) == before
    assert ledger.rate_on(acme, date(2026, 1, 1)).unit_price == D("0.02")


def test_rate_ids_are_per_entity(ledger: Ledger) -> None:
    ledger.register_entity("One", "company", ADMIN)
    ledger.register_entity("Two", "company", ADMIN)
    ledger.set_rate("one", D("0.01"), "usd", date(2026, 1, 1), "x", ADMIN)
    ledger.set_rate("two", D("0.05"), "eur", date(2026, 1, 1), "x", ADMIN)
    assert Rate.create_id("one") != Rate.create_id("two")
    assert ledger.rate("one").currency == "usd"
    assert ledger.rate("two").currency == "eur"


def test_rate_on_answers_like_a_bitemporal_model(fresh_ledgers) -> None:
    """Random revisions (price, effective from) recorded one hour apart; for every day
    and every recorded time, `rate_on` gives the version a plain model gives: of the
    versions recorded by then, the latest effective on or before the day, the later
    recorded of two from the same day. A revision equal to the one in force from its
    own day is not recorded at all."""
    prices = st.sampled_from([D("0.01"), D("0.0125"), D("0.02")])
    days = st.integers(min_value=0, max_value=59).map(lambda n: date(2026, 1, 1) + timedelta(n))
    with fresh_ledgers() as (ledger, clock, _raw):
        serial = iter(range(10**6))

        @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            first=st.tuples(prices, days), revisions=st.lists(st.tuples(prices, days), max_size=8)
        )
        def check(first: tuple[Decimal, date], revisions: list[tuple[Decimal, date]]) -> None:
            entity = f"e{next(serial)}"
            ledger.register_entity(entity, "company", ADMIN)
            model: list[tuple[datetime, int, Decimal, date]] = []

            def in_force(day: date, known_at: datetime) -> tuple[int, Decimal, date] | None:
                known = [v for v in model if v[0] <= known_at and v[3] <= day]
                if not known:
                    return None
                _at, version, price, eff = max(known, key=lambda v: (v[3], v[1]))
                return version, price, eff

            for price, eff in [first, *revisions]:
                clock.advance(hours=1)
                now = in_force(eff, clock.now)
                expected = now is None or (now[1], now[2]) != (price, eff)
                recorded = ledger.set_rate(entity, price, "usd", eff, "r", ADMIN)
                assert recorded is expected
                if recorded:
                    model.append((clock.now, len(model) + 1, price, eff))
            times = [m[0] for m in model]
            for known_at in [*times, *(t + timedelta(minutes=30) for t in times)]:
                for day in [date(2025, 12, 31), *(m[3] for m in model), date(2026, 3, 1)]:
                    got = ledger.rate_on(entity, day, as_recorded=known_at)
                    want = in_force(day, known_at)
                    assert (got and (got.version, got.unit_price, got.effective_from)) == want
            with pytest.raises(NotRecordedYet):
                ledger.rate_on(entity, date(2026, 1, 1), as_recorded=times[0] - timedelta(1))

        check()


def test_the_rate_of_an_archived_entity_cannot_change(ledger: Ledger, acme: str) -> None:
    ledger.set_rate(acme, Decimal("0.01"), "eur", date(2026, 1, 1), "contract", ADMIN)
    ledger.archive_entity(acme, "left", ADMIN)
    before = head(ledger)
    with pytest.raises(EntityArchived, match="archived"):
        ledger.set_rate(acme, Decimal("0.02"), "eur", date(2026, 2, 1), "rise", ADMIN)
    assert head(ledger) == before


def test_a_point_in_time_without_an_offset_is_refused(ledger: Ledger, acme: str) -> None:
    ledger.set_rate(acme, Decimal("0.01"), "eur", date(2026, 1, 1), "contract", ADMIN)
    with pytest.raises(LedgerError, match="UTC offset"):
        ledger.rate(acme, as_recorded=datetime(2026, 1, 1, 12, 0))  # noqa: DTZ001
