"""Invoice lines as Stripe billed them, replaced whole whenever the invoice's lines
change (drafted, revised, finalized)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from eventsourcing.utils import get_topic

from ledger.invoices.domain import Invoice
from projections.base import Col, Delivered, Projection, Store, Table, Tx

LINES = Table(
    name="proj_invoice_lines",
    cols=(
        Col("invoice_id", "text", False),
        Col("line_no", "int", False),
        Col("line_id", "text", False),
        Col("kind", "text", False),
        Col("description", "text", False),
        Col("quantity", "decimal", False),
        Col("unit_amount", "decimal"),
        Col("amount", "decimal", False),
        Col("price_id", "text"),
        Col("period_start", "date"),
        Col("period_end", "date"),
    ),
    key=("invoice_id", "line_no"),
)


class InvoiceLinesProjection(Projection):
    name = "invoice_lines"
    version = 1
    tables = (LINES,)
    topics = tuple(get_topic(c) for c in (Invoice.Drafted, Invoice.LinesRevised, Invoice.Issued))

    def process(self, tx: Tx, page: Sequence[Delivered]) -> None:
        final: dict[str, list[Any]] = {}
        created: set[str] = set()
        for d in page:
            key = d.event.originator_id.hex
            final[key] = d.event.lines
            if isinstance(d.event, Invoice.Drafted):
                created.add(key)
        replaced = sorted(k for k in final if k not in created)
        for i in range(0, len(replaced), 500):
            clause, params = tx.in_list(replaced[i : i + 500])
            tx.execute(f"DELETE FROM {{p}}proj_invoice_lines WHERE invoice_id {clause}", params)
        tx.insert(
            LINES,
            [
                {
                    "invoice_id": key,
                    "line_no": n,
                    "line_id": line.line_id,
                    "kind": line.kind,
                    "description": line.description,
                    "quantity": line.quantity,
                    "unit_amount": line.unit_amount,
                    "amount": line.amount,
                    "price_id": line.price_id,
                    "period_start": line.period.start if line.period else None,
                    "period_end": line.period.end if line.period else None,
                }
                for key, lines in final.items()
                for n, line in enumerate(lines, 1)
            ],
        )


@dataclass(frozen=True)
class LineRow:
    line_id: str
    kind: str
    description: str
    quantity: Decimal
    unit_amount: Decimal | None
    amount: Decimal
    price_id: str | None
    period_start: date | None
    period_end: date | None


def invoice_lines(store: Store, stripe_id: str) -> list[LineRow]:
    key = Invoice.create_id(stripe_id).hex
    with store.reading() as tx:
        rows = tx.select(LINES, "invoice_id = ?", (key,), "ORDER BY line_no")
    return [
        LineRow(**{k: v for k, v in r.items() if k not in ("invoice_id", "line_no")}) for r in rows
    ]
