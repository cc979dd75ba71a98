"""Folding one aggregate's events once into its state at several instants.

`Ledger.as_recorded` answers one instant and reads the events twice (once to find
the version, once to rebuild it). Explain needs each day of usage and the rate at
two instants (when the invoice was issued, and as of the question), and a day can
hold thousands of calls per event: decoding them is most of explain's time. Here
the events are read and decoded once and folded with the aggregate's own mutators
(`event.mutate`, as the library's repository does), the state copied at each cut."""

from __future__ import annotations

import copy
import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
            states[order[k]] = snapshot(aggregate)
            k += 1
        if k == len(order):
            break
        aggregate = event.mutate(aggregate)
    for i in order[k:]:
        states[i] = aggregate
    return states


def snapshot(aggregate: Any) -> Any:
    """A copy that later mutations of `aggregate` leave alone. The ledger's mutators
    assign attributes or add to a list, dict or set attribute, and what they hold
    are immutable values (frozen dataclasses, Decimals, dates): copying the object
    and its containers one level deep is enough, and a deepcopy of a day's usage
    reports or an invoice's lines is most of the cost of a cut."""
    if aggregate is None:
        return None
    copied = copy.copy(aggregate)
    for name, value in vars(copied).items():
        if isinstance(value, list | dict | set):
            setattr(copied, name, copy.copy(value))
    return copied


def states_at(
    app: Application[UUID], aggregate_id: UUID, instants: Sequence[datetime]
) -> tuple[list[Any], list[Any | None]]:
    """The aggregate's events (read and decoded once) and its state as recorded at
    each of `instants` (see `fold_at`)."""
    events = list(app.events.get(aggregate_id))
    return events, fold_at(events, instants)


@contextmanager
def collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a period's events are decoded: a
    hundred thousand calls are as many small lists, each allocation counts towards
    a collection, and the collections then walk everything decoded so far (a third
    of explain's time at 100k calls). Decoded events and aggregates hold no cycles,
    and any made meanwhile elsewhere are collected once it runs again. The previous
    state is restored, so a caller that had paused it keeps it paused."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
