"""The CLI driven in process through `billtrail.cli.main`, the console script's
own entry point, with the environment an operator would set."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

SEAL_KEY = "cli-tests-seal-key-0123456789abcdef0123456789"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        return self.out.strip().splitlines()[-1]


RunCLI = Callable[..., Run]


@pytest.fixture
def run_cli(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> RunCLI:
    from billtrail.cli import main

    monkeypatch.setenv("BILLTRAIL_DATABASE_URL", database_url)
    monkeypatch.setenv("BILLTRAIL_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BILLTRAIL_SEAL_KEY", SEAL_KEY)
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Run:
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
