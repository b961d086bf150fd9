"""The task check of the training gate: a candidate adapter must not do the assistant's job
worse than the adapter it would replace, on the assistant's own evaluation set.

The preference gate asks "does the candidate prefer what people preferred?"; this asks
"does it still label, moderate, paraphrase and summarize as well?" — the same evaluation
`loopgram eval` prints, on a few items (CPU budgets). A few items are noisy (one of 8 moves a
rate by 0.125), so the check fails a candidate only when it is worse by more than the margin on
the primary metric *and* the items show it, answer by answer: it got fewer items right than the
active adapter by more than chance explains (one-sided exact sign test on the items where the
two verdicts differ). On 8 items that takes 5 lost and none won; a broken adapter fails it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loopgram.evaluation.results import EvalResult
from loopgram.stats import sign_test

# The one figure per assistant that decides (the others are reported beside it).
PRIMARY_METRIC: dict[str, str] = {
    "paraphrase": "ok_rate",
    "summarize": "key_point_coverage",
    "moderate": "macro_f1",
    "label": "accuracy",
}


@dataclass(frozen=True)
class TaskCheck:
    metric: str
    candidate: float
    active: float
    items: int
    margin: float
    better_items: int = 0  # right for the candidate only
    worse_items: int = 0  # right for the active adapter only
    alpha: float = 0.05

    @property
    def p_worse(self) -> float:
        return sign_test(self.better_items, self.worse_items)

    @property
    def passed(self) -> bool:
        below = self.candidate < self.active - self.margin
        return not (below and self.p_worse < self.alpha)

    def as_dict(self) -> dict[str, Any]:
        return {
            "available": True,
            "metric": self.metric,
            "candidate": round(self.candidate, 4),
            "active": round(self.active, 4),
            "items": self.items,
            "margin": self.margin,
            "better_items": self.better_items,
            "worse_items": self.worse_items,
            "p_worse": round(self.p_worse, 4),
            "alpha": self.alpha,
            "passed": self.passed,
        }


def task_check(
    candidate: EvalResult, active: EvalResult, *, margin: float, alpha: float = 0.05
) -> TaskCheck:
    """Compare two evaluations of the same items on the assistant's primary metric and item
    by item."""
    if candidate.assistant != active.assistant or [i.id for i in candidate.items] != [
        i.id for i in active.items
    ]:
        raise ValueError("the two evaluations must cover the same assistant and items")
    metric = PRIMARY_METRIC[candidate.assistant]
    paired = list(zip(candidate.items, active.items, strict=True))
    return TaskCheck(
        metric=metric,
        candidate=candidate.metrics.get(metric, 0.0),
        active=active.metrics.get(metric, 0.0),
        items=len(candidate.items),
        margin=margin,
        better_items=sum(c.ok and not a.ok for c, a in paired),
        worse_items=sum(a.ok and not c.ok for c, a in paired),
        alpha=alpha,
    )
