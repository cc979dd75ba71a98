"""The CLI's bad-input suite: every command fed malformed values answers exit 2
with one clear line on stderr (`billtrail: ...`), no traceback, and records
nothing (the ledger's stored events are counted before and after).

The Stripe commands run against the sandbox, so they get as far as checking
their input rather than stopping at a missing key. `calls import` is the one
command that lists every bad line of a file (one line each, then a summary): it
is held to "no traceback, each line a sentence" instead of "one line"."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.stripe.sandbox import RunningSandbox, start_sandbox

# run_cli(*args) -> Run(code, out, err): tests/conftest.py, in the environment below.
RunCLI = Callable[..., Any]
SEAL_KEY = "cli-bad-input-seal-key-0123456789abcdef0123"
HEADER = "call_id,entity_id,started_at,duration_seconds\n"
ENTITY = "acme-corp"
EMAIL = "ops@billtrail.example"
FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# argv cannot carry a NUL byte; anything else may be typed.
ARG_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    with start_sandbox(seed="billtrail-cli-bad-input") as running:
        yield running


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, sandbox: RunningSandbox) -> dict[str, str]:
    return {
        "BILLTRAIL_DATABASE_URL": database_url,
        "BILLTRAIL_VAR_DIR": str(tmp_path / "var"),
        "BILLTRAIL_SEAL_KEY": SEAL_KEY,
        "STRIPE_API_BASE": sandbox.url,
        "STRIPE_API_KEY": sandbox.api_key,
    }


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    return lambda text: monkeypatch.setattr("sys.stdin", io.StringIO(text))


@pytest.fixture
def events(
    run_cli: RunCLI,
    database_url: str,
    raw_log_of: Callable[[str], Any],
    tmp_path: Path,
    stdin: Callable[[str], None],
) -> Callable[[], int]:
    """A small world made through the CLI; returns the stored events' counter."""
    assert run_cli("entities", "add", "Acme Corp", "--kind", "company").code == 0
    rate = ("--per-call", "0.0125", "--currency", "EUR", "--effective-from", "2026-01-01")
    assert run_cli("rates", "set", ENTITY, *rate).code == 0
    calls = tmp_path / "calls.csv"
    calls.write_text(HEADER + f"c1,{ENTITY},2026-01-05T10:00:00Z,60\n")
    assert run_cli("calls", "import", str(calls)).code == 0
    stdin("a long enough password\n")
    assert run_cli("users", "add", EMAIL, "--role", "admin").code == 0
    log = raw_log_of(database_url)
    return lambda: int(log.count("events"))


@pytest.fixture
def invoice(events: Callable[[], int], cli_env: dict[str, str]) -> str:
    """An open invoice of acme-corp in the ledger (as a sync would record it)."""
    from datetime import date
    from decimal import Decimal

    from billtrail import bootstrap
    from billtrail.settings import Settings
    from ledger.invoices.application import InvoiceSnapshot
    from ledger.invoices.domain import Totals
    from ledger.sources import Source
    from ledger.values import Line, Period

    amount = Decimal("12.50")
    snapshot = InvoiceSnapshot(
        stripe_id="in_bad_input_1",
        entity_id=ENTITY,
        currency="eur",
        period=Period(date(2026, 1, 1), date(2026, 2, 1)),
        status="open",
        lines=[Line("il_1", "usage", "Calls", Decimal(1000), Decimal("0.0125"), amount)],
        totals=Totals(amount, Decimal(0), amount),
        number="ACME-0001",
        issue_date=date(2026, 2, 1),
        due_date=date(2026, 2, 15),
    )
    app = bootstrap.ledger(Settings.from_env(cli_env))
    try:
        app.observe_invoice(snapshot, Source("sync_run", "bad-input"))
    finally:
        app.close()
    return "ACME-0001"


def refused(run: Any) -> str:
    """The one line of a refusal (exit 2, no traceback)."""
    assert run.code == 2, run
    assert "Traceback" not in run.err, run.err
    lines: list[str] = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith("billtrail: "), lines[0]
    assert len(lines[0]) > len("billtrail: ") + 5, lines[0]
    return lines[0]


