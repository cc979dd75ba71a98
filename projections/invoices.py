"""The invoice list: one row per invoice with what the portal's Invoices page and
`billtrail invoices list` show, and the queries over it (filters, text search, sort,
keyset pagination, count, and the list as it stood on a past date).

Sorting and paging use `list_date` (the issue date, or for a draft the day it was
drafted) or `total_units`, always with `seq` (the log position of the invoice's first
event) as the tie-break, so every page boundary is exact and stable across rebuilds."""

from __future__ import annotations

import base64
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

from eventsourcing.utils import get_topic

from ledger.entities.domain import BillableEntity
from ledger.invoices.domain import Invoice
from projections.base import (
    POSTGRES,
    SQLITE,
    UNITS_PER_MAJOR,
    Col,
    Delivered,
    FoldProjection,
    Store,
    Table,
    Tx,
    decode,
    entity_key,
    to_units,
    utc_day,
)
from projections.invoice_history import StatusSpan, invoice_status_history
from projections.invoice_lines import LineRow, invoice_lines
from projections.usage import UsageTotal, usage_for_period

STATUSES = ("draft", "open", "paid", "past_due", "uncollectible", "void")

INVOICES = Table(
    name="proj_invoices",
    cols=(
        Col("seq", "bigint", False),
        Col("invoice_id", "text", False),
        Col("stripe_id", "text", False),
        Col("number", "text"),
        Col("entity_id", "text", False),
        Col("entity_name", "text", False),
        Col("currency", "text", False),
        Col("period_start", "date", False),
        Col("period_end", "date", False),
        Col("issue_date", "date"),
        Col("list_date", "date", False),
        Col("due_date", "date"),
        Col("subtotal", "decimal", False),
        Col("tax", "decimal", False),
        Col("total", "decimal", False),
        Col("total_units", "bigint", False),
        Col("status", "text", False),
        Col("amount_paid", "decimal", False),
        Col("paid_at", "timestamp"),
        Col("attempt_count", "int", False),
        Col("credit_notes", "json", False),
        Col("credited", "decimal", False),
        Col("replaces", "text"),
        Col("replaced_by", "text"),
        Col("updated_at", "timestamp", False),
        Col("position", "bigint", False),
    ),
    key=("invoice_id",),
    rowid_key="seq",
    # One index per filter combination, each ending in the sort key and the
    # tie-break, so a filtered page is an index range read in order, never a sort.
    # The two sort orders' indexes also carry the filter columns, so a page that
    # has to skip non-matching rows reads index entries, not table rows; the total
    # indexes carry the date, so sorting a narrow total range by date reads no rows.
    indexes=(
        ("list_date", "seq", "status", "total_units", "entity_id"),
        ("entity_id", "list_date", "seq"),
        ("status", "list_date", "seq", "total_units"),
        ("entity_id", "status", "list_date", "seq"),
        ("total_units", "seq", "list_date", "status"),
        ("entity_id", "total_units", "seq", "list_date"),
        ("status", "total_units", "seq", "list_date"),
        ("number",),
        # The totals by status and currency: an unfiltered GROUP BY reads this index
        # alone, in group order (a million rows: seconds without it, 0.2 s with it).
        # Made by the next runner start on a book built before it (IF NOT EXISTS).
        ("status", "currency", "total_units"),
    ),
    unique=(("stripe_id",),),
    extra={
        SQLITE: (
            # Substring search on the number: an external-content FTS5 trigram index
            # kept in step by triggers, in the rows' own transaction.
            "CREATE VIRTUAL TABLE IF NOT EXISTS proj_invoices_fts USING fts5("
            "number, content='proj_invoices', content_rowid='seq', tokenize='trigram')",
            "CREATE TRIGGER IF NOT EXISTS proj_invoices_fts_i AFTER INSERT ON proj_invoices "
            "WHEN new.number IS NOT NULL "
            "BEGIN INSERT INTO proj_invoices_fts(rowid, number) VALUES (new.seq, new.number); END",
            "CREATE TRIGGER IF NOT EXISTS proj_invoices_fts_u AFTER UPDATE ON proj_invoices "
            "WHEN old.number IS NOT new.number BEGIN "
            "INSERT INTO proj_invoices_fts(proj_invoices_fts, rowid, number) "
            "SELECT 'delete', old.seq, old.number WHERE old.number IS NOT NULL; "
            "INSERT INTO proj_invoices_fts(rowid, number) "
            "SELECT new.seq, new.number WHERE new.number IS NOT NULL; END",
            "CREATE TRIGGER IF NOT EXISTS proj_invoices_fts_d AFTER DELETE ON proj_invoices "
            "WHEN old.number IS NOT NULL "
            "BEGIN INSERT INTO proj_invoices_fts(proj_invoices_fts, rowid, number) "
            "VALUES ('delete', old.seq, old.number); END",
            # After a bulk load the index is built from the rows in one pass. Only
            # then: these statements also run at every start of a runner (each web
            # worker, each CLI command), where rebuilding a full index took 2.7 s
            # at a million invoices, holding the write lock.
            "INSERT INTO proj_invoices_fts(proj_invoices_fts) SELECT 'rebuild' "
            "WHERE NOT EXISTS (SELECT 1 FROM proj_invoices_fts_docsize)",
        ),
        POSTGRES: (
            "CREATE EXTENSION IF NOT EXISTS pg_trgm",
            "CREATE INDEX IF NOT EXISTS proj_invoices_trgm ON {p}proj_invoices "
            "USING gin (number gin_trgm_ops)",
        ),
    },
)

