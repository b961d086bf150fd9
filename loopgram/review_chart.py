"""PNGs for /stats: users' 👍 share per day (one line per assistant and served adapter), and
the satisfaction estimate's calibration (a reliability diagram).

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

    from loopgram.satisfaction import Estimate

EMPTY_TEXT = "no ratings yet"
NOT_CALIBRATED_TEXT = "not enough ratings to calibrate"
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


def render_calibration_chart(
    estimates: Sequence[Estimate],
    *,
    title: str,
    x_label: str = "predicted probability of thumbs up (out of sample)",
    y_label: str = "observed share of thumbs up",
    count_label: str = "ratings",
    perfect_label: str = "perfect calibration",
) -> bytes:
    """A reliability diagram of the satisfaction estimate: per calibrated assistant, the mean
    predicted probability of each bin against the 👍 share observed in it (out-of-fold
    predictions), the diagonal as perfect calibration, and below it the ratings per bin.
    No calibrated assistant: a chart that says so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    shown = [e for e in estimates if e.calibrated and e.calibration]
    if not shown:
        ax = figure.add_subplot()
        ax.set_title(title)
        ax.set_axis_off()
        ax.text(0.5, 0.5, NOT_CALIBRATED_TEXT, ha="center", va="center", fontsize=16, color="grey")
        return _png(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.set_title(title)
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label=perfect_label)
    width = 1 / len(shown[0].calibration) / (len(shown) + 1)
    for i, estimate in enumerate(shown):
        filled = [b for b in estimate.calibration if b.count]
        x = [b.predicted for b in filled]
        y = [b.observed for b in filled]
        line = top.plot(
            x,
            y,
            linewidth=1.2,
            label=f"{estimate.assistant} ({estimate.reward_model}): ECE {estimate.ece:.3f}, "
            f"Brier {estimate.brier:.3f}, {estimate.rated} {count_label}",
        )
        # A dot's area follows its bin's ratings: a bin of two is not read as a trend.
        most = max(b.count for b in filled)
        top.scatter(
            x,
            y,
            s=[12 + 150 * b.count / most for b in filled],
            color=line[0].get_color(),
            clip_on=False,
            zorder=3,
        )
        bins = estimate.calibration
        bottom.bar(
            [b.bin_low + width * (i + 1) for b in bins],
            [b.count for b in bins],
            width=width,
            color=line[0].get_color(),
        )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel(y_label)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, loc="upper left", frameon=False)
    bottom.set_xlabel(x_label)
    bottom.set_ylabel(count_label)
    bottom.grid(alpha=0.3, axis="y")
    return _png(figure)
