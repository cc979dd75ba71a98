"""The seal: an HMAC-SHA256 chain over the application log in notification order.

Link k covers event k's position, identity, topic and stored bytes, and link k-1,
so altering, removing, inserting or reordering any event breaks every link from
there on. The key never lives in the database. Links are written by the recorder in
the same transaction as the events (ledger.persistence), so there is no window in
which an event exists unsealed.

What a chain alone cannot show is a cut of its tail (events and links removed
together). `verify` therefore takes the head it saw last time (a checkpoint the
operator keeps outside the database) and reports when that link is gone or changed."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from hashlib import sha256

GENESIS = bytes(32)


@dataclass(frozen=True)
class SealedEvent:
    notification_id: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


@dataclass(frozen=True)
class Link:
    seq: int
    notification_id: int
    mac: bytes


def link_message(prev: bytes, seq: int, event: SealedEvent) -> bytes:
    header = (
        f"{seq}\x00{event.notification_id}\x00{event.originator_id}\x00"
        f"{event.originator_version}\x00{event.topic}\x00"
    ).encode()
    return prev + header + event.state


def chain(key: bytes, prev: bytes, first_seq: int, events: Iterable[SealedEvent]) -> list[Link]:
    """The links for `events`, continuing a chain whose last link is `prev`."""
    links = []
    seq = first_seq
    for event in events:
        prev = hmac.digest(key, link_message(prev, seq, event), sha256)
        links.append(Link(seq, event.notification_id, prev))
        seq += 1
    return links


@dataclass(frozen=True)
class Finding:
    """The first place where the log and its seal disagree."""

    position: int
    what: str

    def __str__(self) -> str:
        return f"log position {self.position}: {self.what}"


@dataclass(frozen=True)
class Verification:
    checked: int
    head: Link | None
    finding: Finding | None

    @property
    def ok(self) -> bool:
        return self.finding is None


def verify(
    key: bytes,
    events: Iterator[SealedEvent],
    links: Iterator[Link],
    checkpoint: Link | None = None,
) -> Verification:
    """Walk the events (by notification id) and the links (by seq) together."""
    prev = GENESIS
    expected_seq = 1
    checked = 0
    head: Link | None = None
    event = next(events, None)
    link = next(links, None)
    while event is not None or link is not None:
        if link is None and event is not None:
            return _found(
                checked,
                head,
                event.notification_id,
                f"event {_name(event)} is not in the seal (inserted)",
            )
        if link is None:
            break
        if link.seq != expected_seq:
            # The missing link sealed the event still here when only the link was
            # removed; when the event went with it, the next sealed one is first.
            position = link.notification_id
            if event is not None and event.notification_id < position:
                position = event.notification_id
            return _found(
                checked,
                head,
                position,
                f"seal link {expected_seq} is missing (removed from the seal table)",
            )
        floor = head.notification_id if head is not None else 0
        if link.notification_id <= floor:
            # Links name ever later positions; one naming an earlier one was altered,
            # and the event it should seal is the first bad position.
            return _found(
                checked,
                head,
                event.notification_id if event is not None else floor + 1,
                f"seal link {link.seq} names position {link.notification_id}, "
                f"not one after {floor} (altered)",
            )
        if event is None or event.notification_id > link.notification_id:
            return _found(
                checked, head, link.notification_id, "the sealed event is missing (removed)"
            )
        if event.notification_id < link.notification_id:
            return _found(
                checked,
                head,
                event.notification_id,
                f"event {_name(event)} is not in the seal (inserted)",
            )
        mac = hmac.digest(key, link_message(prev, link.seq, event), sha256)
        if not hmac.compare_digest(mac, link.mac):
            return _found(
                checked,
                head,
                event.notification_id,
                f"event {_name(event)} does not match its seal (altered or reordered)",
            )
        if checkpoint is not None and link.seq == checkpoint.seq and link.mac != checkpoint.mac:
            return _found(
                checked,
                head,
                link.notification_id,
                f"seal link {link.seq} differs from the checkpoint (log rewritten)",
            )
        prev = mac
        head = link
        checked += 1
        expected_seq += 1
        event = next(events, None)
        link = next(links, None)
    if checkpoint is not None and (head is None or head.seq < checkpoint.seq):
        return _found(
            checked,
            head,
            checkpoint.notification_id,
            f"the log ends before the checkpointed link {checkpoint.seq} (truncated)",
        )
    return Verification(checked, head, None)


def _name(event: SealedEvent) -> str:
    return f"{event.topic} of {event.originator_id} v{event.originator_version}"


def _found(checked: int, head: Link | None, position: int, what: str) -> Verification:
    return Verification(checked, head, Finding(position, what))