# The entities' current names, which the rows carry. Entity names are searched
# here, a row per entity, not in the million invoice rows that repeat them.
ENTITY_NAMES = Table(
    name="proj_invoice_entity_names",
    cols=(
        Col("aggregate_id", "text", False),
        Col("entity_id", "text", False),
        Col("name", "text", False),
        Col("seq", "bigint", False),
    ),
    key=("aggregate_id",),
    companions={
        SQLITE: (
            "CREATE VIRTUAL TABLE IF NOT EXISTS proj_invoice_entity_names_fts USING fts5("
            "name, entity_id UNINDEXED, tokenize='trigram')",
        ),
        POSTGRES: (
            "CREATE EXTENSION IF NOT EXISTS pg_trgm",
            "CREATE INDEX IF NOT EXISTS proj_invoice_entity_names_trgm ON "
            "{p}proj_invoice_entity_names USING gin (name gin_trgm_ops)",
        ),
    },
)

_STATUS_OF = {
    Invoice.Issued: "open",
    Invoice.Paid: "paid",
    Invoice.BecamePastDue: "past_due",
    Invoice.Voided: "void",
    Invoice.MarkedUncollectible: "uncollectible",
}


def _set_totals(row: dict[str, Any], e: Any) -> None:
    row["subtotal"], row["tax"], row["total"] = e.subtotal, e.tax, e.total
    row["total_units"] = to_units(e.total)


