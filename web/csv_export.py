"""CSV downloads, streamed: a page of the read model at a time, so a million rows
never sit in memory and the first bytes leave before the last page is read."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import Any


def cell(text: str | None) -> str:
    """A cell a spreadsheet would run as a formula is written as text."""
    text = text or ""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def csv_line(values: tuple[str, ...]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue()


def csv_pages(
    header: tuple[str, ...],
    first: Any,
    read: Callable[[Any], Any],
    row: Callable[[Any], tuple[str, ...]],
) -> Iterator[str]:
    """The header, then a page's rows at a time, each next page (`read(cursor)`)
    read only once the one before is sent. `first` and what `read` returns are
    pages with `rows` and `next_cursor`."""
    yield csv_line(header)
    page = first
    while True:
        yield "".join(csv_line(row(r)) for r in page.rows)
        if page.next_cursor is None:
            return
        page = read(page.next_cursor)
