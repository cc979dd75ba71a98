"""Point in time: an aggregate rebuilt as recorded at T holds exactly the state it had
right after the last command recorded at or before T."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.app import Ledger
from ledger.entities.domain import NOTIFICATION_TOPICS
from ledger.errors import (
    LedgerError,
    NotFound,
    NotRecordedYet,
    UnknownEntity,
    UnknownInvoice,
    UnknownRate,
)
from ledger.invoices.application import CreditNoteSnapshot, InvoiceSnapshot
from ledger.invoices.domain import Totals
from ledger.sources import Source
from ledger.values import Line, Period

ADMIN = Source("admin", "admin-1", actor="alice@example.com")
D = Decimal


def state(aggregate: Any) -> dict[str, Any]:
    """Everything an aggregate holds, its id, version and times included."""
    return {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}


# Examples per backend: a fresh database per example, cheaper on SQLite.
EXAMPLES = {"sqlite": 40, "postgres": 12}


def run_property(fresh_ledgers: Any, strategy: st.SearchStrategy[Any], body: Callable) -> None:
    @settings(
        max_examples=EXAMPLES[fresh_ledgers.backend],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(strategy)
    def check(commands: Any) -> None:
        with fresh_ledgers() as (ledger, clock, _raw):
            body(ledger, clock, commands)

    check()


# Entities ---------------------------------------------------------------------

entity_commands = st.lists(
    st.one_of(
        st.tuples(st.just("rename"), st.sampled_from(["Acme", "Acme Two", "Zed"])),
        st.tuples(st.just("timezone"), st.sampled_from(["UTC", "Europe/Paris", "Asia/Tokyo"])),
        st.tuples(
            st.just("contacts"),
            st.lists(st.sampled_from(["a@acme.example", "b@acme.example"]), max_size=2),
        ),
        st.tuples(
            st.just("preferences"),
            st.dictionaries(
                st.sampled_from(NOTIFICATION_TOPICS), st.sampled_from(["email", "none"])
            ),
        ),
        st.tuples(st.just("customer"), st.sampled_from(["cus_1", "cus_2"])),
        st.tuples(st.just("archive"), st.just("closed")),
    ),
    max_size=10,
)


def apply_entity_command(ledger: Ledger, command: tuple[str, Any]) -> bool:
    verb, arg = command
    match verb:
        case "rename":
            return ledger.rename_entity("acme", arg, ADMIN)
        case "timezone":
            return ledger.set_entity_timezone("acme", arg, ADMIN)
        case "contacts":
            return ledger.change_billing_contacts("acme", arg, ADMIN)
        case "preferences":
            return ledger.change_notification_preferences("acme", arg, ADMIN)
        case "customer":
            return ledger.link_stripe_customer("acme", arg, ADMIN)
        case _:
            return ledger.archive_entity("acme", arg, ADMIN)


def replay_equals_live(
    ledger: Ledger,
    clock: Any,
    commands: list[Any],
    apply: Callable[[Ledger, Any], bool],
    live: Callable[[], Any],
    as_recorded: Callable[[datetime], Any],
) -> None:
    """Run the commands one per second; then the aggregate as recorded at each
    command's time must equal what was live right after that command."""
    seen = [(clock.now, state(live()))]
    for command in commands:
        clock.advance(seconds=1)
        # A refused command records nothing, and the live state captured says so.
        with contextlib.suppress(LedgerError):
            apply(ledger, command)
        seen.append((clock.now, state(live())))
    for at, expected in seen:
        assert state(as_recorded(at)) == expected
        # Half a second later (before the next command) nothing more was recorded.
        assert state(as_recorded(at + timedelta(milliseconds=500))) == expected
    with pytest.raises(NotRecordedYet):
        as_recorded(seen[0][0] - timedelta(microseconds=1))
    assert ledger.verify_seal().ok


def test_entity_replayed_as_recorded_equals_the_live_state(fresh_ledgers: Any) -> None:
    def body(ledger: Ledger, clock: Any, commands: list[Any]) -> None:
        ledger.register_entity("Acme", "company", ADMIN)
        replay_equals_live(
            ledger,
            clock,
            commands,
            apply_entity_command,
            lambda: ledger.entity("acme"),
            lambda at: ledger.entity_as_recorded("acme", at),
        )

    run_property(fresh_ledgers, entity_commands, body)


