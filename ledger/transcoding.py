"""Transcodings for the value types stored in events. Their `name`s are stored in
every event forever: never rename one."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from eventsourcing.persistence import JSONTranscoder, Transcoding

from ledger.sources import Source
from ledger.values import Line, Period


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


class SourceAsDict(Transcoding):
    type = Source
    name = "source"

    def encode(self, obj: Source) -> dict[str, Any]:
        return {"kind": obj.kind, "id": obj.id, "actor": obj.actor}

    def decode(self, data: dict[str, Any]) -> Source:
        return Source(kind=data["kind"], id=data["id"], actor=data["actor"])


class PeriodAsDict(Transcoding):
    type = Period
    name = "period"

    def encode(self, obj: Period) -> dict[str, Any]:
        return {"start": obj.start, "end": obj.end}

    def decode(self, data: dict[str, Any]) -> Period:
        return Period(start=data["start"], end=data["end"])


class LineAsDict(Transcoding):
    type = Line
    name = "invoice_line"

    def encode(self, obj: Line) -> dict[str, Any]:
        return {
            "line_id": obj.line_id,
            "kind": obj.kind,
            "description": obj.description,
            "quantity": obj.quantity,
            "unit_amount": obj.unit_amount,
            "amount": obj.amount,
            "price_id": obj.price_id,
            "period": obj.period,
        }

    def decode(self, data: dict[str, Any]) -> Line:
        return Line(
            line_id=data["line_id"],
            kind=data["kind"],
            description=data["description"],
            quantity=Decimal(data["quantity"]),
            unit_amount=data["unit_amount"],
            amount=data["amount"],
            price_id=data["price_id"],
            period=data["period"],
        )


def register(transcoder: JSONTranscoder) -> None:
    for transcoding in (DateAsISO(), SourceAsDict(), PeriodAsDict(), LineAsDict()):
        transcoder.register(transcoding)
