"""The report admins get after each training run: what it saw, how it did, what was decided,
and a chart (reward margin over steps; 👍 rate per adapter version over time)."""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlmodel import Session, col, select

from loopgram.i18n import t
from loopgram.models import Adapter, Interaction, Rating, TrainingRun


@dataclass(frozen=True)
class RunReport:
    text: str
    chart_png: bytes


def thumbs_up_by_version(
    *, session: Session, assistant: str
) -> dict[str, list[tuple[date, float, int]]]:
    """Per served model (adapter name, or "base"), per day: 👍 rate and number of ratings."""
    rows = session.exec(
        select(Interaction.adapter, Interaction.created_at, Rating.value)
        .join(Rating, col(Rating.interaction_id) == col(Interaction.id))
        .where(Interaction.assistant == assistant)
        .where(col(Rating.user_id) == col(Interaction.user_id))
    ).all()
    buckets: dict[str, dict[date, list[int]]] = defaultdict(lambda: defaultdict(list))
    for adapter, created, value in rows:
        buckets[adapter or "base"][created.date()].append(value)
    return {
        name: [
            (day, sum(v > 0 for v in values) / len(values), len(values))
            for day, values in sorted(days.items())
        ]
        for name, days in buckets.items()
    }


def build_report(*, session: Session, run_id: int, lang: str) -> RunReport:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise LookupError(f"no training run {run_id}")
    adapter = session.get(Adapter, run.adapter_id) if run.adapter_id else None
    gate = run.evaluation or {}
    candidate, active = gate.get("candidate", {}), gate.get("active", {})
    text = t(
        lang,
        "report-run",
        run=run.id or 0,
        assistant=run.assistant,
        method=run.method.upper(),
        status=t(lang, f"report-status-{run.status}"),
        adapter=adapter.name if adapter else "—",
        train=run.train_examples,
        held_out=run.eval_examples,
        seconds=run.metrics.get("train_seconds", 0),
        accuracy=f"{candidate.get('accuracy', 0):.2f}",
        active_accuracy=f"{active.get('accuracy', 0):.2f}",
        margin=f"{candidate.get('mean_margin', 0):.3f}",
        active_margin=f"{active.get('mean_margin', 0):.3f}",
        against=run.metrics.get("against", "base"),
        reason=gate.get("reason") or run.error or "",
    )
    chart = render_chart(
        history=run.metrics.get("history", []),
        thumbs=thumbs_up_by_version(session=session, assistant=run.assistant),
        title=f"{run.assistant} · run {run.id}",
    )
    return RunReport(text=text, chart_png=chart)


def render_chart(
    *, history: list[dict[str, Any]], thumbs: dict[str, list[tuple[date, float, int]]], title: str
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    steps = [h for h in history if "rewards/margins" in h]
    if steps:
        left.plot(range(1, len(steps) + 1), [h["rewards/margins"] for h in steps], marker="o")
    left.set_title("reward margin (train)")
    left.set_xlabel("step")
    left.grid(alpha=0.3)
    for name, points in sorted(thumbs.items()):
        if points:
            right.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    right.set_title("👍 rate per version".replace("👍", "thumbs-up"))
    right.set_ylim(0, 1)
    right.grid(alpha=0.3)
    if thumbs:
        right.legend(fontsize=8)
    figure.suptitle(title)
    figure.autofmt_xdate()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
