"""The simulation's seeds, and its summary at the end of the pytest run.

`make test` (CI) runs the seeds of `CI_SEEDS` on SQLite and the first of them on
PostgreSQL. `make simulate SEED=N RUNS=K` runs the longer world for seeds N to
N+K-1 (environment: BILLTRAIL_SIM_SEED, BILLTRAIL_SIM_RUNS). Every run records its
seed, the faults it injected, its time and whether it passed; the summary lists
them after the test results."""

from __future__ import annotations

import os

import pytest

from .world import SeedRecord

# Chosen for where their scheduler is killed: mid-sweep (1), mid-delivery while the
# SMTP server refuses (3), right after the server accepted a message, which then
# goes again with the same Message-ID (7).
CI_SEEDS = (1, 3, 7)


RECORDS = pytest.StashKey[list[SeedRecord]]()


def simulate_seeds() -> list[int]:
    """The seeds `make simulate` asked for (none outside it)."""
    if "BILLTRAIL_SIM_SEED" not in os.environ:
        return []
    first = int(os.environ["BILLTRAIL_SIM_SEED"])
    return list(range(first, first + int(os.environ.get("BILLTRAIL_SIM_RUNS", "1"))))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ci_seed" in metafunc.fixturenames:
        metafunc.parametrize("ci_seed", CI_SEEDS, ids=[f"seed{s}" for s in CI_SEEDS])
    if "simulate_seed" in metafunc.fixturenames:
        seeds = simulate_seeds()
        metafunc.parametrize("simulate_seed", seeds, ids=[f"seed{s}" for s in seeds])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """PostgreSQL runs one CI seed (each seed costs the same there, and the backend's
    part of the run does not depend on the seed); the longer runs only under `make
    simulate`."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        seeds = params.params if params is not None else {}
        another_ci_seed_on_postgres = (
            seeds.get("database_url") == "postgres"
            and seeds.get("ci_seed", CI_SEEDS[0]) != CI_SEEDS[0]
        )
        longer_without_seeds = "simulate_seed" in seeds and not simulate_seeds()
        if another_ci_seed_on_postgres or longer_without_seeds:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def record(request: pytest.FixtureRequest) -> SeedRecord:
    """This run's line in the summary (its test sets `passed` at the end)."""
    records = request.config.stash.setdefault(RECORDS, [])
    params = request.node.callspec.params
    seed = params.get("ci_seed", params.get("simulate_seed", -1))
    found = SeedRecord(request.node.name, seed, params.get("database_url", "sqlite"))
    records.append(found)
    return found


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    records = config.stash.get(RECORDS, [])
    if not records:
        return
    write = terminalreporter.write_line
    terminalreporter.section("simulation: seeds, faults injected, outcome")
    for r in records:
        times = ", ".join(f"{k} {v:.1f}s" for k, v in r.seconds.items())
        verdict = "PASS" if r.passed else "FAIL"
        write(f"seed {r.seed} on {r.backend}: {verdict} ({times}; {len(r.faults)} faults)")
        write(f"    replay: {r.replay}")
        write(f"    world: {r.world}")
        for fault in r.faults:
            write(f"    {fault}")
    write(f"{sum(r.passed for r in records)} of {len(records)} runs passed")
