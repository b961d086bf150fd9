"""A PNG of users' 👍 share per day: one line per assistant and served adapter.

Drawn with matplotlib's Agg canvas directly (no pyplot, no display, no global state), so it
is safe in the bot's threads and in workers.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING

from loopgram.review_stats import SeriesPoint

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EMPTY_TEXT = "no ratings yet"
MAX_TICKS = 8


def render_thumbs_up_chart(points: Sequence[SeriesPoint], *, title: str) -> bytes:
    """The 👍 share (0-1) over days, a line (with a dot per day that had ratings) per
    "assistant / adapter"; the legend gives each line's total ratings. No points: a chart
    that says "no ratings yet"."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    ax.set_title(title)
    if not points:
        ax.set_axis_off()
        ax.text(0.5, 0.5, EMPTY_TEXT, ha="center", va="center", fontsize=16, color="grey")
        return _png(figure)
    first = min(p.day for p in points)
    span = (max(p.day for p in points) - first).days
    lines: dict[tuple[str, str], list[SeriesPoint]] = defaultdict(list)
    for point in points:
        lines[(point.assistant, point.adapter)].append(point)
    for (assistant, adapter), series in sorted(lines.items()):
        series.sort(key=lambda p: p.day)
        total = sum(p.ratings for p in series)
        ax.plot(
            [(p.day - first).days for p in series],
            [p.share for p in series],
            marker="o",
            markersize=4,
            linewidth=1.5,
            clip_on=False,  # dots at 0 and 1 stay whole
            label=f"{assistant} / {adapter} ({total} ratings)",
        )
    step = max(1, math.ceil((span + 1) / MAX_TICKS))
    ticks = list(range(0, span + 1, step))
    ax.set_xticks(ticks, [_label(first + timedelta(days=t)) for t in ticks])
    ax.set_xlim(-0.5, span + 0.5)
    ax.set_ylim(0, 1)
    ax.set_ylabel("thumbs-up share")
    ax.set_xlabel("day (UTC)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return _png(figure)


def _label(day: date) -> str:
    return day.strftime("%b %d")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
