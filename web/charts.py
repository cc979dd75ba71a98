"""Charts drawn on the server as SVG: no JavaScript library, nothing fetched from
outside (the CSP allows neither). Each chart is an image with a name for screen
readers (`role="img"`, `aria-label`, `<title>`, `<desc>`); the page puts the same
numbers next to it as a table, so nothing is shown only as a picture.

Styling is by class (billtrail.css, "charts"), never a `style` attribute, which
the CSP refuses. Bar lengths are exactly proportional to the values (rounded to
a hundredth of a pixel): a property test holds that."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from markupsafe import Markup, escape

from projections.past_due import AgingBucket
from web.formatting import money

Number = Decimal | int


@dataclass(frozen=True)
class Bar:
    label: str  # under the bar (a bucket, a day)
    value: Number  # what the bar's height stands for
    text: str  # the value as people read it ("$1,250.00 · 3 invoices")


@dataclass(frozen=True)
class Span:
    """One lane of a timeline: a bar over [start, end) (end None: still open) and a
    mark on the day it was recorded. `superseded`: never in force (a later
    recording replaced it for its whole span); `late`: recorded after it took
    effect (a retroactive change)."""

    lane: str
    start: date
    end: date | None
    recorded: date
    superseded: bool = False
    late: bool = False


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _open(title: str, desc: str, width: int, height: int, kind: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-{escape(kind)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape(desc)}</desc>",
    ]


def bar_chart(
    bars: Sequence[Bar],
    *,
    title: str,
    desc: str,
    width: int = 640,
    height: int = 240,
    max_labels: int = 16,
) -> Markup:
    """Vertical bars, heights proportional to `value` (the tallest fills the plot).
    With many bars only every n-th label is written, so they never overlap."""
    top, bottom, left, right = 24, 36, 8, 8
    plot_h = height - top - bottom
    plot_w = width - left - right
    biggest = max((b.value for b in bars), default=0)
    slot = plot_w / max(len(bars), 1)
    gap = min(slot * 0.2, 12)
    every = max(1, -(-len(bars) // max_labels))
    parts = _open(title, desc, width, height, "bars")
    base = top + plot_h
    parts.append(
        f'<line class="axis" x1="{left}" y1="{base}" x2="{width - right}" y2="{base}"'
        ' stroke="currentColor"/>'
    )
    for n, b in enumerate(bars):
        # A negative value (an overpaid invoice) draws no bar rather than one below the axis.
        h = (
            float(max(Decimal(b.value), Decimal(0)) / Decimal(biggest)) * plot_h
            if biggest > 0
            else 0.0
        )
        x = left + n * slot + gap / 2
        w = slot - gap
        parts.append(
            f'<rect class="bar" x="{_num(x)}" y="{_num(base - h)}" width="{_num(w)}" '
            f'height="{_num(h)}" data-value="{escape(str(b.value))}">'
            f"<title>{escape(b.label)}: {escape(b.text)}</title></rect>"
        )
        if n % every == 0:
            cx = _num(x + w / 2)
            parts.append(
                f'<text class="label" x="{cx}" y="{base + 16}" text-anchor="middle">'
                f"{escape(b.label)}</text>"
            )
        if len(bars) <= max_labels and b.text:
            parts.append(
                f'<text class="value" x="{_num(x + w / 2)}" y="{_num(base - h - 6)}" '
                f'text-anchor="middle">{escape(b.text)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def timeline(
    spans: Sequence[Span],
    *,
    title: str,
    desc: str,
    width: int = 720,
    lane_height: int = 30,
) -> Markup:
    """Lanes of bars along a day axis (valid time), each with a diamond on the day it
    was recorded (recorded time). A superseded span is drawn hollow, a late one
    carries a "recorded later" mark, so neither relies on colour alone."""
    label_w, right, top = 150, 40, 28
    height = top + lane_height * max(len(spans), 1) + 30
    parts = _open(title, desc, width, height, "timeline")
    if not spans:
        parts.append("</svg>")
        return Markup("".join(parts))
    first = min(min(s.start, s.recorded) for s in spans)
    last = max(max(s.end or s.start, s.start, s.recorded) for s in spans) + timedelta(days=31)
    days = max((last - first).days, 1)
    plot_w = width - label_w - right

    def x_of(day: date) -> float:
        return label_w + (day - first).days / days * plot_w

    axis_y = top + lane_height * len(spans) + 4
    parts.append(
        f'<line class="axis" x1="{label_w}" y1="{axis_y}" x2="{width - right}" '
        f'y2="{axis_y}" stroke="currentColor"/>'
    )
    for tick in _month_ticks(first, last):
        tx = _num(x_of(tick))
        parts.append(
            f'<line class="tick" x1="{tx}" y1="{top - 4}" x2="{tx}" y2="{axis_y}"/>'
            f'<text class="label" x="{tx}" y="{axis_y + 16}" text-anchor="middle">'
            f"{tick.strftime('%b %Y')}</text>"
        )
    for n, s in enumerate(spans):
        y = top + n * lane_height
        x0 = x_of(s.start)
        x1 = x_of(s.end) if s.end is not None else width - right
        kind = "superseded" if s.superseded else "in-force"
        parts.append(
            f'<text class="lane" x="4" y="{y + lane_height / 2 + 4}">{escape(s.lane)}</text>'
        )
        if not s.superseded:
            parts.append(
                f'<rect class="span span-{kind}" x="{_num(x0)}" y="{y + 6}" '
                f'width="{_num(max(x1 - x0, 0))}" height="{lane_height - 12}" '
                f'data-start="{s.start.isoformat()}" '
                f'data-end="{s.end.isoformat() if s.end else ""}">'
                f"<title>{escape(s.lane)}: in force from {s.start.isoformat()}"
                f"{' until ' + s.end.isoformat() if s.end else ''}</title></rect>"
            )
        else:
            parts.append(
                f'<rect class="span span-superseded" x="{_num(x0)}" y="{y + 6}" width="6" '
                f'height="{lane_height - 12}" data-start="{s.start.isoformat()}" data-end="">'
                f"<title>{escape(s.lane)}: superseded, never in force</title></rect>"
            )
        rx, ry = x_of(s.recorded), y + lane_height / 2
        mark = "recorded-late" if s.late else "recorded"
        parts.append(
            f'<path class="{mark}" d="M{_num(rx)} {_num(ry - 6)} l6 6 l-6 6 l-6 -6 z" '
            f'data-recorded="{s.recorded.isoformat()}">'
            f"<title>recorded {s.recorded.isoformat()}"
            f"{' (after it took effect)' if s.late else ''}</title></path>"
        )
        if s.late:
            # Written away from the plot's edge it is nearer to, so it is never cut off.
            left_side = rx > label_w + plot_w / 2
            parts.append(
                f'<text class="late" x="{_num(rx - 9 if left_side else rx + 9)}" '
                f'y="{_num(ry + 4)}" text-anchor="{"end" if left_side else "start"}">'
                "recorded later</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _month_ticks(first: date, last: date) -> list[date]:
    ticks: list[date] = []
    day = date(first.year, first.month, 1)
    step = max(1, ((last - first).days // 30) // 8 + 1)  # at most about 8 ticks
    while day <= last:
        if day >= first:
            ticks.append(day)
        month = day.month - 1 + step
        day = date(day.year + month // 12, month % 12 + 1, 1)
    return ticks


def aging_chart(buckets: Sequence[AgingBucket], currency: str) -> Markup:
    """The past-due aging in one currency: a bar per bucket of days overdue, its
    height the amount due, labelled with the amount and the count."""
    bars = [
        Bar(
            f"{b.label} days",
            b.amounts.get(currency, Decimal(0)),
            f"{money(b.amounts.get(currency, Decimal(0)), currency)} · {b.count}",
        )
        for b in buckets
    ]
    summary = "; ".join(f"{bar.label}: {bar.text}" for bar in bars)
    return bar_chart(
        bars,
        title=f"Past-due aging ({currency.upper()})",
        desc=f"Amount due and number of invoices by days overdue. {summary}.",
    )


def calls_chart(per_day: Mapping[date, int], start: date, end: date, entity_id: str) -> Markup:
    """Calls per day over [start, end): a bar for every day, 0 for days without."""
    days = [start + timedelta(days=n) for n in range((end - start).days)]
    bars = [Bar(d.strftime("%m-%d"), per_day.get(d, 0), str(per_day.get(d, 0))) for d in days]
    busiest = max(bars, key=lambda b: b.value, default=None)
    total = sum(per_day.get(d, 0) for d in days)
    peak = f" The busiest day had {busiest.value} ({busiest.label})." if busiest else ""
    return bar_chart(
        bars,
        title=f"Calls per day of {entity_id}",
        desc=f"{total} calls from {start} to {end - timedelta(days=1)}, one bar per day.{peak}",
    )
