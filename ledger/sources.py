"""Every event says where it came from: which Stripe event or sync run, which admin,
which scheduler run, which import file. A command whose source has a stable id is
applied at most once per aggregate (see Ledger._save)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ledger.errors import InvalidSource


class SourceKind(StrEnum):
    STRIPE_EVENT = "stripe_event"
    SYNC_RUN = "sync_run"
    ADMIN = "admin"
    SCHEDULER_RUN = "scheduler_run"
    IMPORT_FILE = "import_file"
    CLI = "cli"
    SEED = "seed"


@dataclass(frozen=True)
class Source:
    kind: str
    id: str
    actor: str | None = None

    def __post_init__(self) -> None:
        try:
            SourceKind(self.kind)
        except ValueError as exc:
            raise InvalidSource(f"unknown source kind {self.kind!r}") from exc
        if not self.id:
            raise InvalidSource("a source needs an id")

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"

    def __str__(self) -> str:
        return f"{self.key} ({self.actor})" if self.actor else self.key
