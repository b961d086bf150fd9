"""The simulation's report: JSON for scripts, a PNG chart, Markdown and HTML for people."""

from __future__ import annotations

import html
import json
import textwrap
from pathlib import Path
from typing import Any

from bot.simulation.results import SimulationResult

_TITLE_WIDTH = 110
"""Characters of the chart's title per line at font size 9 on the 8-inch figure."""


def write_report(result: SimulationResult, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = result.as_dict()
    paths = {
        "json": out_dir / "simulation.json",
        "png": out_dir / "simulation.png",
        "markdown": out_dir / "simulation.md",
        "html": out_dir / "simulation.html",
    }
    paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
    _chart(data, paths["png"])
    markdown = render_markdown(data, chart=paths["png"].name)
    paths["markdown"].write_text(markdown, "utf-8")
    paths["html"].write_text(render_html(data, chart=paths["png"].name), "utf-8")
    return paths


def _chart(data: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas, without pyplot's global state
    ax = figure.add_subplot()
    base = data["baseline"]
    points = [base] + data["rounds"]
    xs = list(range(len(points)))
    rates = [p["thumbs_up_rate"] for p in points]
    errors = [
        [r - p["ci_low"] for r, p in zip(rates, points, strict=True)],
        [p["ci_high"] - r for r, p in zip(rates, points, strict=True)],
    ]
    ax.axhspan(base["ci_low"], base["ci_high"], color="grey", alpha=0.15, label="baseline 95% CI")
    ax.errorbar(
        xs, rates, yerr=errors, marker="o", capsize=4, label="held-out thumbs-up rate (95% CI)"
    )
    for x, point in zip(xs[1:], data["rounds"], strict=True):
        note = point["adapter"] or "base"
        if point["candidate"] and not point["deployed"]:
            note += f"\n({point['candidate']} not deployed)"
        ax.annotate(
            note,
            (x, point["thumbs_up_rate"]),
            textcoords="offset points",
            xytext=(0, 10),
            ha="center",
            fontsize=7,
        )
    controls = _controls(data)
    for draw, control in enumerate(controls):
        # Beside the last round, the draws side by side.
        control_x = len(points) - 1 + 0.25 + 0.3 * draw / max(1, len(controls))
        ax.errorbar(
            [control_x],
            [control["thumbs_up_rate"]],
            yerr=[
                [control["thumbs_up_rate"] - control["ci_low"]],
                [control["ci_high"] - control["thumbs_up_rate"]],
            ],
            marker="s",
            color="tab:red",
            capsize=4,
            label=_control_legend(len(controls)) if draw == 0 else None,
        )
    ax.set_xticks(xs, ["base"] + [f"round {p['round']}" for p in data["rounds"]])
    ax.set_xlim(-0.5, len(points) - 0.25)  # room for the control beside the last round
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of held-out answers liked")
    ax.set_title(chart_title(data["summary"]), fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    figure.savefig(path, dpi=100)


def _controls(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The measured draws of the shuffled control (older reports have one, or none)."""
    draws = data.get("shuffled_controls")
    if draws is None:
        draws = [data["shuffled_control"]]
    return [d for d in draws if d.get("thumbs_up_rate") is not None]


def _control_legend(draws: int) -> str:
    return "shuffled-ratings control" + (f" ({draws} draws)" if draws > 1 else "")


def _control_labels(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A row label per draw of the control; the unmeasured control's detail when none was."""
    controls = _controls(data)
    if not controls:
        return [("shuffled-ratings control", data["shuffled_control"])]
    if len(controls) == 1:
        return [("shuffled-ratings control", controls[0])]
    return [
        (f"shuffled-ratings control, draw {i}", control)
        for i, control in enumerate(controls, start=1)
    ]


def chart_title(summary: str) -> str:
    """The summary as the chart's title: a line per part, a long part (the paired line with
    several control draws) wrapped to the chart's width. The default font has no emoji."""
    parts = summary.replace("👍", "thumbs-up").split("; ")
    return "\n".join(line for part in parts for line in textwrap.wrap(part, _TITLE_WIDTH))


def _seconds(value: Any) -> str:
    return "" if value is None else f"{float(value):.0f}"


def _policy_rate(point: dict[str, Any]) -> str:
    rate = point.get("policy_thumbs_up_rate")
    return "" if rate is None else f"{rate:.2f}"


def _reward(point: dict[str, Any]) -> str:
    status = point.get("reward_run_status")
    if not status:
        return ""
    accuracy = point.get("reward_accuracy")
    parts = [status, f"acc {accuracy:.2f}" if accuracy is not None else ""]
    return " ".join(p for p in parts if p) + f" → {point.get('reward_model') or 'none'}"


def _paired(point: dict[str, Any], key: str = "vs_baseline") -> str:
    """The paired difference (from the base model, by default) on the same seeded items,
    with its CI."""
    paired = point.get(key) or {}
    if "difference" not in paired:
        return ""
    return f"{paired['difference']:+.2f} ({paired['ci_low']:+.2f}…{paired['ci_high']:+.2f})"


def _row(label: str, point: dict[str, Any]) -> list[str]:
    rate = point.get("thumbs_up_rate")
    if rate is None:
        return [label, "—", "—", "", "", "", "", "", point.get("detail", ""), "", "", "", ""]
    p50 = point.get("answer_p50_seconds")
    return [
        label,
        f"{rate:.2f}",
        f"{point['ci_low']:.2f}–{point['ci_high']:.2f}",
        _paired(point),
        _policy_rate(point),
        str(point.get("answers", "")),
        str(point.get("adapter") or "base"),
        str(point.get("candidate") or ""),
        " ".join(
            part
            for part in (
                point.get("run_status", ""),
                point.get("canary", ""),
                f"({point['canary_live']})" if point.get("canary_live") else "",
            )
            if part
        ),
        str(point.get("train_examples", "")),
        _reward(point),
        " / ".join(
            _seconds(point.get(key)) for key in ("policy_train_seconds", "reward_train_seconds")
        )
        if "policy_train_seconds" in point
        else "",
        "" if p50 is None else f"{p50:.1f}",
    ]


_HEADER = [
    "",
    "held-out 👍",
    "95% CI",
    "vs base, paired (95% CI)",
    "policy alone",
    "answers",
    "serving",
    "candidate",
    "run / canary",
    "pairs",
    "reward model",
    "training s (policy / reward)",
    "answer p50 s",
]
_NOTES = (
    "The held-out 👍 rate is the share of answers to prompts never used as traffic that",
    "the simulated people would like (their hidden taste, without rating noise). The",
    "training code never sees that taste, only the presses it caused.",
    "With best-of-n on, a held-out answer is what the bot would send (n candidates, the",
    "active reward model picks) and *policy alone* is the first candidate's rate.",
    "*vs base, paired*: every version answers the same held-out items with the same",
    "sampling seeds, so its difference from the base model is measured item by item",
    "(Newcombe's paired interval), far tighter than comparing two separate intervals.",
    "*training s* is each round's training time of the policy and of the reward model;",
    "*answer p50* is how long a person waited for an answer in the round's traffic.",
)


def _header_lines(data: dict[str, Any]) -> list[str]:
    """What was compared and what it cost (older reports have neither line)."""
    return [line for line in (data.get("options_summary"), data.get("cost_summary")) if line]


def _discarded_label(point: dict[str, Any]) -> str:
    return f"round {point['round']}: {point['adapter']}, {point['why']} (measured after)"


def _discarded_row(point: dict[str, Any]) -> list[str]:
    """A discarded candidate's row; its run/canary cell compares it, paired, with what its
    round served instead: whether the gate or the canary discarded a better model."""
    row = _row(_discarded_label(point), point)
    against = _paired(point, "vs_served")
    if against:
        row[_HEADER.index("run / canary")] = f"vs what was served {against}"
    return row


def _rows(data: dict[str, Any]) -> list[list[str]]:
    rows = [_row("baseline (no training)", data["baseline"])]
    rows += [_row(f"round {r['round']}", r) for r in data["rounds"]]
    rows += [_discarded_row(d) for d in data.get("discarded", [])]
    rows += [_row(label, control) for label, control in _control_labels(data)]
    return rows


def _verdict_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """The people's verdicts on each version's held-out answers ("concise", "chatter", ...)
    and their mean length: what a gain consists of. None for reports measured without them."""
    versions = [("baseline (no training)", data["baseline"])]
    versions += [(f"round {r['round']}", r) for r in data["rounds"]]
    versions += [(_discarded_label(d), d) for d in data.get("discarded", [])]
    versions += _control_labels(data)
    versions = [(name, v) for name, v in versions if v.get("verdicts")]
    if not versions:
        return None
    totals: dict[str, int] = {}
    for _name, version in versions:
        for why, count in version["verdicts"].items():
            totals[why] = totals.get(why, 0) + count
    reasons = sorted(totals, key=lambda why: -totals[why])
    header = ["version", "mean words", *reasons]
    rows = [
        [
            name,
            f"{version['mean_words']:.1f}" if version.get("mean_words") is not None else "",
            *(str(version["verdicts"].get(why, 0)) for why in reasons),
        ]
        for name, version in versions
    ]
    return header, rows


_VERDICT_NOTE = (
    "Verdicts on the held-out answers: how many answers of each version the people judged"
    " this way (only the first verdict is liked), and the answers' mean length in words."
)


def render_markdown(data: dict[str, Any], *, chart: str) -> str:
    lines = [
        "# loopgram simulation",
        "",
        f"**{data['summary']}**",
        "",
        *(f"{line}  " for line in _header_lines(data)),
        "",
        f"![held-out 👍 rate per round]({chart})",
        "",
        "| " + " | ".join(_HEADER) + " |",
        "|" + "---|" * len(_HEADER),
    ]
    for row in _rows(data):
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    verdicts = _verdict_table(data)
    if verdicts is not None:
        header, rows = verdicts
        lines += ["", _VERDICT_NOTE, "", "| " + " | ".join(header) + " |"]
        lines += ["|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    settings = data["settings"]
    lines += [
        "",
        f"Settings: {json.dumps(settings, ensure_ascii=False)}; took {data['seconds']:.0f} s.",
        "",
        *_NOTES,
        "",
    ]
    return "\n".join(lines)


def render_html(data: dict[str, Any], *, chart: str) -> str:
    header = "".join(f"<p>{html.escape(line)}</p>" for line in _header_lines(data))
    notes = html.escape(" ".join(_NOTES).replace("*", ""))
    verdicts, verdict_table = _verdict_table(data), ""
    if verdicts is not None:
        verdict_table = f"<p>{html.escape(_VERDICT_NOTE)}</p>" + _html_table(*verdicts)
    return (
        "<!doctype html><meta charset='utf-8'><title>loopgram simulation</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}</style>"
        f"<h1>loopgram simulation</h1><p><b>{html.escape(data['summary'])}</b></p>{header}"
        f"<img src='{html.escape(chart)}' alt='held-out 👍 rate per round'>"
        f"{_html_table(_HEADER, _rows(data))}{verdict_table}<p>{notes}</p>"
        f"<p>Settings: {html.escape(json.dumps(data['settings'], ensure_ascii=False))}; "
        f"took {data['seconds']:.0f} s.</p>"
    )


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"
