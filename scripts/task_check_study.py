"""Does the gate's paraphrase task check tell adapters apart the way people do? (A study.)

For the base model and every adapter a `loopgram simulate` run left in its data folder (its
versions and shuffled controls), answer the paraphrase evaluation set greedily in process, as
the gate's task check does, and score the answers with the evaluation's metrics. Next to them:
the simulated people's verdict on the same rewrites (their hidden taste, which the gate never
sees) and the held-out 👍 rate the simulation measured for that adapter.

Then every pair of models is put through the task check's item-by-item rule at each length
bound, and the table says whether its verdict agrees with the people's held-out order.

    .venv/bin/python scripts/task_check_study.py DATA_DIR REPORT.json [--items 16]
        [--bounds 1,2] [--check-items 8] [--out study.json] [--reuse study.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.simulation.preferences import judge  # noqa: E402
from loopgram.evaluation.gate import task_check  # noqa: E402
from loopgram.evaluation.metrics import paraphrase_metrics, score_paraphrase  # noqa: E402
from loopgram.evaluation.results import EvalResult, ItemRecord  # noqa: E402
from loopgram.evaluation.runner import evaluate  # noqa: E402
from loopgram.evaluation.sets import load_set  # noqa: E402
from training.pipeline import InProcessModel  # noqa: E402

BASE = "base"


def measured_rates(report: dict[str, Any]) -> dict[str, float]:
    """Held-out 👍 rate per adapter name (the base model under BASE), as the run measured."""
    rates = {BASE: float(report["baseline"]["thumbs_up_rate"])}
    for row in [*report.get("rounds", []), *report.get("discarded", [])]:
        name = row.get("adapter")
        if name and row.get("thumbs_up_rate") is not None:
            rates.setdefault(name, float(row["thumbs_up_rate"]))
    for row in report.get("shuffled_controls", []):
        rates[row["adapter"]] = float(row["thumbs_up_rate"])
    return rates


def rescore(records: list[ItemRecord], bound: float) -> EvalResult:
    """The same answers judged at another length bound (no new generation)."""
    scores, items = [], []
    for item in records:
        d = item.details
        score = score_paraphrase(
            item.input,
            item.output,
            expected_lang=str(item.expected),
            similarity=float(d["similarity"]),
            max_length_ratio=bound,
        )
        scores.append(score)
        items.append(replace(item, ok=score.ok, details={**d, "max_length_ratio": bound}))
    return EvalResult("paraphrase", "", None, paraphrase_metrics(scores), items)


def records_of(saved: dict[str, Any]) -> dict[str, list[ItemRecord]]:
    """The answers of an earlier study's --out file, per model."""
    return {name: [ItemRecord(**row) for row in rows] for name, rows in saved["items"].items()}


async def answer_all(data_dir: Path, names: list[str], items: int) -> dict[str, list[ItemRecord]]:
    from training.evaluate import PolicyScorer
    from training.model_server.base_model import resolve_base_model

    # The built-in base model, as the simulation's gate loaded it from DATA_DIR/models.
    scorer = PolicyScorer(resolve_base_model(None, data_dir / "models"))
    for name in names:
        if name != BASE:
            scorer.add_adapter(name, data_dir / "adapters" / "paraphrase" / name)
    eval_set = load_set("paraphrase", limit=items)
    results = {}
    for name in names:
        started = time.monotonic()
        result = await evaluate(
            "paraphrase",
            llm=InProcessModel(scorer),
            model="" if name == BASE else name,
            eval_set=eval_set,
            concurrency=1,
            max_tokens=160,
            max_rewrite_length=10.0,
        )
        results[name] = result.items
        print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("report", type=Path)
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--bounds", default="1,2")
    parser.add_argument("--check-items", default="8", help="also judge on the first N items")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--reuse", type=Path, help="answers of an earlier --out file to keep")
    args = parser.parse_args()
    rates = measured_rates(json.loads(args.report.read_text()))
    present = {p.name for p in (args.data_dir / "adapters" / "paraphrase").iterdir()}
    names = [BASE, *sorted(n for n in rates if n in present)]
    results = records_of(json.loads(args.reuse.read_text())) if args.reuse else {}
    missing = [n for n in names if n not in results]
    if missing:
        results.update(asyncio.run(answer_all(args.data_dir, missing, args.items)))
    bounds = [float(b) for b in args.bounds.split(",")]

    rows = []
    for name in names:
        result = rescore(results[name], 10.0)
        liked = [judge("paraphrase", i.input, i.output).liked for i in result.items]
        row = {
            "model": name,
            "heldout_thumbs_up": rates[name],
            "eval_liked_by_people": sum(liked) / len(liked),
            "length_ratio": result.metrics["length_ratio"],
            "meaning_kept_rate": result.metrics["meaning_kept_rate"],
            "copy_rate": result.metrics["copy_rate"],
        }
        for bound in bounds:
            row[f"ok_rate@{bound:g}"] = rescore(results[name], bound).metrics["ok_rate"]
        rows.append(row)

    sizes = sorted({int(k) for k in args.check_items.split(",")} | {args.items})
    pairs = []
    for a, b in itertools.combinations(names, 2):
        people_prefer_a = rates[a] > rates[b]
        pair: dict[str, Any] = {"a": a, "b": b, "people": round(rates[a] - rates[b], 4)}
        for size, bound in itertools.product(sizes, bounds):
            # The task check as the gate runs it (on the set's first `size` items), each way.
            ra, rb = rescore(results[a][:size], bound), rescore(results[b][:size], bound)
            check = task_check(ra, rb, margin=0.05)
            a_fails = not check.passed
            b_fails = not task_check(rb, ra, margin=0.05).passed
            pair[f"{size} items, bound {bound:g}"] = {
                "a_won": check.better_items,
                "b_won": check.worse_items,
                "fails": a if a_fails else b if b_fails else None,
                "wrong": (a_fails and people_prefer_a) or (b_fails and not people_prefer_a),
            }
        pairs.append(pair)

    head = list(rows[0])
    print(" | ".join(head))
    for row in rows:
        print(
            " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in head)
        )
    for pair in pairs:
        print(json.dumps(pair))
    if args.out:
        items = {n: [i.as_dict() for i in r] for n, r in results.items()}
        args.out.write_text(
            json.dumps(
                {"models": rows, "pairs": pairs, "items": items}, ensure_ascii=False, indent=1
            )
        )


if __name__ == "__main__":
    main()