class InvoicesProjection(FoldProjection):
    name = "invoices"
    version = 4
    table = INVOICES
    key_column = "invoice_id"
    tables = (INVOICES, ENTITY_NAMES)
    creates = (Invoice.Drafted,)
    _invoice_events = (
        Invoice.Drafted,
        Invoice.Issued,
        Invoice.LinesRevised,
        Invoice.PaymentFailed,
        Invoice.Paid,
        Invoice.BecamePastDue,
        Invoice.Voided,
        Invoice.MarkedUncollectible,
        Invoice.CreditNoteIssued,
        Invoice.CreditNoteVoided,
        Invoice.Replaced,
    )
    topics = tuple(
        get_topic(c) for c in (*_invoice_events, BillableEntity.Registered, BillableEntity.Renamed)
    )

    side_events = (BillableEntity.Registered, BillableEntity.Renamed)

    def before(self, tx: Tx, page: Sequence[Delivered]) -> None:
        # The entity names this page needs: the invoice rows carry the entity's
        # current name, so the list can be searched and sorted without a join.
        keys = {
            entity_key(d.event.entity_id)
            if isinstance(d.event, Invoice.Drafted)
            else d.event.originator_id.hex
            for d in page
            if isinstance(d.event, Invoice.Drafted | BillableEntity.Renamed)
        }
        self._entities: dict[str, dict[str, Any]] = {
            row["aggregate_id"]: row
            for row in tx.select_in(ENTITY_NAMES, "aggregate_id", sorted(keys))
        }
        self._touched: set[str] = set()
        self._renamed: set[str] = set()

    def apply_side(self, d: Delivered) -> None:
        e = d.event
        key = e.originator_id.hex
        if isinstance(e, BillableEntity.Registered):
            self._entities[key] = {
                "aggregate_id": key,
                "entity_id": e.entity_id,
                "name": e.name,
                "seq": d.id,
            }
        elif key in self._entities:
            self._entities[key]["name"] = e.name
            self._renamed.add(key)
        self._touched.add(key)

    def apply(self, row: dict[str, Any] | None, d: Delivered, tx: Tx) -> dict[str, Any] | None:
        e = d.event
        if isinstance(e, Invoice.Drafted):
            entity = self._entities.get(entity_key(e.entity_id))
            return {
                "seq": d.id,
                "invoice_id": e.originator_id.hex,
                "stripe_id": e.stripe_id,
                "number": None,
                "entity_id": e.entity_id,
                "entity_name": entity["name"] if entity else e.entity_id,
                "currency": e.currency,
                "period_start": e.period.start,
                "period_end": e.period.end,
                "issue_date": None,
                "list_date": utc_day(e.timestamp),
                "due_date": None,
                "subtotal": e.subtotal,
                "tax": e.tax,
                "total": e.total,
                "total_units": to_units(e.total),
                "status": "draft",
                "amount_paid": Decimal(0),
                "paid_at": None,
                "attempt_count": 0,
                "credit_notes": {},
                "credited": Decimal(0),
                "replaces": e.replaces,
                "replaced_by": None,
                "updated_at": e.timestamp,
                "position": d.id,
            }
        if row is None:
            return None
        row = dict(row)
        status = _STATUS_OF.get(type(e))
        if status is not None:
            row["status"] = status
        if isinstance(e, Invoice.Issued):
            row["number"] = e.number
            row["issue_date"] = row["list_date"] = e.issue_date
            row["due_date"] = e.due_date
            _set_totals(row, e)
        elif isinstance(e, Invoice.LinesRevised):
            _set_totals(row, e)
        elif isinstance(e, Invoice.PaymentFailed):
            row["attempt_count"] = e.attempt_count
        elif isinstance(e, Invoice.Paid):
            row["amount_paid"], row["paid_at"] = e.amount_paid, e.paid_at
        elif isinstance(e, Invoice.CreditNoteIssued):
            row["credit_notes"] = {**row["credit_notes"], e.credit_note_id: [str(e.amount), False]}
        elif isinstance(e, Invoice.CreditNoteVoided):
            notes = dict(row["credit_notes"])
            notes[e.credit_note_id] = [notes[e.credit_note_id][0], True]
            row["credit_notes"] = notes
        elif isinstance(e, Invoice.Replaced):
            row["replaced_by"] = e.replacement_stripe_id
        row["credited"] = sum(
            (Decimal(amount) for amount, voided in row["credit_notes"].values() if not voided),
            Decimal(0),
        )
        row["updated_at"], row["position"] = e.timestamp, d.id
        return row

    def after(self, tx: Tx, page: Sequence[Delivered], changed: dict[str, dict[str, Any]]) -> None:
        touched = [self._entities[k] for k in sorted(self._touched)]
        tx.upsert(ENTITY_NAMES, touched)
        if tx.backend == SQLITE and touched:
            seqs = [e["seq"] for e in touched]
            clause, params = tx.in_list(seqs)
            tx.execute(f"DELETE FROM proj_invoice_entity_names_fts WHERE rowid {clause}", params)
            tx.executemany(
                "INSERT INTO proj_invoice_entity_names_fts (rowid, name, entity_id) "
                "VALUES (?, ?, ?)",
                [(e["seq"], e["name"], e["entity_id"]) for e in touched],
            )
        for key in sorted(self._renamed):
            entity = self._entities[key]
            tx.execute(
                "UPDATE {p}proj_invoices SET entity_name = ? WHERE entity_id = ? "
                "AND entity_name <> ?",
                (entity["name"], entity["entity_id"], entity["name"]),
            )


# Queries ---------------------------------------------------------------------------


