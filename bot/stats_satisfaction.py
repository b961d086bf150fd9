"""The satisfaction estimate in /stats: its lines of text and the calibration chart."""

from __future__ import annotations

from collections.abc import Mapping

from loopgram.i18n import t
from loopgram.review_chart import render_calibration_chart
from loopgram.satisfaction import MIN_RATED, Estimate

MAX_ADAPTERS = 5  # per assistant in /stats (a message holds 4096 characters); the CLI has all


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def satisfaction_lines(
    estimates: Mapping[str, Estimate], lang: str, *, check_seconds: float
) -> list[str]:
    """Per assistant with a reward model: a heading (its calibration quality, or why there is
    no calibrated figure) and per adapter, the most recently used first, "predicted 👍 rate X
    (n answers) · observed Y (m rated)"."""
    if not estimates:
        return [t(lang, "stats-satisfaction-none")]
    lines = []
    for assistant, estimate in sorted(estimates.items()):
        names = {"assistant": assistant, "model": estimate.reward_model}
        if not estimate.adapters:
            minutes = max(1, round(check_seconds / 60))
            lines.append(t(lang, "stats-satisfaction-unscored", minutes=minutes, **names))
            continue
        if estimate.calibrated:
            lines.append(
                t(
                    lang,
                    "stats-satisfaction-title",
                    rated=estimate.rated,
                    brier=f"{estimate.brier or 0.0:.3f}",
                    ece=f"{estimate.ece or 0.0:.3f}",
                    **names,
                )
            )
        else:
            lines.append(
                t(
                    lang,
                    "stats-satisfaction-uncalibrated",
                    rated=estimate.rated,
                    needed=MIN_RATED,
                    **names,
                )
            )
        key = (
            "stats-satisfaction-adapter"
            if estimate.calibrated
            else "stats-satisfaction-adapter-uncalibrated"
        )
        recent = sorted(estimate.adapters.values(), key=lambda a: a.newest, reverse=True)
        for figures in recent[:MAX_ADAPTERS]:
            lines.append(
                t(
                    lang,
                    key,
                    adapter=figures.adapter,
                    predicted=_share(figures.predicted),
                    answers=figures.answers,
                    observed=_share(figures.observed),
                    rated=figures.rated,
                )
            )
        if len(recent) > MAX_ADAPTERS:
            lines.append(t(lang, "stats-satisfaction-more", n=len(recent) - MAX_ADAPTERS))
    return lines


def calibration_png(estimates: Mapping[str, Estimate], lang: str) -> bytes | None:
    """The reliability diagram, or None when no assistant is calibrated yet."""
    shown = [e for _, e in sorted(estimates.items()) if e.calibrated]
    if not shown:
        return None
    return render_calibration_chart(
        shown,
        title=t(lang, "stats-calibration-plot-title"),
        x_label=t(lang, "stats-calibration-x"),
        y_label=t(lang, "stats-calibration-y"),
        count_label=t(lang, "stats-calibration-count"),
        perfect_label=t(lang, "stats-calibration-perfect"),
    )