def rates_set(
    entity: str = ENTITY,
    per_call: str = "0.01",
    currency: str = "EUR",
    effective_from: str = "2026-02-01",
) -> list[str]:
    return [
        "rates",
        "set",
        entity,
        "--per-call",
        per_call,
        "--currency",
        currency,
        "--effective-from",
        effective_from,
    ]


BAD_COMMANDS: list[list[str]] = [
    # entities
    ["entities", "add", "", "--kind", "company"],
    ["entities", "add", "   ", "--kind", "company"],
    ["entities", "add", "Acme Corp", "--kind", "company"],  # exists
    ["entities", "add", "X", "--kind", "guild"],
    ["entities", "add", "X", "--kind", "company", "--timezone", "Mars/Base"],
    ["entities", "add", "X", "--kind", "company", "--email", "nope"],
    ["entities", "add", "X", "--kind", "company", "--id", "Not An Id!"],
    # rates
    *(rates_set(per_call=price) for price in ("abc", "-1", "NaN", "Infinity", "", "1000000.01")),
    rates_set(per_call="1e999999"),  # was recorded: overflowed usage x rate later
    rates_set(currency="EURO"),
    rates_set(currency=""),
    rates_set(effective_from="2026-02-30"),
    rates_set(effective_from=""),
    rates_set(entity="nobody"),
    # calls
    ["calls", "import", "no-such-file.csv"],
    # usage, sweep
    ["usage", "push", "--date", "yesterday"],
    ["usage", "push", "--date", "2026-02-30"],
    ["sweep", "past-due", "--today", "tomorrow"],
    ["sweep", "past-due", "--today", "2026-13-01"],
    # invoices list
    ["invoices", "list", "--status", "late"],
    ["invoices", "list", "--from", "2026-13-01"],
    ["invoices", "list", "--to", "soon"],
    ["invoices", "list", "--as-of", "2026/01/01"],
    ["invoices", "list", "--min-total", "abc"],
    ["invoices", "list", "--max-total", "NaN"],
    ["invoices", "list", "--sort", "amount"],
    ["invoices", "list", "--limit", "0"],
    ["invoices", "list", "--limit", "many"],
    # explain, history
    ["explain", "NOPE-0001"],
    ["explain", ""],
    ["explain", "NOPE-0001", "--as-of", "noon"],
    ["history", "planet", ENTITY],
    ["history", "entity", "nobody"],
    ["history", "invoice", "INV-404"],
    ["history", "entity", ENTITY, "--as-of", "yesterday"],
    # users
    ["users", "add", "x", "--role", "admin"],
    ["users", "add", "new@billtrail.example", "--role", "root"],
    ["users", "add", "new@billtrail.example", "--role", "customer"],
    ["users", "add", "new@billtrail.example", "--role", "customer", "--entity", "nobody"],
    ["users", "add", EMAIL, "--role", "admin"],  # exists
    ["users", "disable", "nobody@billtrail.example", "--reason", "left"],
    ["users", "token", "nobody@billtrail.example"],
    ["users", "password", "nobody@billtrail.example"],
    # Stripe: corrections, push, sync
    ["corrections", "credit", "NOPE-0001", "--amount", "abc", "--reason", "goodwill"],
    ["corrections", "credit", "NOPE-0001", "--amount", "5", "--reason", "goodwill"],
    ["corrections", "credit", "NOPE-0001", "--amount", "-5", "--reason", "goodwill"],
    ["corrections", "write-off", "NOPE-0001", "--reason", "gone"],
    ["corrections", "wrong-rate", "NOPE-0001", "--per-call", "abc", "--reason", "typo"],
    ["corrections", "duplicate-calls", "NOPE-0001", "--call", "c1", "--reason", "dup"],
    ["stripe", "push", "--days-until-due", "-1"],
    ["stripe", "push", "--send-invoice", "sometimes"],
    ["sync", "--since", "last week"],
    ["sync", "--since", "2999-01-01"],
    # the rest
    ["notifications", "webhook-secret", "nobody"],
    ["projections", "rebuild", "no-such-projection"],
    ["projections", "rebuild", "--page", "0"],
    ["serve", "--port", "70000"],
    ["serve", "--port", "http"],
    ["demo", "--seed", "many"],
    ["demo", "--port", "-1"],
    ["stripe-sandbox", "--port", "-1"],
    ["projections", "run", "--interval", "-1"],
    ["projections", "run", "--page", "0"],
    ["projections", "status", "--page", "1"],
    ["entities", "list", "--limit", "1"],
    ["users", "list", "--role", "admin"],
    ["notifications", "list", "--failed", "yes"],
    ["reconcile", "--since", "2026-01-01"],
    ["scheduler", "--once", "now"],
    ["verify", "--deep"],
    ["frobnicate"],
]