class InvalidQuery(ValueError):
    """A filter, sort or cursor the list cannot use; the message says which."""


@dataclass(frozen=True)
class InvoiceQuery:
    """The list's filters. `status` with `as_of` is the status on that day; the other
    fields (number, dates, total, entity name) are always the invoice's current ones.
    `search` is a case-insensitive substring of the number or the entity's name."""

    entity_id: str | None = None
    status: str | None = None
    issued_from: date | None = None
    issued_to: date | None = None  # inclusive
    total_min: Decimal | None = None
    total_max: Decimal | None = None
    search: str | None = None
    as_of: date | None = None
    sort: str = "date"  # "date" (issue date) or "total"
    descending: bool = True

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise InvalidQuery(f"status must be one of {', '.join(STATUSES)}, not {self.status!r}")
        if self.sort not in _SORT_COLUMNS:
            raise InvalidQuery(f"sort must be date or total, not {self.sort!r}")


@dataclass(frozen=True)
class InvoiceRow:
    number: str | None
    stripe_id: str
    entity_id: str
    entity_name: str
    issue_date: date | None
    due_date: date | None
    total: Decimal
    currency: str
    status: str

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "stripe_id": self.stripe_id,
            "entity_id": self.entity_id,
            "entity_name": self.entity_name,
            "issue_date": self.issue_date.isoformat() if self.issue_date else None,
            "due_date": self.due_date.isoformat() if self.due_date else None,
            "total": str(self.total),
            "currency": self.currency,
            "status": self.status,
        }


@dataclass(frozen=True)
class InvoicePage:
    rows: list[InvoiceRow]
    next_cursor: str | None
    # Set on a page that has rows before it: pass it as `before` for the page
    # before (its `limit` rows just before this page's first).
    prev_cursor: str | None = None


_SORT_COLUMNS = {"date": ("list_date", "date"), "total": ("total_units", "bigint")}
_ROW_COLS = (
    ("number", "text"),
    ("stripe_id", "text"),
    ("entity_id", "text"),
    ("entity_name", "text"),
    ("issue_date", "date"),
    ("due_date", "date"),
    ("total", "decimal"),
    ("currency", "text"),
)


def _encode_cursor(sort: str, value: Any, seq: int) -> str:
    raw = f"{sort}|{value}|{seq}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, value, seq = raw.split("|")
        if kind != sort:
            raise ValueError(kind)
        key = date.fromisoformat(value) if sort == "date" else _bigint(value)
        return key, _bigint(seq)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidQuery("the page cursor does not belong to this list") from exc


def _bigint(text: str) -> int:
    # A forged cursor's number must not reach the driver: SQLite cannot bind an int
    # past 64 bits (OverflowError, not a query error).
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError(text)
    return value


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(
    tx: Tx,
    q: InvoiceQuery,
    scan: frozenset[str] = frozenset(),
    search_keys: list[int] | None = None,
) -> tuple[list[str], list[Any]]:
    """The WHERE terms of `q`. Terms named in `scan` are written with SQLite's unary
    `+`, which keeps the planner from driving the query by their index (see
    `_plan_scan`)."""
    conds: list[str] = []
    params: list[Any] = []
    backend = tx.backend
    total = "+i.total_units" if "total" in scan else "i.total_units"
    seq, entity = ("+i.seq", "+i.entity_id") if "search" in scan else ("i.seq", "i.entity_id")

    def enc(value: Any) -> Any:
        return value.isoformat() if backend == SQLITE and isinstance(value, date) else value

    if q.entity_id is not None:
        conds.append("i.entity_id = ?")
        params.append(q.entity_id)
    if q.status is not None:
        conds.append("h.status = ?" if q.as_of else "i.status = ?")
        params.append(q.status)
    if q.issued_from is not None:
        conds.append("i.list_date >= ?")
        params.append(enc(q.issued_from))
    if q.issued_to is not None:
        conds.append("i.list_date <= ?")
        params.append(enc(q.issued_to))
    if q.as_of is not None:
        conds.append("i.list_date <= ?")
        params.append(enc(q.as_of))
    if q.total_min is not None:
        conds.append(f"{total} >= ?")
        params.append(to_units(q.total_min))
    if q.total_max is not None:
        conds.append(f"{total} <= ?")
        params.append(to_units(q.total_max))
    if q.search:
        text = " ".join(q.search.split())
        if search_keys is not None:
            conds.append("i.seq = ANY(?)")
            params.append(search_keys)
        elif backend == SQLITE and len(text) >= 3:
            # Trigram MATCH of the text as one phrase: a case-insensitive substring.
            phrase = '"' + text.replace('"', '""') + '"'
            conds.append(
                f"({seq} IN (SELECT rowid FROM proj_invoices_fts WHERE proj_invoices_fts MATCH ?)"
                f" OR {entity} IN (SELECT entity_id FROM proj_invoice_entity_names_fts "
                "WHERE proj_invoice_entity_names_fts MATCH ?))"
            )
            params.extend([phrase, phrase])
        elif backend == SQLITE:
            conds.append(
                "(i.number LIKE ? ESCAPE '\\' OR i.entity_id IN (SELECT entity_id FROM "
                "proj_invoice_entity_names WHERE name LIKE ? ESCAPE '\\'))"
            )
            params.extend([f"%{_like_escape(text)}%"] * 2)
        else:
            # `= ANY(ARRAY(subquery))` is computed once, before the scan, so the
            # planner can OR the number's trigram index with the entity index; an
            # `IN (subquery)` in an OR is a per-row filter over the whole table.
            conds.append(
                "(i.number ILIKE ? OR i.entity_id = ANY(ARRAY(SELECT entity_id FROM "
                "{p}proj_invoice_entity_names WHERE name ILIKE ?)))"
            )
            params.extend([f"%{_like_escape(text)}%"] * 2)
    return conds, params


