"""The task check of the training gate: a candidate adapter must not do the assistant's job
worse than the adapter it would replace, on the assistant's own evaluation set.

The preference gate asks "does the candidate prefer what people preferred?"; this asks
"does it still label, moderate, paraphrase and summarize as well?" — the same evaluation
`loopgram eval` prints, on a few items (CPU budgets), with a tolerance for their noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loopgram.evaluation.results import EvalResult

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

    @property
    def passed(self) -> bool:
        return self.candidate >= self.active - self.margin

    def as_dict(self) -> dict[str, Any]:
        return {
            "available": True,
            "metric": self.metric,
            "candidate": round(self.candidate, 4),
            "active": round(self.active, 4),
            "items": self.items,
            "margin": self.margin,
            "passed": self.passed,
        }


def task_check(candidate: EvalResult, active: EvalResult, *, margin: float) -> TaskCheck:
    """Compare two evaluations of the same items on the assistant's primary metric."""
    if candidate.assistant != active.assistant or len(candidate.items) != len(active.items):
        raise ValueError("the two evaluations must cover the same assistant and items")
    metric = PRIMARY_METRIC[candidate.assistant]
    return TaskCheck(
        metric=metric,
        candidate=candidate.metrics.get(metric, 0.0),
        active=active.metrics.get(metric, 0.0),
        items=len(candidate.items),
        margin=margin,
    )