def _leaf_commands() -> set[str]:
    import click

    from billtrail.cli import _register_commands, cli

    _register_commands()

    def walk(command: click.Command, prefix: str) -> Iterator[str]:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, f"{prefix} {name}".strip())
        else:
            yield prefix

    return set(walk(cli, ""))


def test_every_command_is_fed_a_malformed_value() -> None:
    """A command added later fails here until it has a line in BAD_COMMANDS."""
    fed = {" ".join(args[:2]) for args in BAD_COMMANDS} | {args[0] for args in BAD_COMMANDS}
    assert _leaf_commands() - fed == set()


@pytest.mark.parametrize("args", BAD_COMMANDS, ids=" ".join)
def test_a_malformed_value_is_one_line_exit_2_and_records_nothing(
    run_cli: RunCLI, events: Callable[[], int], stdin: Callable[[str], None], args: list[str]
) -> None:
    stdin("another long password\n")
    before = events()
    refused(run_cli(*args))
    assert events() == before


@pytest.mark.parametrize(
    "args",
    [
        ["credit", "--amount", "abc"],
        ["credit", "--amount", "0"],
        ["credit", "--amount", "-5"],
        ["credit", "--amount", "NaN"],
        ["credit", "--amount", "0.001"],  # below a cent
        ["credit", "--amount", "1e999999"],
        ["wrong-rate", "--per-call", "abc"],
        ["wrong-rate", "--per-call", "-1", "--effective-from", "2026-01-01"],
        ["wrong-rate", "--per-call", "0.01", "--effective-from", "2026-02-30"],
        ["wrong-rate", "--per-call", "1e999999", "--effective-from", "2026-01-01"],
        ["duplicate-calls", "--call", "no-such-call"],
    ],
    ids=" ".join,
)
def test_a_correction_of_a_real_invoice_with_malformed_values_is_refused(
    run_cli: RunCLI, events: Callable[[], int], invoice: str, args: list[str]
) -> None:
    before = events()
    refused(run_cli("corrections", args[0], invoice, *args[1:], "--reason", "bad input"))
    assert events() == before