def _from(tx: Tx, q: InvoiceQuery) -> tuple[str, list[Any]]:
    if q.as_of is None:
        return "{p}proj_invoices i", []
    day = q.as_of.isoformat() if tx.backend == SQLITE else q.as_of
    # Listed as of D: invoices issued (drafts: drafted) on or before D, with the
    # status their history gives for D. The bound on list_date is also what keeps
    # the query a range read of the list_date index.
    return (
        "{p}proj_invoices i JOIN {p}proj_invoice_status h ON h.invoice_id = i.invoice_id "
        "AND h.valid_from <= ? AND (h.valid_to IS NULL OR h.valid_to > ?)",
        [day, day],
    )


# A filter matching at least this many invoices is cheaper to apply while reading
# the sort order's index (about 50 / share-of-matches entries until a page is full)
# than by fetching every match and sorting them; below it, the other way round.
PROBE = 3000


def _plan_scan(tx: Tx, q: InvoiceQuery) -> frozenset[str]:
    """Which range and search filters the list should apply while scanning the sort
    order instead of driving the query by them. SQLite's planner has no histograms
    to tell a narrow total range from a wide one, so it is asked with a count that
    stops at PROBE (an index-only read of at most PROBE entries)."""
    if tx.backend != SQLITE or q.sort != "date" or q.entity_id is not None or q.as_of:
        return frozenset()
    scan: set[str] = set()
    for name, present in (
        ("total", q.total_min is not None or q.total_max is not None),
        ("search", bool(q.search) and len(" ".join((q.search or "").split())) >= 3),
    ):
        if not present:
            continue
        only = InvoiceQuery(
            status=q.status,
            total_min=q.total_min if name == "total" else None,
            total_max=q.total_max if name == "total" else None,
            search=q.search if name == "search" else None,
        )
        conds, params = _where(tx, only)
        rows = tx.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {{p}}proj_invoices i "
            f"WHERE {' AND '.join(conds)} LIMIT {PROBE})",
            params,
        )
        if rows[0][0] >= PROBE:
            scan.add(name)
    return frozenset(scan)


def _search_keys(tx: Tx, q: InvoiceQuery) -> list[int] | None:
    """PostgreSQL: the invoices a search matches, when fewer than PROBE. Its planner
    cannot estimate a trigram match and would rather read the whole date order
    filtering each row; given the keys, it reads just those rows."""
    if tx.backend != POSTGRES or not q.search:
        return None
    pattern = f"%{_like_escape(' '.join(q.search.split()))}%"
    rows = tx.execute(
        f"(SELECT seq FROM {{p}}proj_invoices WHERE number ILIKE ? LIMIT {PROBE}) UNION "
        f"(SELECT seq FROM {{p}}proj_invoices WHERE entity_id = ANY(ARRAY(SELECT entity_id "
        f"FROM {{p}}proj_invoice_entity_names WHERE name ILIKE ?)) LIMIT {PROBE})",
        (pattern, pattern),
    )
    return [int(r[0]) for r in rows] if len(rows) < PROBE else None