# Rates ------------------------------------------------------------------------

days = st.dates(min_value=date(2026, 1, 1), max_value=date(2026, 6, 30))
rate_commands = st.lists(
    st.one_of(
        st.tuples(
            st.just("set"),
            st.tuples(st.sampled_from([D("0.01"), D("0.0125"), D("0.02")]), days),
        ),
        st.tuples(st.just("fee"), st.tuples(st.sampled_from(["setup", "min"]), days)),
        st.tuples(st.just("end"), st.tuples(st.sampled_from(["setup", "min"]), days)),
        st.tuples(st.just("price"), st.integers(min_value=1, max_value=3)),
    ),
    max_size=10,
)


def apply_rate_command(ledger: Ledger, command: tuple[str, Any]) -> bool:
    verb, arg = command
    match verb:
        case "set":
            price, day = arg
            return ledger.set_rate("acme", price, "usd", day, "revised", ADMIN)
        case "fee":
            fee_id, day = arg
            kind = "setup" if fee_id == "setup" else "monthly_minimum"
            return ledger.add_fixed_fee("acme", fee_id, kind, fee_id, D("25.00"), day, ADMIN)
        case "end":
            fee_id, day = arg
            return ledger.end_fixed_fee("acme", fee_id, day, "ended", ADMIN)
        case _:
            return ledger.link_stripe_price("acme", f"price_{arg}", ADMIN, version=arg)


def test_rate_replayed_as_recorded_equals_the_live_state(fresh_ledgers: Any) -> None:
    def body(ledger: Ledger, clock: Any, commands: list[Any]) -> None:
        ledger.register_entity("Acme", "company", ADMIN)
        ledger.set_rate("acme", D("0.01"), "usd", date(2026, 1, 1), "signed", ADMIN)
        replay_equals_live(
            ledger,
            clock,
            commands,
            apply_rate_command,
            lambda: ledger.rate("acme"),
            lambda at: ledger.rate("acme", as_recorded=at),
        )
        # And the bitemporal query agrees with the rebuilt aggregate on every day.
        rate = ledger.rate("acme")
        for day in [date(2026, 1, 1), date(2026, 3, 15), date(2026, 6, 30)]:
            assert ledger.rate_on("acme", day) == rate.version_on(day)

    run_property(fresh_ledgers, rate_commands, body)


# Invoices ---------------------------------------------------------------------

PERIOD = Period(date(2026, 1, 1), date(2026, 2, 1))
LINE = Line("il_1", "usage", "Calls", D("800"), D("0.0125"), D("10.00"))


def invoice_snapshot(status: str, attempts: int, credits: int) -> InvoiceSnapshot:
    final = status != "draft"
    return InvoiceSnapshot(
        stripe_id="in_1",
        entity_id="acme",
        currency="usd",
        period=PERIOD,
        status=status,
        lines=[LINE],
        totals=Totals(D("10.00"), D("0"), D("10.00")),
        number="A-1" if final else None,
        issue_date=date(2026, 2, 1) if final else None,
        due_date=date(2026, 2, 15) if final else None,
        attempt_count=attempts,
        amount_paid=D("10.00") if status == "paid" else D(0),
        paid_at=datetime(2026, 2, 3, tzinfo=UTC) if status == "paid" else None,
        credit_notes=[
            CreditNoteSnapshot(f"cn_{i}", f"CN-{i}", D("3.00"), "goodwill", "")
            for i in range(credits)
        ],
    )


invoice_commands = st.lists(
    st.one_of(
        st.tuples(
            st.just("observe"),
            st.tuples(
                st.sampled_from(["draft", "open", "paid", "void", "uncollectible"]),
                st.integers(min_value=0, max_value=3),
                st.integers(min_value=0, max_value=4),
            ),
        ),
        st.tuples(st.just("past_due"), days),
    ),
    max_size=10,
)


def apply_invoice_command(ledger: Ledger, command: tuple[str, Any]) -> bool:
    verb, arg = command
    if verb == "observe":
        return ledger.observe_invoice(invoice_snapshot(*arg), ADMIN)
    return ledger.mark_past_due("in_1", arg, ADMIN)


