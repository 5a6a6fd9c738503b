"""The activity timeline drawn on the server, as shapes an SVG template places.

Two charts, no script and nothing fetched: calls over time (a bar per interval,
stacked by outcome) and one lane per agent and variable with a mark per interval that
saw events, coloured by its worst outcome (its title counts each).
Coordinates are computed here; `activity.html` only writes them out, escaped.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from piper_mcp.local.dashboard.activity import TONES, Event

WIDTH = 720
BAR_HEIGHT = 120
LANE_HEIGHT = 22
LABEL_WIDTH = 200
BUCKETS = 24
LANE_BUCKETS = 96
MAX_LANES = 20


@dataclass(frozen=True)
class Shape:
    x: float
    y: float
    width: float
    height: float
    tone: str
    title: str


@dataclass(frozen=True)
class Lane:
    label: str
    y: float
    marks: list[Shape]


@dataclass(frozen=True)
class Charts:
    bars: list[Shape]
    most: int  # the tallest bar's count, for the axis
    lanes: list[Lane]
    lanes_left_out: int
    lanes_height: float
    start: str
    end: str


def charts(events: list[Event], since: float, now: float | None = None) -> Charts:
    now = time.time() if now is None else now
    span = max(now - since, 1.0)
    bars, most = _bars(events, since, span)
    lanes, left_out, height = _lanes(events, since, span)
    return Charts(bars, most, lanes, left_out, height, _clock(since), _clock(now))


def _bars(events: list[Event], since: float, span: float) -> tuple[list[Shape], int]:
    counts: list[Counter[str]] = [Counter() for _ in range(BUCKETS)]
    for event in events:
        counts[min(int((event.at - since) / span * BUCKETS), BUCKETS - 1)][event.tone] += 1
    most = max((sum(bucket.values()) for bucket in counts), default=0)
    width = WIDTH / BUCKETS
    bars = []
    for index, bucket in enumerate(counts):
        bottom = float(BAR_HEIGHT)
        for tone in TONES:
            if bucket[tone]:
                height = bucket[tone] / most * (BAR_HEIGHT - 10)
                bottom -= height
                start = since + index * span / BUCKETS
                bars.append(
                    Shape(
                        index * width + 1,
                        bottom,
                        width - 2,
                        height,
                        tone,
                        f"{bucket[tone]} {tone} from {_clock(start)}",
                    )
                )
    return bars, most


def _lanes(events: list[Event], since: float, span: float) -> tuple[list[Lane], int, float]:
    """One lane per agent and variable; a mark per interval with events, in its worst tone."""
    by_lane: dict[str, list[Event]] = {}
    for event in events:
        if event.variable:
            by_lane.setdefault(f"{event.agent or '?'} · {event.variable}", []).append(event)
    busiest = sorted(by_lane, key=lambda key: -len(by_lane[key]))[:MAX_LANES]
    step = (WIDTH - LABEL_WIDTH) / LANE_BUCKETS
    lanes = []
    for row, key in enumerate(sorted(busiest)):
        y = row * LANE_HEIGHT
        counts: dict[int, Counter[str]] = {}
        for event in by_lane[key]:
            bucket = min(int((event.at - since) / span * LANE_BUCKETS), LANE_BUCKETS - 1)
            counts.setdefault(bucket, Counter())[event.tone] += 1
        marks = [
            Shape(
                LABEL_WIDTH + bucket * step,
                y + 5,
                max(step - 1, 2),
                LANE_HEIGHT - 10,
                next(tone for tone in reversed(TONES) if tally[tone]),  # the worst one
                f"from {_clock(since + bucket * span / LANE_BUCKETS)}: "
                + ", ".join(f"{tally[tone]} {tone}" for tone in TONES if tally[tone]),
            )
            for bucket, tally in sorted(counts.items())
        ]
        lanes.append(Lane(key, y, marks))
    return lanes, len(by_lane) - len(busiest), len(lanes) * LANE_HEIGHT


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