def _list_sql(
    tx: Tx, q: InvoiceQuery, limit: int, after: str | None
) -> tuple[str, list[Any], str, str]:
    column, type_ = _SORT_COLUMNS[q.sort]
    source, params = _from(tx, q)
    conds, where_params = _where(tx, q, _plan_scan(tx, q), _search_keys(tx, q))
    params += where_params
    if after is not None:
        value, seq = _decode_cursor(after, q.sort)
        if tx.backend == SQLITE and isinstance(value, date):
            value = value.isoformat()
        # Written so the first term bounds the index range and the planner keeps
        # it: `(a, b) < (x, y)` alone is not a range on every planner.
        if q.descending:
            conds.append(f"i.{column} <= ? AND (i.{column} < ? OR i.seq < ?)")
        else:
            conds.append(f"i.{column} >= ? AND (i.{column} > ? OR i.seq > ?)")
        params += [value, value, seq]
    direction = "DESC" if q.descending else "ASC"
    order = f" ORDER BY i.{column} {direction}, i.seq {direction}"
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    cols = ", ".join(f"i.{c}" for c, _ in _ROW_COLS)
    params.append(limit + 1)
    if q.as_of:
        sql = f"SELECT i.seq, i.{column}, {cols}, h.status FROM {source}{where}{order} LIMIT ?"
        return sql, params, column, type_
    # Find the page's rows in the indexes alone, then read just those rows: a sort
    # of a few thousand matches then carries keys, not whole rows fetched one by
    # one (the planners fetch every candidate row before a top-N sort).
    r_cols = ", ".join(f"r.{c}" for c, _ in _ROW_COLS)
    sql = (
        f"SELECT r.seq, r.{column}, {r_cols}, r.status "
        f"FROM (SELECT i.seq FROM {source}{where}{order} LIMIT ?) AS k "
        f"JOIN {{p}}proj_invoices r ON r.seq = k.seq "
        f"ORDER BY r.{column} {direction}, r.seq {direction}"
    )
    return sql, params, column, type_


def list_invoices(
    store: Store,
    query: InvoiceQuery | None = None,
    *,
    limit: int = 50,
    after: str | None = None,
    before: str | None = None,
) -> InvoicePage:
    """One page of the invoice list; pass the returned `next_cursor` as `after` for
    the next page (None when this page is the last), `prev_cursor` as `before` for
    the one before it (None when this page is the first)."""
    q = query or InvoiceQuery()
    with store.reading() as tx:
        return _page(tx, q, limit, after, before)


def _page(
    tx: Tx, q: InvoiceQuery, limit: int, after: str | None, before: str | None = None
) -> InvoicePage:
    if not 1 <= limit <= 1000:
        raise InvalidQuery(f"limit must be 1 to 1000, not {limit}")
    if after is not None and before is not None:
        raise InvalidQuery("a page is either after a cursor or before one, not both")
    # The page before a cursor is the page after it in the opposite order, reversed.
    walk = replace(q, descending=not q.descending) if before is not None else q
    sql, params, _, type_ = _list_sql(tx, walk, limit, before if before is not None else after)
    rows = tx.execute(sql, params)
    more = len(rows) > limit
    rows = rows[:limit]
    if before is not None:
        rows.reverse()

    def cursor_of(row: Sequence[Any]) -> str:
        value = decode(row[1], type_, tx.backend)
        return _encode_cursor(q.sort, value.isoformat() if type_ == "date" else value, row[0])

    result = [_invoice_row(r[2:], tx.backend) for r in rows]
    if not rows:
        return InvoicePage(result, None)
    if before is not None:
        return InvoicePage(result, cursor_of(rows[-1]), cursor_of(rows[0]) if more else None)
    return InvoicePage(
        result,
        cursor_of(rows[-1]) if more else None,
        cursor_of(rows[0]) if after is not None else None,
    )


