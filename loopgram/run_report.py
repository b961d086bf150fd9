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

SHOWN_DISAGREEMENTS = 3  # prompts where the judge and the reward model disagree, in the text


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
    extra = [
        *pair_lines(gate, lang, against=run.metrics.get("against", "base")),
        *held_out_lines(gate, lang),
        *task_lines(gate, lang),
    ]
    chart = render_chart(
        history=run.metrics.get("history", []),
        thumbs=thumbs_up_by_version(session=session, assistant=run.assistant),
        title=f"{run.assistant} · run {run.id}",
        gate=gate,
    )
    return RunReport(text="\n".join([text, *extra]), chart_png=chart)


def pair_lines(gate: dict[str, Any], lang: str, *, against: str) -> list[str]:
    """The not-worse rule's evidence: held-out pairs won and lost against the active adapter
    (runs gated by the older point rule, and reward-model runs, have none)."""
    evidence = gate.get("evidence")
    if not isinstance(evidence, dict) or evidence.get("rule") != "not-worse":
        return []
    return [
        t(
            lang,
            "report-gate-pairs",
            against=against,
            better=evidence.get("better_pairs", 0),
            worse=evidence.get("worse_pairs", 0),
            p=f"{evidence.get('p_worse', 1.0):.2f}",
            alpha=f"{evidence.get('alpha', 0.05):.2f}",
        )
    ]


def held_out_lines(gate: dict[str, Any], lang: str) -> list[str]:
    """The judge, the reward model and where they disagree, beside preference accuracy.

    Only a policy run's gate has these (a reward-model run's, and runs recorded before they
    existed, have none: nothing is shown then)."""
    lines: list[str] = []
    judge = gate.get("judge")
    if isinstance(judge, dict):
        if judge.get("available"):
            counts = {
                "win_rate": f"{judge.get('win_rate', 0):.2f}",
                "prompts": judge.get("comparisons", 0),
                "ties": judge.get("ties", 0),
            }
            if "wins" in judge:  # runs judged before the counts were kept have the rate only
                counts |= {
                    "wins": judge["wins"],
                    "losses": judge["losses"],
                    "p": f"{judge.get('p_worse', 1.0):.2f}",
                }
                lines.append(t(lang, "report-judge-decisive", **counts))
            else:
                lines.append(t(lang, "report-judge", **counts))
        else:
            lines.append(t(lang, "report-judge-none", note=judge.get("note", "")))
    reward = gate.get("reward_model")
    if isinstance(reward, dict):
        if reward.get("available"):
            lines.append(
                t(
                    lang,
                    "report-reward-model",
                    name=reward.get("name", ""),
                    candidate=f"{reward.get('candidate_mean', 0):.3f}",
                    active=f"{reward.get('active_mean', 0):.3f}",
                    win_rate=f"{reward.get('win_rate', 0):.2f}",
                    prompts=reward.get("prompts", 0),
                )
            )
        else:
            lines.append(t(lang, "report-reward-model-none", note=reward.get("note", "")))
    agreement = gate.get("agreement")
    both = (
        isinstance(judge, dict)
        and judge.get("available")
        and isinstance(reward, dict)
        and reward.get("available")
    )
    if both and isinstance(agreement, dict):
        if agreement.get("available"):
            lines.append(
                t(
                    lang,
                    "report-agreement",
                    agreement=f"{agreement.get('agreement', 0):.2f}",
                    agreed=agreement.get("agreed", 0),
                    compared=agreement.get("compared", 0),
                    undecided=agreement.get("undecided", 0),
                )
            )
            sides = {
                "candidate": t(lang, "report-side-candidate"),
                "active": t(lang, "report-side-active"),
            }
            for item in agreement.get("disagreements", [])[:SHOWN_DISAGREEMENTS]:
                lines.append(
                    t(
                        lang,
                        "report-disagreement",
                        prompt=item.get("prompt", ""),
                        judge=sides.get(item.get("judge"), "?"),
                        reward_model=sides.get(item.get("reward_model"), "?"),
                    )
                )
        else:
            lines.append(t(lang, "report-agreement-none", note=agreement.get("note", "")))
    return lines


def task_lines(gate: dict[str, Any], lang: str) -> list[str]:
    """The task check: the assistant's own metric, candidate against the model it would
    replace, item by item (nothing when it did not run: an earlier check failed, or the run
    was recorded before the check existed)."""
    task = gate.get("task")
    if not isinstance(task, dict) or not task:
        return []
    if not task.get("available"):
        return [t(lang, "report-task-none", note=task.get("note", ""))]
    lines = [
        t(
            lang,
            "report-task",
            metric=task.get("metric", ""),
            items=task.get("items", 0),
            candidate=f"{task.get('candidate', 0):.2f}",
            active=f"{task.get('active', 0):.2f}",
            better=task.get("better_items", 0),
            worse=task.get("worse_items", 0),
            p=f"{task.get('p_worse', 1.0):.2f}",
        )
    ]
    if "max_rewrite_length" in task:
        lines.append(t(lang, "report-task-length", bound=f"{task['max_rewrite_length']:g}"))
    return lines


def render_chart(
    *,
    history: list[dict[str, Any]],
    thumbs: dict[str, list[tuple[date, float, int]]],
    title: str,
    gate: dict[str, Any] | None = None,
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 3.8), dpi=110)
    steps = [h for h in history if "rewards/margins" in h]
    if steps:
        left.plot(range(1, len(steps) + 1), [h["rewards/margins"] for h in steps], marker="o")
    left.set_title("reward margin (train)")
    left.set_xlabel("step")
    left.grid(alpha=0.3)
    _gate_bars(middle, gate_figures(gate or {}))
    for name, points in sorted(thumbs.items()):
        if points:
            right.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    right.set_title("👍 rate per version".replace("👍", "thumbs-up"))
    right.set_ylim(0, 1)
    right.grid(alpha=0.3)
    if thumbs:
        right.legend(fontsize=8)
    figure.suptitle(title)
    right.tick_params(axis="x", labelrotation=30)  # dates
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def gate_figures(gate: dict[str, Any]) -> list[tuple[str, float | None]]:
    """The held-out gate's shares in [0, 1], None where a check did not run."""

    def share(record: Any, key: str) -> float | None:
        if not isinstance(record, dict) or record.get("available") is False or key not in record:
            return None
        return float(record[key])

    return [
        ("pref. accuracy, candidate", share(gate.get("candidate"), "accuracy")),
        ("pref. accuracy, active", share(gate.get("active"), "accuracy")),
        ("judge win rate", share(gate.get("judge"), "win_rate")),
        ("reward-model win rate", share(gate.get("reward_model"), "win_rate")),
        ("judge / reward model agree", share(gate.get("agreement"), "agreement")),
    ]


def _gate_bars(axes: Any, figures: list[tuple[str, float | None]]) -> None:
    labels = [label for label, _ in figures]
    values = [value or 0.0 for _, value in figures]
    rows = range(len(figures))
    axes.barh(rows, values, color=["#4c72b0", "#8c8c8c", "#dd8452", "#55a868", "#8172b3"])
    for row, (_, value) in enumerate(figures):
        note = "n/a" if value is None else f"{value:.2f}"
        axes.text(min((value or 0.0) + 0.02, 0.9), row, note, va="center", fontsize=8)
    axes.axvline(0.5, color="black", linestyle="--", linewidth=0.8)  # chance / even
    axes.set_yticks(list(rows), labels, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_title("held-out gate")
    axes.grid(alpha=0.3, axis="x")
