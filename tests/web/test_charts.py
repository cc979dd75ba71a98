"""The server-side SVG charts, for all inputs: well-formed XML with an accessible
name, bars exactly proportional to their values, the aging buckets summing to the
queue's totals, and a timeline's bars as long as the days they span."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from xml.etree import ElementTree

from hypothesis import given
from hypothesis import strategies as st

from projections.past_due import BUCKETS, PastDueQueue, PastDueRow, aging, days_overdue
from web.charts import Bar, Span, aging_chart, bar_chart, calls_chart, timeline

SVG = "{http://www.w3.org/2000/svg}"
TODAY = date(2026, 6, 1)

text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
amounts = st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False)


def parsed(markup: str) -> ElementTree.Element:
    svg = ElementTree.fromstring(str(markup))  # raises on anything not well-formed
    assert svg.tag == f"{SVG}svg"
    assert svg.get("role") == "img"
    assert svg.get("aria-label")
    assert svg.findtext(f"{SVG}title") == svg.get("aria-label")
    assert svg.find(f"{SVG}desc") is not None
    return svg


def bar_rects(svg: ElementTree.Element) -> list[ElementTree.Element]:
    return [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "bar"]


@given(
    st.lists(st.tuples(text, st.one_of(amounts, st.integers(0, 10**6))), max_size=40),
    text,
    text,
)
def test_bar_heights_are_proportional_to_the_values(
    values: list[tuple[str, Decimal | int]], title: str, desc: str
) -> None:
    svg = parsed(
        bar_chart([Bar(label, v, f"{v}") for label, v in values], title=title or "t", desc=desc)
    )
    rects = bar_rects(svg)
    assert [Decimal(r.get("data-value", "")) for r in rects] == [Decimal(v) for _, v in values]
    biggest = max((v for _, v in values), default=0)
    plot = 240 - 24 - 36
    for rect, (_, v) in zip(rects, values, strict=True):
        height = float(rect.get("height", ""))
        expected = float(Decimal(v) / Decimal(biggest)) * plot if biggest else 0.0
        assert abs(height - expected) <= 0.006
        # The bar stands on the axis.
        assert abs(float(rect.get("y", "")) + height - (24 + plot)) <= 0.011


def test_a_negative_value_draws_no_bar_below_the_axis() -> None:
    svg = parsed(bar_chart([Bar("a", Decimal(-5), "-5"), Bar("b", 10, "10")], title="t", desc=""))
    assert [float(r.get("height", "")) for r in bar_rects(svg)] == [0.0, 180.0]


rows = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(-30, 400)),
        amounts,
        st.sampled_from(["usd", "eur"]),
    ),
    max_size=30,
)


def queue_of(spec: list[tuple[int | None, Decimal, str]]) -> PastDueQueue:
    made = []
    for n, (ago, amount, currency) in enumerate(spec):
        due = None if ago is None else TODAY - timedelta(days=ago)
        made.append(
            PastDueRow(
                f"N-{n}",
                f"in_{n}",
                "e",
                "E",
                currency,
                amount,
                amount,
                due,
                days_overdue(due, TODAY),
                None,
            )
        )
    return PastDueQueue(TODAY, made, aging(made))


@given(rows)
def test_aging_buckets_hold_every_invoice_once_and_sum_to_the_totals(
    spec: list[tuple[int | None, Decimal, str]],
) -> None:
    queue = queue_of(spec)
    assert [b.label for b in queue.buckets] == [label for label, _, _ in BUCKETS]
    assert sum(b.count for b in queue.buckets) == len(queue.rows)
    for currency, total in queue.totals().items():
        assert sum(b.amounts.get(currency, Decimal(0)) for b in queue.buckets) == total
    for r in queue.rows:
        (home,) = [b for b in queue.buckets if b.holds(r.days_overdue)]
        assert r.days_overdue >= 0
        assert home.low <= r.days_overdue
    for currency in queue.currencies:
        svg = parsed(aging_chart(queue.buckets, currency))
        drawn = [Decimal(r.get("data-value", "")) for r in bar_rects(svg)]
        assert drawn == [b.amounts.get(currency, Decimal(0)) for b in queue.buckets]
        assert sum(drawn) == queue.totals()[currency]


def test_bucket_edges_are_30_60_90_days() -> None:
    queue = queue_of([(d, Decimal(1), "usd") for d in (0, 30, 31, 60, 61, 90, 91, 365)])
    assert [b.count for b in queue.buckets] == [2, 2, 2, 2]


@given(st.dictionaries(st.integers(0, 59), st.integers(0, 500)), st.integers(1, 60))
def test_calls_chart_has_a_bar_per_day_summing_to_the_calls(
    counts: dict[int, int], days: int
) -> None:
    start = date(2026, 1, 1)
    per_day = {start + timedelta(days=n): c for n, c in counts.items()}
    svg = parsed(calls_chart(per_day, start, start + timedelta(days=days), "acme"))
    drawn = [int(r.get("data-value", "")) for r in bar_rects(svg)]
    assert len(drawn) == days
    assert sum(drawn) == sum(c for n, c in counts.items() if n < days)


spans = st.lists(
    st.tuples(
        st.integers(0, 400),
        st.one_of(st.none(), st.integers(1, 200)),
        st.integers(0, 500),
        st.booleans(),
    ),
    max_size=8,
)


@given(spans, text)
def test_timeline_bars_are_as_long_as_the_days_they_span(
    spec: list[tuple[int, int | None, int, bool]], lane: str
) -> None:
    base = date(2026, 1, 1)
    made = [
        Span(
            f"{lane} {n}",
            base + timedelta(days=s),
            None if length is None else base + timedelta(days=s + length),
            base + timedelta(days=rec),
            superseded=sup,
            late=rec > s,
        )
        for n, (s, length, rec, sup) in enumerate(spec)
    ]
    svg = parsed(timeline(made, title="Rate history", desc="d"))
    drawn = [r for r in svg.iter(f"{SVG}rect") if "span-in-force" in (r.get("class") or "")]
    closed = [
        (float(r.get("width", "")), s)
        for r, s in zip(drawn, [s for s in made if not s.superseded], strict=True)
        if s.end is not None
    ]
    per_day = [w / (s.end - s.start).days for w, s in closed if s.end]
    assert all(abs(p - per_day[0]) <= 0.02 for p in per_day)
    late = [p for p in svg.iter(f"{SVG}path") if p.get("class") == "recorded-late"]
    assert len(late) == sum(1 for s in made if s.late)


def test_a_timeline_marks_a_late_recording_in_words_not_colour_alone() -> None:
    at = datetime(2026, 3, 5, tzinfo=UTC).date()
    svg = parsed(
        timeline(
            [
                Span("v1", date(2026, 1, 1), date(2026, 2, 1), date(2026, 1, 1)),
                Span("v2", date(2026, 2, 1), None, at, late=True),
            ],
            title="Rate history",
            desc="d",
        )
    )
    assert [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "late"] == [
        "recorded later"
    ]