def count_invoices(store: Store, query: InvoiceQuery | None = None) -> int:
    q = query or InvoiceQuery()
    with store.reading() as tx:
        source, params = _from(tx, q)
        conds, where_params = _where(tx, q)
        rows = tx.execute(
            f"SELECT count(*) FROM {source}" + (f" WHERE {' AND '.join(conds)}" if conds else ""),
            params + where_params,
        )
    return int(rows[0][0])


def list_plan(store: Store, query: InvoiceQuery | None = None, *, limit: int = 50) -> list[str]:
    """The database's plan for a list query (the bench prints it)."""
    q = query or InvoiceQuery()
    with store.reading() as tx:
        sql, params, _, _ = _list_sql(tx, q, limit, None)
        if tx.backend == SQLITE:
            rows = tx.execute("EXPLAIN QUERY PLAN " + sql, params)
            return [str(r[3]) for r in rows]
        rows = tx.execute("EXPLAIN " + sql, params)
        return [str(r[0]) for r in rows]


def find_invoice(store: Store, ref: str) -> InvoiceRow | None:
    """An invoice by number or Stripe id."""
    with store.reading() as tx:
        cols = ", ".join(f"i.{c}" for c, _ in _ROW_COLS)
        rows = tx.execute(
            f"SELECT {cols}, i.status FROM {{p}}proj_invoices i "
            "WHERE i.stripe_id = ? OR i.number = ? ORDER BY i.seq LIMIT 1",
            (ref, ref),
        )
    if not rows:
        return None
    return _invoice_row(rows[0], store.backend)


@dataclass(frozen=True)
class StatusTotal:
    """The invoices of one status and currency in a filtered list: how many, and
    their totals added up (amounts in different currencies are never summed)."""

    status: str
    currency: str
    count: int
    total: Decimal


def _totals(tx: Tx, q: InvoiceQuery) -> list[StatusTotal]:
    source, params = _from(tx, q)
    conds, where_params = _where(tx, q)
    status = "h.status" if q.as_of else "i.status"
    where = f" WHERE {' AND '.join(conds)}" if conds else ""
    # Summed in integer units: SQLite keeps amounts as text, and its sum() of text
    # is a float.
    rows = tx.execute(
        f"SELECT {status}, i.currency, count(*), sum(i.total_units) FROM {source}{where} "
        f"GROUP BY {status}, i.currency",
        params + where_params,
    )
    found = [
        StatusTotal(str(s), str(c), int(n), Decimal(int(units)) / UNITS_PER_MAJOR)
        for s, c, n, units in rows
    ]
    order = {s: n for n, s in enumerate(STATUSES)}
    return sorted(found, key=lambda t: (order.get(t.status, len(order)), t.currency))


def totals_by_status(store: Store, query: InvoiceQuery | None = None) -> list[StatusTotal]:
    """Count and total of the invoices `query` matches, per status (the status as
    of `query.as_of` when given) and currency, in STATUSES order. One GROUP BY over
    every matching row: a millisecond for one entity's invoices, a tenth of a second
    for a million unfiltered (an index-only read), longer for a broad filter the
    index does not cover, so the portal asks for it on its own."""
    with store.reading() as tx:
        return _totals(tx, query or InvoiceQuery())


@dataclass(frozen=True)
class InvoiceListing:
    """What the Invoices page shows, read in one snapshot: a page of the list and the
    entities to filter by. (Its totals by status are `totals_by_status`, asked for
    separately: over a broad filter they read every matching row.)"""

    page: InvoicePage
    # (entity id, name) by name, at most ENTITY_CHOICES of them; None when there are
    # more (a page then takes an entity id rather than offering a long list).
    entities: list[tuple[str, str]] | None


ENTITY_CHOICES = 200
_MANY_ENTITIES: weakref.WeakSet[Store] = weakref.WeakSet()


