"""A reconciliation run and its findings. One aggregate per run (its id comes from
the run's source), created with everything it found in one event, so a run is
recorded whole or not at all, and a rerun of the same scheduler run changes
nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from ledger.aggregate import LedgerAggregate
from ledger.errors import LedgerError
from ledger.sources import Source
from ledger.values import natural_id


class InvalidFinding(LedgerError):
    pass


class FindingKind(StrEnum):
    # The ledger counted calls that were never pushed to Stripe (or pushed more).
    NOT_PUSHED = "not_pushed"
    # What billtrail pushed is not what Stripe's meter holds for the period.
    METER_DIFFERS = "meter_differs"
    # Stripe invoiced another quantity than the usage pushed for the period.
    QUANTITY_DIFFERS = "quantity_differs"
    # The usage lines' amount is not the ledger's calls at the rates in force.
    AMOUNT_DIFFERS = "amount_differs"


@dataclass(frozen=True)
class Finding:
    """One mismatch on one invoice. Quantities and amounts are decimal strings
    (amounts in major units of the invoice currency)."""

    invoice: str
    number: str | None
    entity_id: str
    kind: str
    expected: str
    actual: str
    detail: str

    def __post_init__(self) -> None:
        try:
            FindingKind(self.kind)
        except ValueError as exc:
            raise InvalidFinding(f"unknown finding kind {self.kind!r}") from exc

    def stored(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Finding:
        return cls(**data)


class Reconciliation(LedgerAggregate):
    TOPIC = "billtrail:Reconciliation"

    class Event(LedgerAggregate.Event):
        pass

    class Created(Event, LedgerAggregate.Created):
        TOPIC = "billtrail:Reconciliation.Created"

    class Reconciled(Created):
        TOPIC = "billtrail:Reconciliation.Reconciled"
        run_id: str
        checked: int
        findings: list[dict[str, Any]]

    def __init__(
        self, run_id: str, checked: int, findings: list[dict[str, Any]], source: Source
    ) -> None:
        self.run_id = run_id
        self.checked = checked
        self.findings = [Finding.from_stored(f) for f in findings]
        self.reconciled_at = self.created_on

    @staticmethod
    def create_id(run_id: str) -> UUID:
        return natural_id("reconciliation", run_id)

    @classmethod
    def record(
        cls, run_id: str, checked: int, findings: list[Finding], source: Source, at: datetime
    ) -> Reconciliation:
        if checked < 0:
            raise InvalidFinding(f"a run cannot check {checked} invoices")
        return cls._create(
            cls.Reconciled,
            id=cls.create_id(run_id),
            run_id=run_id,
            checked=checked,
            findings=[f.stored() for f in findings],
            source=source,
            timestamp=at,
        )
