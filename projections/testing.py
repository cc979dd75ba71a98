"""Test support for the read models (their tests and the whole-system
simulation): every row of every table, to compare two states of the read models
(after a crash and resume, against a rebuild)."""

from __future__ import annotations

from typing import Any

from projections.runner import Runner


def dump_tables(runner: Runner) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read-model table of `runner`'s projections, in key order."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with runner.store.reading() as tx:
        for p in runner.projections:
            for table in p.tables:
                cols = ", ".join(table.col_names)
                keys = ", ".join(table.key)
                tables[table.name] = tx.execute(
                    f"SELECT {cols} FROM {{p}}{table.name} ORDER BY {keys}"
                )
    return tables