def invoice_listing(
    store: Store,
    query: InvoiceQuery | None = None,
    *,
    limit: int = 50,
    after: str | None = None,
    before: str | None = None,
) -> InvoiceListing:
    """One page of the list and the entities to filter by. Raises InvalidQuery for
    a bad limit or cursor."""
    q = query or InvoiceQuery()
    with store.reading() as tx:
        page = _page(tx, q, limit, after, before)
        if store in _MANY_ENTITIES:
            return InvoiceListing(page, None)
        # Counted first (at most ENTITY_CHOICES + 1 index entries): with more
        # entities than that the names are not shown, and reading and sorting all
        # of them by name on every page was a third of the list's query time.
        many = tx.execute(
            "SELECT count(*) FROM (SELECT 1 FROM {p}proj_invoice_entity_names LIMIT ?) AS n",
            (ENTITY_CHOICES + 1,),
        )
        if many[0][0] > ENTITY_CHOICES:
            # Entities are never removed (a rebuild refills them all), so once
            # there are too many to offer there always are: not counted again.
            _MANY_ENTITIES.add(store)
            return InvoiceListing(page, None)
        entities = tx.execute(
            "SELECT entity_id, name FROM {p}proj_invoice_entity_names ORDER BY name, entity_id"
        )
    return InvoiceListing(page, [(str(e), str(n)) for e, n in entities])


@dataclass(frozen=True)
class Reconciliation:
    """The usage lines' billed quantity against the calls the ledger counted for the
    invoice's period (the usage read model, as recorded now)."""

    billed: Decimal
    calls: int
    duplicates: int

    @property
    def difference(self) -> Decimal:
        """Billed less counted: positive bills calls nobody made, negative leaves
        calls unbilled."""
        return self.billed - self.calls

    @property
    def matches(self) -> bool:
        return self.difference == 0


@dataclass(frozen=True)
class InvoiceDetail:
    """One invoice as the read models have it now: its row and the facts the list
    does not carry, its lines, status history and the usage of its period."""

    row: InvoiceRow
    period_start: date
    period_end: date  # exclusive
    subtotal: Decimal
    tax: Decimal
    amount_paid: Decimal
    credited: Decimal
    replaces: str | None
    replaced_by: str | None
    lines: list[LineRow]
    history: list[StatusSpan]
    usage: UsageTotal

    @property
    def reconciliation(self) -> Reconciliation | None:
        """None when the invoice has no usage line."""
        usage_lines = [line for line in self.lines if line.kind == "usage"]
        if not usage_lines:
            return None
        billed = sum((line.quantity for line in usage_lines), Decimal(0))
        return Reconciliation(billed, self.usage.calls, self.usage.duplicates)


def invoice_detail(store: Store, ref: str) -> InvoiceDetail | None:
    """The invoice with number or Stripe id `ref`, with its lines, status history and
    its period's usage (None when there is none)."""
    if "\x00" in ref:  # in no invoice's number, and PostgreSQL refuses it as a parameter
        return None
    with store.reading() as tx:
        found = tx.select(
            INVOICES, "stripe_id = ? OR number = ?", (ref, ref), "ORDER BY seq LIMIT 1"
        )
    if not found:
        return None
    r = found[0]
    row = InvoiceRow(**{c: r[c] for c, _ in _ROW_COLS}, status=r["status"])
    return InvoiceDetail(
        row=row,
        period_start=r["period_start"],
        period_end=r["period_end"],
        subtotal=r["subtotal"],
        tax=r["tax"],
        amount_paid=r["amount_paid"],
        credited=r["credited"],
        replaces=r["replaces"],
        replaced_by=r["replaced_by"],
        lines=invoice_lines(store, row.stripe_id),
        history=invoice_status_history(store, row.stripe_id),
        usage=usage_for_period(store, row.entity_id, r["period_start"], r["period_end"]),
    )


def _invoice_row(r: Sequence[Any], backend: str) -> InvoiceRow:
    """An InvoiceRow from the `_ROW_COLS` values followed by the status."""
    number, stripe_id, entity_id, entity_name, issued, due, total, currency, status = r[:9]
    if backend == SQLITE:
        # Decoded here rather than column by column through `decode`: a page's rows
        # went through it 400 times.
        issued = None if issued is None else date.fromisoformat(issued)
        due = None if due is None else date.fromisoformat(due)
        total = Decimal(total)
    return InvoiceRow(
        number, stripe_id, entity_id, entity_name, issued, due, total, currency, str(status)
    )