def test_invoice_replayed_as_recorded_equals_the_live_state(fresh_ledgers: Any) -> None:
    def body(ledger: Ledger, clock: Any, commands: list[Any]) -> None:
        ledger.register_entity("Acme", "company", ADMIN)
        clock.advance(seconds=1)
        ledger.observe_invoice(invoice_snapshot("draft", 0, 0), ADMIN)
        replay_equals_live(
            ledger,
            clock,
            commands,
            apply_invoice_command,
            lambda: ledger.invoice("in_1"),
            lambda at: ledger.invoice_as_recorded("in_1", at),
        )
        invoice = ledger.invoice("in_1")
        assert invoice.credited <= invoice.total

    run_property(fresh_ledgers, invoice_commands, body)


# Examples ---------------------------------------------------------------------


def test_entity_as_recorded_returns_the_state_at_that_instant(ledger: Ledger, clock) -> None:
    registered = clock.now
    ledger.register_entity("Acme", "company", ADMIN)
    renamed = clock.advance(days=1)
    ledger.rename_entity("acme", "Acme Inc", ADMIN)
    clock.advance(days=1)
    ledger.archive_entity("acme", "gone", ADMIN)
    assert ledger.entity_as_recorded("acme", registered).name == "Acme"
    assert ledger.entity_as_recorded("acme", renamed - timedelta(microseconds=1)).name == "Acme"
    at_rename = ledger.entity_as_recorded("acme", renamed)
    assert (at_rename.name, at_rename.archived, at_rename.version) == ("Acme Inc", False, 2)
    assert ledger.entity_as_recorded("acme", renamed + timedelta(hours=23)).archived is False
    assert ledger.entity_as_recorded("acme", clock.now).archived is True
    with pytest.raises(NotRecordedYet, match="at or before"):
        ledger.entity_as_recorded("acme", registered - timedelta(microseconds=1))


def test_invoice_as_recorded_returns_the_status_at_that_instant(ledger: Ledger, clock) -> None:
    ledger.register_entity("Acme", "company", ADMIN)
    drafted = clock.advance(hours=1)
    ledger.observe_invoice(invoice_snapshot("draft", 0, 0), ADMIN)
    opened = clock.advance(hours=1)
    ledger.observe_invoice(invoice_snapshot("open", 0, 0), ADMIN)
    clock.advance(hours=1)
    ledger.observe_invoice(invoice_snapshot("paid", 0, 0), ADMIN)
    assert ledger.invoice_as_recorded("in_1", drafted).status == "draft"
    assert ledger.invoice_as_recorded("in_1", opened).status == "open"
    assert ledger.invoice_as_recorded("in_1", clock.now).status == "paid"
    with pytest.raises(NotRecordedYet):
        ledger.invoice_as_recorded("in_1", drafted - timedelta(seconds=1))


@pytest.mark.parametrize(
    ("query", "error"),
    [
        (lambda ledger, at: ledger.entity_as_recorded("ghost", at), UnknownEntity),
        (lambda ledger, at: ledger.invoice_as_recorded("in_ghost", at), UnknownInvoice),
        (lambda ledger, at: ledger.rate("ghost", as_recorded=at), UnknownRate),
        (lambda ledger, at: ledger.rate_on("ghost", date(2026, 1, 1), as_recorded=at), UnknownRate),
    ],
)
def test_unknown_ids_raise_the_named_not_found(
    ledger: Ledger, clock, query: Callable[[Ledger, datetime], Any], error: type[NotFound]
) -> None:
    assert issubclass(error, NotFound)
    with pytest.raises(error, match="ghost"):
        query(ledger, clock.now)


def test_a_rate_before_its_contract_was_recorded_is_not_recorded_yet(ledger: Ledger, clock) -> None:
    ledger.register_entity("Acme", "company", ADMIN)
    clock.advance(days=1)
    ledger.set_rate("acme", D("0.01"), "usd", date(2026, 1, 1), "signed", ADMIN)
    with pytest.raises(NotRecordedYet):
        ledger.rate("acme", as_recorded=clock.now - timedelta(seconds=1))
    assert ledger.rate("acme", as_recorded=clock.now).versions[0].unit_price == D("0.01")
