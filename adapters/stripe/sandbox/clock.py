"""Time. The server clock is wall time plus an offset that `/_sandbox/clock`
moves forward (so 24-hour and 30-day rules can be tested without waiting);
test clocks are frozen times stored on their objects. Billing periods are
calendar intervals anchored on the subscription's start, as Stripe's are: a
month from 31 January ends on the last day of February, then 31 March."""

from __future__ import annotations

import calendar
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

MINUTE = 60
HOUR = 3600
DAY = 86400
INTERVALS = ("day", "week", "month", "year")


class ServerClock:
    def __init__(self, source: Callable[[], float] = time.time, offset: int = 0) -> None:
        self._source = source
        self._offset = offset
        self._lock = threading.Lock()

    @property
    def offset(self) -> int:
        return self._offset

    def now(self) -> int:
        return int(self._source()) + self._offset

    def advance(self, seconds: int) -> int:
        if seconds < 0:
            raise ValueError("the server clock only moves forward")
        with self._lock:
            self._offset += seconds
        return self.now()

    def reset(self, offset: int = 0) -> None:
        with self._lock:
            self._offset = offset


def add_interval(anchor: int, interval: str, count: int, n: int) -> int:
    """The end of the n-th period of `count` `interval`s starting at `anchor`."""
    start = datetime.fromtimestamp(anchor, UTC)
    if interval == "day":
        return int((start + timedelta(days=count * n)).timestamp())
    if interval == "week":
        return int((start + timedelta(weeks=count * n)).timestamp())
    months = count * n * (12 if interval == "year" else 1)
    return int(_add_months(start, months).timestamp())


def _add_months(start: datetime, months: int) -> datetime:
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


def interval_seconds(interval: str, count: int) -> int:
    """A rough length, only to compare intervals with each other."""
    unit = {"day": DAY, "week": 7 * DAY, "month": 30 * DAY, "year": 365 * DAY}[interval]
    return unit * count
