"""The base model against an assistant's active adapter, on the same evaluation set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table

from loopgram.embeddings import Embedder
from loopgram.evaluation.metrics import MAX_REWRITE_LENGTH
from loopgram.evaluation.results import DIGITS, EvalResult
from loopgram.evaluation.runner import DEFAULT_LOW_CONFIDENCE, Progress, evaluate
from loopgram.evaluation.sets import EvalSet, load_set
from loopgram.llm import LLMClient

# Metrics where a lower value is better; the rest are better higher, except these,
# which have no better direction.
LOWER_IS_BETTER = frozenset({"copy_rate", "invalid_rate", "repaired_rate", "needs_human_rate"})
NO_DIRECTION = frozenset({"length_ratio", "compression_ratio"})


@dataclass(frozen=True)
class Comparison:
    assistant: str
    base: EvalResult
    tuned: EvalResult | None  # the active adapter's result; None when there is none

    @property
    def adapter(self) -> str | None:
        return self.tuned.adapter if self.tuned else None

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics of what serves the assistant: the adapter, else the base model."""
        return (self.tuned or self.base).metrics

    @property
    def item_count(self) -> int:
        return len(self.base.items)

    def as_dict(self) -> dict[str, Any]:
        return {
            "assistant": self.assistant,
            "adapter": self.adapter,
            "metrics": (self.tuned or self.base).rounded_metrics(),
            "base_metrics": self.base.rounded_metrics(),
            "items": self.item_count,
            "model": (self.tuned or self.base).model,
            "base_model": self.base.model,
            "embedder": self.base.embedder,
        }

    def table(self) -> Table:
        """metric | base | adapter | Δ (Δ green when the adapter is better, red when worse)."""
        adapter = self.adapter
        title = f"{self.assistant}: {self.item_count} items"
        runs = [self.base, *([self.tuned] if self.tuned else [])]
        caption = (
            f"embedder {self.base.embedder}; "
            f"{sum(run.seconds for run in runs):.0f} s; Δ = adapter − base"
        )
        table = Table(title=title, title_justify="left", caption=caption)
        table.add_column("metric")
        table.add_column(f"base ({self.base.model})", justify="right")
        table.add_column(adapter or "adapter (none active)", justify="right")
        table.add_column("Δ", justify="right")
        names = list(self.base.metrics)
        if self.tuned is not None:
            names += [name for name in self.tuned.metrics if name not in self.base.metrics]
        for name in names:
            base = self.base.metrics.get(name)
            tuned = self.tuned.metrics.get(name) if self.tuned else None
            table.add_row(name, _cell(base), _cell(tuned), _delta(name, base, tuned))
        return table


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _delta(name: str, base: float | None, tuned: float | None) -> str:
    if base is None or tuned is None:
        return "—"
    delta = round(tuned - base, DIGITS)
    text = f"{delta:+.3f}"
    if delta == 0 or name in NO_DIRECTION:
        return text
    better = delta < 0 if name in LOWER_IS_BETTER else delta > 0
    return f"[green]{text}[/]" if better else f"[red]{text}[/]"


async def compare(
    assistant: str,
    *,
    llm: LLMClient,
    base_model: str,
    adapter: str | None,
    eval_set: EvalSet | None = None,
    concurrency: int = 4,
    max_tokens: int | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
    low_confidence: float = DEFAULT_LOW_CONFIDENCE,
    max_rewrite_length: float = MAX_REWRITE_LENGTH,
) -> Comparison:
    """Evaluate the base model, then the adapter (served under its name) when there is one.

    `progress(done, total)` counts items over both runs."""
    eval_set = eval_set if eval_set is not None else load_set(assistant)
    size = len(eval_set.items)
    runs = 2 if adapter else 1

    def stage(offset: int) -> Progress | None:
        if progress is None:
            return None
        report = progress
        return lambda done, _total: report(offset + done, size * runs)

    async def run(model: str, served_adapter: str | None, offset: int) -> EvalResult:
        return await evaluate(
            assistant,
            llm=llm,
            model=model,
            adapter=served_adapter,
            eval_set=eval_set,
            concurrency=concurrency,
            max_tokens=max_tokens,
            progress=stage(offset),
            embedder=embedder,
            low_confidence=low_confidence,
            max_rewrite_length=max_rewrite_length,
        )

    base = await run(base_model, None, 0)
    tuned = await run(adapter, adapter, size) if adapter else None
    return Comparison(assistant=assistant, base=base, tuned=tuned)
