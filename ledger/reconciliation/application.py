"""Recording reconciliation runs and reading them back."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.application import LedgerBase, topics_of
from ledger.errors import NotFound
from ledger.reconciliation.domain import Finding, Reconciliation
from ledger.sources import Source


class ReconciliationCommands(LedgerBase):
    def record_reconciliation(
        self, run_id: str, checked: int, findings: Sequence[Finding], source: Source
    ) -> Reconciliation:
        """Record a run and what it found; the same run recorded again is the
        first record (a scheduler run retried does not find things twice)."""
        run = Reconciliation.record(run_id, checked, list(findings), source, self.clock())
        if self._create(run):
            return run
        return self.reconciliation(run_id)

    def reconciliation(self, run_id: str) -> Reconciliation:
        return self.load(
            Reconciliation,
            Reconciliation.create_id(run_id),
            lambda: NotFound(f"no reconciliation run {run_id!r}"),
        )

    def reconciliations(self) -> list[Reconciliation]:
        """Every run, oldest first."""
        runs = self.events_of_topics(topics_of(Reconciliation.Reconciled))
        return [self.reconciliation(event.run_id) for event in runs]

    def latest_reconciliation(self) -> Reconciliation | None:
        latest = None
        for event in self.events_of_topics(topics_of(Reconciliation.Reconciled)):
            latest = event.run_id
        return None if latest is None else self.reconciliation(latest)
