"""The operator CLI end to end on both backends: what it prints, its exit codes,
and that a user's mistake is one line on stderr with nothing recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

# run_cli(*args) -> Run(code, out, err, last_line); see tests/conftest.py
RunCLI = Callable[..., Any]


HEADER = "call_id,entity_id,started_at,duration_seconds\n"


def one_clear_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def acme(run_cli: RunCLI) -> str:
    r = run_cli(
        "entities",
        "add",
        "Acme Corp",
        "--kind",
        "company",
        "--timezone",
        "Europe/Paris",
        "--email",
        "billing@acme.test",
    )
    assert r.code == 0, r.err
    return r.last_line


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_entities_add_prints_the_id_and_list_json_shows_it(run_cli: RunCLI, acme: str) -> None:
    assert acme == "acme-corp"
    listed = run_cli("entities", "list", "--json")
    assert listed.code == 0
    [doc] = json.loads(listed.last_line)
    assert doc["entity_id"] == "acme-corp"
    assert doc["timezone"] == "Europe/Paris"
    assert doc["emails"] == ["billing@acme.test"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["entities", "add", "Acme Corp", "--kind", "company"], "already exists"),
        (["entities", "add", "X", "--kind", "guild"], "--kind"),
        (["entities", "add", "X", "--kind", "company", "--timezone", "Mars/Base"], "time zone"),
        (["entities", "add", "X", "--kind", "company", "--email", "nope"], "email"),
        (
            [
                "rates",
                "set",
                "acme-corp",
                "--per-call",
                "abc",
                "--currency",
                "EUR",
                "--effective-from",
                "2026-01-01",
            ],
            "not a number",
        ),
        (
            [
                "rates",
                "set",
                "acme-corp",
                "--per-call",
                "-1",
                "--currency",
                "EUR",
                "--effective-from",
                "2026-01-01",
            ],
            "negative",
        ),
        (
            [
                "rates",
                "set",
                "acme-corp",
                "--per-call",
                "0.01",
                "--currency",
                "EURO",
                "--effective-from",
                "2026-01-01",
            ],
            "currency",
        ),
        (
            [
                "rates",
                "set",
                "acme-corp",
                "--per-call",
                "0.01",
                "--currency",
                "EUR",
                "--effective-from",
                "01/02/2026",
            ],
            "date",
        ),
        (
            [
                "rates",
                "set",
                "nobody",
                "--per-call",
                "0.01",
                "--currency",
                "EUR",
                "--effective-from",
                "2026-01-01",
            ],
            "nobody",
        ),
        (["history", "entity", "nobody"], "nobody"),
        (["history", "invoice", "INV-404"], "INV-404"),
        (["calls", "import", "no-such-file.csv"], "no-such-file.csv"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(
    run_cli: RunCLI, acme: str, args: list[str], message: str
) -> None:
    r = run_cli(*args)
    assert r.code == 2
    assert message in one_clear_line(r.err)


def test_rates_set_then_retroactive_correction_shows_in_history(run_cli: RunCLI, acme: str) -> None:
    first = run_cli(
        "rates",
        "set",
        acme,
        "--per-call",
        "0.0125",
        "--currency",
        "EUR",
        "--effective-from",
        "2026-01-01",
        "--reason",
        "contract",
    )
    assert first.code == 0
    assert "version 1" in first.out
    again = run_cli(
        "rates",
        "set",
        acme,
        "--per-call",
        "0.0125",
        "--currency",
        "EUR",
        "--effective-from",
        "2026-01-01",
    )
    assert "unchanged" in again.out
    fix = run_cli(
        "rates",
        "set",
        acme,
        "--per-call",
        "0.0100",
        "--currency",
        "EUR",
        "--effective-from",
        "2025-12-01",
        "--reason",
        "signed late",
    )
    assert fix.code == 0
    events = json.loads(run_cli("history", "rate", acme, "--json").last_line)
    assert [e["event"] for e in events] == ["Contracted", "Revised"]
    assert events[1]["changes"] == {
        "unit_price": "0.0100",
        "effective_from": "2025-12-01",
        "reason": "signed late",
    }
    assert events[1]["source"]["kind"] == "cli"
    as_of = run_cli("history", "rate", acme, "--as-of", events[0]["recorded_at"], "--json")
    assert [e["event"] for e in json.loads(as_of.last_line)] == ["Contracted"]


def test_calls_import_records_counts_duplicates_and_reimport_records_nothing(
    run_cli: RunCLI, acme: str, tmp_path: Path
) -> None:
    f = write(
        tmp_path / "calls.csv",
        HEADER
        + "c1,acme-corp,2026-01-05T10:00:00+01:00,60\n"
        + "c2,acme-corp,2026-01-05T23:30:00Z,30\n"
        + "c1,acme-corp,2026-01-05T10:00:00+01:00,60\n",
    )
    first = run_cli("calls", "import", str(f), "--json")
    assert first.code == 0
    assert json.loads(first.last_line) == {
        "recorded": 2,
        "duplicates": 1,
        "conflicts": 0,
        "invalid": 0,
    }
    again = run_cli("calls", "import", str(f), "--json")
    assert json.loads(again.last_line) == {
        "recorded": 0,
        "duplicates": 3,
        "conflicts": 0,
        "invalid": 0,
    }
    # Europe/Paris: 23:30 UTC on the 5th is the 6th locally, so two days of usage.
    history = run_cli("history", "entity", acme, "--json")
    assert history.code == 0


def test_a_call_id_seen_again_with_other_data_is_a_conflict_not_recorded(
    run_cli: RunCLI, acme: str, tmp_path: Path
) -> None:
    run_cli(
        "calls",
        "import",
        str(write(tmp_path / "a.csv", HEADER + "c1,acme-corp,2026-01-05T10:00:00Z,60\n")),
    )
    r = run_cli(
        "calls",
        "import",
        str(
            write(
                tmp_path / "b.jsonl",
                json.dumps(
                    {
                        "call_id": "c1",
                        "entity_id": "acme-corp",
                        "started_at": "2026-01-05T10:00:00Z",
                        "duration_seconds": 61,
                    }
                )
                + "\n",
            )
        ),
        "--json",
    )
    assert r.code == 0
    assert json.loads(r.last_line)["conflicts"] == 1
    assert json.loads(r.last_line)["recorded"] == 0
    assert "line 1: call c1 conflicts" in r.err


def test_an_invalid_file_records_nothing_and_lists_each_bad_line(
    run_cli: RunCLI, acme: str, tmp_path: Path
) -> None:
    f = write(
        tmp_path / "bad.csv",
        HEADER
        + "ok1,acme-corp,2026-01-05T10:00:00Z,60\n"
        + "x1,nobody,2026-01-05T10:00:00Z,60\n"
        + "x2,acme-corp,2026-01-05T10:00:00,60\n"
        + "x3,acme-corp,yesterday,60\n"
        + "x4,acme-corp,2026-01-05T10:00:00Z,-5\n"
        + "x5,acme-corp\n",
    )
    r = run_cli("calls", "import", str(f), "--json")
    assert r.code == 2
    err = r.err.splitlines()
    assert "line 3: unknown entity 'nobody'" in err[0]
    assert "line 4: started_at has no UTC offset" in err[1]
    assert "line 5: started_at is not an ISO 8601 time" in err[2]
    assert "line 6: duration_seconds is negative" in err[3]
    assert "line 7: missing column started_at, duration_seconds" in err[4]
    assert "nothing was recorded" in err[-1]
    # nothing recorded: the one good line imports now as new
    good = write(tmp_path / "good.csv", HEADER + "ok1,acme-corp,2026-01-05T10:00:00Z,60\n")
    assert json.loads(run_cli("calls", "import", str(good), "--json").last_line)["recorded"] == 1


def test_skip_invalid_records_the_valid_lines_and_writes_the_rest_aside(
    run_cli: RunCLI, acme: str, tmp_path: Path
) -> None:
    f = write(
        tmp_path / "mixed.csv",
        HEADER
        + "ok1,acme-corp,2026-01-05T10:00:00Z,60\n"
        + "x1,acme-corp,2026-01-05T10:00:00Z,ten\n",
    )
    r = run_cli("calls", "import", str(f), "--skip-invalid", "--json")
    assert r.code == 0
    assert json.loads(r.last_line) == {"recorded": 1, "duplicates": 0, "conflicts": 0, "invalid": 1}
    rejected = (tmp_path / "mixed.csv.rejected").read_text().splitlines()
    assert rejected == [
        "3\tduration_seconds must be a whole number: 'ten'\tx1,acme-corp,2026-01-05T10:00:00Z,ten"
    ]


def test_more_than_twenty_bad_lines_are_listed_twenty_then_counted(
    run_cli: RunCLI, acme: str, tmp_path: Path
) -> None:
    lines = "".join(f"x{i},nobody,2026-01-05T10:00:00Z,1\n" for i in range(25))
    r = run_cli("calls", "import", str(write(tmp_path / "many.csv", HEADER + lines)))
    assert r.code == 2
    err = r.err.strip().splitlines()
    assert len(err) == 22
    assert "and 5 more" in err[20]


def test_a_header_without_a_required_column_is_refused(
    run_cli: RunCLI, acme: str, tmp_path: Path
) -> None:
    f = write(
        tmp_path / "h.csv", "call_id,entity_id,started_at\nc1,acme-corp,2026-01-05T10:00:00Z\n"
    )
    r = run_cli("calls", "import", str(f))
    assert r.code == 2
    assert "lacks column(s) duration_seconds" in one_clear_line(r.err)


@pytest.fixture
def sealed(run_cli: RunCLI, acme: str, database_url: str, raw_log_of: Any) -> Any:
    """Three events (registered, contracted, revised), verified once, so the seal's
    checkpoint holds the head; returns the RawLog of its database."""
    for price, start in (("0.0125", "2026-01-01"), ("0.0100", "2026-02-01")):
        r = run_cli(
            "rates", "set", acme, "--per-call", price, "--currency", "EUR",
            "--effective-from", start,
        )  # fmt: skip
        assert r.code == 0, r.err
    clean = run_cli("verify")
    assert (clean.code, clean.out) == (0, "verified 3 events: the seal is intact\n")
    return raw_log_of(database_url)


def _verify_fails_at(run_cli: RunCLI, position: int, what: str) -> None:
    r = run_cli("verify")
    assert r.code == 1, r
    assert one_clear_line(r.err).startswith(f"billtrail: seal broken at log position {position}:")
    assert what in r.err
    assert r.out.startswith("checked ")


def test_verify_names_an_altered_price_and_its_position(run_cli: RunCLI, sealed: Any) -> None:
    contracted = sealed.positions()[1]
    sealed.replace_in_state(contracted, b"0.0125", b"0.0001")
    _verify_fails_at(run_cli, contracted, "Rate.Contracted")
    assert "does not match its seal" in run_cli("verify").err


def test_verify_catches_a_cut_tail_through_its_checkpoint(run_cli: RunCLI, sealed: Any) -> None:
    last = sealed.max_position()
    sealed.delete_event(last)
    sealed.delete_link(last)
    _verify_fails_at(run_cli, last, "truncated")


# What `verify` names for each kind of tampering: (the index of the position named in
# the three positions, what it says). The checkpoint written by `sealed` is in force.
CLI_TAMPERS = {
    "edit an event": (1, "does not match its seal"),
    "delete an event": (1, "the sealed event is missing"),
    "insert an event": (3, "is not in the seal (inserted)"),
    "reorder events": (1, "altered or reordered"),
    "truncate events": (2, "the sealed event is missing"),
    "edit a link": (1, "does not match its seal"),
    "delete a link": (1, "seal link 2 is missing"),
    "insert a link": (1, "is not in the seal"),
    "reorder links": (1, "is not in the seal"),
    "truncate links": (2, "is not in the seal (inserted)"),
}


@pytest.mark.parametrize("tamper", list(CLI_TAMPERS))
def test_verify_exits_1_naming_the_first_tampered_position(
    run_cli: RunCLI, sealed: Any, tamper: str
) -> None:
    positions = sealed.positions()
    first, second, last = positions
    links = sealed.links()
    if tamper == "edit an event":
        sealed.replace_in_state(second, b"0.0125", b"0.0126")
    elif tamper == "delete an event":
        sealed.delete_event(second)
    elif tamper == "insert an event":
        _oid, _version, topic, state = sealed.row(first)
        positions.append(sealed.insert_event(uuid4(), 1, topic, state))
    elif tamper == "reorder events":
        sealed.swap_states(second, last)
    elif tamper == "truncate events":
        sealed.delete_event(last)
    elif tamper == "edit a link":
        sealed.set_mac(2, bytes(32))
    elif tamper == "delete a link":
        sealed.delete_link_seq(2)
    elif tamper == "insert a link":
        # A forged link pushed in at seq 2, the genuine ones after it renumbered.
        forged = (2, last + 100, bytes(32))
        sealed.rewrite_links([links[0], forged, *[(s + 1, n, m) for s, n, m in links[1:]]])
    elif tamper == "reorder links":
        (s2, n2, m2), (s3, n3, m3) = links[1:]
        sealed.rewrite_links([links[0], (s2, n3, m3), (s3, n2, m2)])
    else:
        sealed.delete_link_seq(3)
    index, what = CLI_TAMPERS[tamper]
    _verify_fails_at(run_cli, positions[index], what)


def test_demo_builds_a_verified_world_on_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from billtrail.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--no-serve", "--dir", str(tmp_path / "demo"), "--seed", "3"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert "12 entities" in out
    db = tmp_path / "demo" / "billtrail.db"
    assert f"BILLTRAIL_DATABASE_URL=sqlite:///{db}" in out
    again = [ln for ln in out.splitlines() if "again" in ln]
    assert again
    assert "'recorded': 0" in again[0]
    # The printed variables point the other commands at the demo's world.
    monkeypatch.setenv("BILLTRAIL_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("BILLTRAIL_VAR_DIR", str(tmp_path / "demo"))
    monkeypatch.delenv("BILLTRAIL_SEAL_KEY", raising=False)
    with pytest.raises(SystemExit) as verified:
        main(["verify"])
    assert verified.value.code == 0
    assert "the seal is intact" in capsys.readouterr().out


def test_on_sqlite_the_read_models_are_caught_up_after_each_command(
    run_cli: RunCLI, acme: str, tmp_path: Path, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL runs `billtrail projections run` as its own process")
    f = write(tmp_path / "calls.csv", HEADER + "c1,acme-corp,2026-01-05T10:00:00Z,60\n")
    assert run_cli("calls", "import", str(f)).code == 0
    status = json.loads(run_cli("projections", "status", "--json").last_line)
    assert status
    assert all(p["lag"] == 0 for p in status), status
