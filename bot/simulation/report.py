"""The simulation's report: JSON for scripts, a PNG chart, Markdown and HTML for people."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from bot.simulation.runner import SimulationResult


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
    control = data["shuffled_control"]
    if control.get("thumbs_up_rate") is not None:
        control_x = len(points) - 1 + 0.25
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
            label="shuffled-ratings control",
        )
    ax.set_xticks(xs, ["base"] + [f"round {p['round']}" for p in data["rounds"]])
    ax.set_xlim(-0.5, len(points) - 0.25)  # room for the control beside the last round
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of held-out answers liked")
    # The default font has no emoji glyphs.
    ax.set_title(data["summary"].replace("👍", "thumbs-up"), fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    figure.savefig(path, dpi=100)


def _row(label: str, point: dict[str, Any]) -> list[str]:
    rate = point.get("thumbs_up_rate")
    if rate is None:
        return [label, "—", "—", "", "", "", "", point.get("detail", "")]
    return [
        label,
        f"{rate:.2f}",
        f"{point['ci_low']:.2f}–{point['ci_high']:.2f}",
        str(point.get("answers", "")),
        str(point.get("adapter") or "base"),
        str(point.get("candidate") or ""),
        " ".join(part for part in (point.get("run_status", ""), point.get("canary", "")) if part),
        str(point.get("train_examples", "")),
    ]


_HEADER = ["", "held-out 👍", "95% CI", "answers", "serving", "candidate", "run / canary", "pairs"]


def _rows(data: dict[str, Any]) -> list[list[str]]:
    rows = [_row("baseline (no training)", data["baseline"])]
    rows += [_row(f"round {r['round']}", r) for r in data["rounds"]]
    rows.append(_row("shuffled-ratings control", data["shuffled_control"]))
    return rows


def render_markdown(data: dict[str, Any], *, chart: str) -> str:
    lines = [
        "# loopgram simulation",
        "",
        f"**{data['summary']}**",
        "",
        f"![held-out 👍 rate per round]({chart})",
        "",
        "| " + " | ".join(_HEADER) + " |",
        "|" + "---|" * len(_HEADER),
    ]
    for row in _rows(data):
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    settings = data["settings"]
    lines += [
        "",
        f"Settings: {json.dumps(settings, ensure_ascii=False)}; took {data['seconds']:.0f} s.",
        "",
        "The held-out 👍 rate is the share of answers to prompts never used as traffic that",
        "the simulated people would like (their hidden taste, without rating noise). The",
        "training code never sees that taste, only the presses it caused.",
        "",
    ]
    return "\n".join(lines)


def render_html(data: dict[str, Any], *, chart: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in _rows(data)
    )
    return (
        "<!doctype html><meta charset='utf-8'><title>loopgram simulation</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:left}</style>"
        f"<h1>loopgram simulation</h1><p><b>{html.escape(data['summary'])}</b></p>"
        f"<img src='{html.escape(chart)}' alt='held-out 👍 rate per round'>"
        f"<table><tr>{head}</tr>{body}</table>"
        f"<p>Settings: {html.escape(json.dumps(data['settings'], ensure_ascii=False))}; "
        f"took {data['seconds']:.0f} s.</p>"
    )