EDGES = ["0001-01-01", "9999-12-31"]
INSTANT_EDGES = [*EDGES, "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]


@pytest.mark.parametrize(
    "args",
    [
        *(
            ["invoices", "list", option, day]
            for option in ("--from", "--to", "--as-of")
            for day in EDGES
        ),
        *(["sweep", "past-due", "--today", day] for day in EDGES),
        *(["usage", "push", "--date", day] for day in EDGES),
        *(rates_set(effective_from=day) for day in EDGES),
        *(["explain", "ACME-0001", "--as-of", at] for at in INSTANT_EDGES),
        *(["history", "entity", ENTITY, "--as-of", at] for at in INSTANT_EDGES),
        *(["sync", "--since", day] for day in EDGES),
    ],
    ids=" ".join,
)
def test_the_first_and_last_representable_days_are_never_a_traceback(
    run_cli: RunCLI, invoice: str, args: list[str]
) -> None:
    # Well-formed values at the edge of the calendar: an answer or a refusal,
    # whichever the command means, but never an overflow's traceback.
    run = run_cli(*args)
    assert "Traceback" not in run.err, run
    assert run.code in (0, 1, 2), run
    if run.code == 2:
        refused(run)


def test_users_add_with_no_password_on_stdin_is_refused(
    run_cli: RunCLI, events: Callable[[], int], stdin: Callable[[str], None]
) -> None:
    before = events()
    for password in ("", "\n", "short\n"):
        stdin(password)
        refused(run_cli("users", "add", "new@billtrail.example", "--role", "admin"))
    assert events() == before


@pytest.mark.parametrize(
    "rows",
    [
        "",  # no header
        "id,who,when\nc9,acme-corp,2026-01-05\n",
        HEADER + f"c9,{ENTITY},2026-01-05T10:00:00Z,sixty\n",
        HEADER + f"c9,{ENTITY},2026-01-05T10:00:00Z,-5\n",
        HEADER + f"c9,{ENTITY},2026-01-05T10:00:00,60\n",
        HEADER + "c9,nobody,2026-01-05T10:00:00Z,60\n",
        HEADER + f"c9,{ENTITY}\n",
        HEADER + f",{ENTITY},2026-01-05T10:00:00Z,60\n",
    ],
)
def test_a_malformed_calls_file_is_refused_whole(
    run_cli: RunCLI, events: Callable[[], int], tmp_path: Path, rows: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(rows)
    before = events()
    run = run_cli("calls", "import", str(path))
    assert run.code == 2, run
    assert "Traceback" not in run.err
    assert run.err.strip(), run
    assert all(line.strip() for line in run.err.strip().splitlines())
    assert events() == before


def test_a_calls_file_that_is_not_text_is_refused(
    run_cli: RunCLI, events: Callable[[], int], tmp_path: Path
) -> None:
    path = tmp_path / "calls.csv"
    path.write_bytes(b"\xff\xfe\x00binary\x00" * 50)
    before = events()
    assert "not UTF-8" in refused(run_cli("calls", "import", str(path)))
    assert events() == before


def _not_a_date(text: str) -> bool:
    from datetime import date

    try:
        date.fromisoformat(text)
    except ValueError:
        return True
    return False


def _not_an_amount(text: str) -> bool:
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(text)
    except InvalidOperation:
        return True
    return not value.is_finite() or value < 0


@FUZZ
# An empty value reads as "not given" (the default day) in several commands.
@given(day=ARG_TEXT.filter(lambda text: bool(text) and _not_a_date(text)))
def test_any_non_date_is_refused_where_a_date_is_asked(
    run_cli: RunCLI, events: Callable[[], int], day: str
) -> None:
    before = events()
    for args in (
        ["invoices", "list", "--from", day],
        ["sweep", "past-due", "--today", day],
        ["usage", "push", "--date", day],
        rates_set(effective_from=day),
    ):
        refused(run_cli(*args))
    assert events() == before


@FUZZ
@given(amount=ARG_TEXT.filter(_not_an_amount))
def test_any_non_amount_is_refused_where_an_amount_is_asked(
    run_cli: RunCLI, events: Callable[[], int], amount: str
) -> None:
    before = events()
    refused(run_cli(*rates_set(per_call=amount)))
    if not _is_negative_number(amount):  # a negative bound is a (useless) filter
        refused(run_cli("invoices", "list", "--min-total", amount))
    assert events() == before


def _is_negative_number(text: str) -> bool:
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(text) < 0
    except InvalidOperation:
        return False


@FUZZ
@given(text=ARG_TEXT)
def test_any_text_as_an_entity_or_invoice_reference_is_never_a_traceback(
    run_cli: RunCLI, events: Callable[[], int], text: str
) -> None:
    before = events()
    for args in (
        ["history", "entity", text],
        ["history", "invoice", text],
        ["explain", text],
        ["invoices", "list", "--entity", text, "--search", text],
        ["notifications", "webhook-secret", text],
    ):
        run = run_cli(*args)
        assert "Traceback" not in run.err, (args, run)
        assert run.code in (0, 1, 2), (args, run)
        if run.code == 2:
            refused(run)
    assert events() == before
