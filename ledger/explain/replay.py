"""Folding one aggregate's events once into its state at several instants.

`Ledger.as_recorded` answers one instant and reads the events twice (once to find
the version, once to rebuild it). Explain needs each day of usage and the rate at
two instants (when the invoice was issued, and as of the question), and a day can
hold thousands of calls per event: decoding them is most of explain's time. Here
the events are read and decoded once and folded with the aggregate's own mutators
(`event.mutate`, as the library's repository does), the state copied at each cut."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from ledger.application import check_aware


def fold_at(events: Sequence[Any], instants: Sequence[datetime]) -> list[Any | None]:
    """The aggregate built from `events` (one aggregate's, in version order) as
    recorded at each of `instants`: from the events whose timestamp is at or before
    it; None when there is none. Timestamps are the ledger's recorded times, which
    only grow along one aggregate's events (each command reads the clock once)."""
    for at in instants:
        check_aware(at)
    order = sorted(range(len(instants)), key=lambda i: instants[i])
    states: list[Any | None] = [None] * len(instants)
    aggregate: Any = None
    k = 0
    for event in events:
        while k < len(order) and event.timestamp > instants[order[k]]:
            # Later events mutate the aggregate in place: keep a copy of this cut.
            states[order[k]] = copy.deepcopy(aggregate)
            k += 1
        if k == len(order):
            break
        aggregate = event.mutate(aggregate)
    for i in order[k:]:
        states[i] = aggregate
    return states


def states_at(
    app: Application[UUID], aggregate_id: UUID, instants: Sequence[datetime]
) -> tuple[list[Any], list[Any | None]]:
    """The aggregate's events (read and decoded once) and its state as recorded at
    each of `instants` (see `fold_at`)."""
    events = list(app.events.get(aggregate_id))
    return events, fold_at(events, instants)
