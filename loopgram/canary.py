"""When a canary adapter has earned promotion, or must be rolled back.

The question is one of non-inferiority: is the canary's 👍 rate not worse than the active
one's by more than `margin`? Newcombe's hybrid Wilson interval for the difference of two
proportions answers it without a normal approximation that breaks at small counts or rates
near 0 or 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist


class Decision(StrEnum):
    wait = "wait"
    promote = "promote"
    rollback = "rollback"


@dataclass(frozen=True)
class Tally:
    up: int
    total: int

    @property
    def rate(self) -> float:
        return self.up / self.total if self.total else 0.0


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    difference: float
    low: float
    high: float
    reason: str


def wilson(up: int, total: int, z: float) -> tuple[float, float]:
    if total == 0:
        return 0.0, 1.0
    p = up / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    spread = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - spread), min(1.0, centre + spread)


def difference_interval(
    canary: Tally, active: Tally, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(canary - active, low, high): Newcombe's method 10 interval."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p1, p2 = canary.rate, active.rate
    l1, u1 = wilson(canary.up, canary.total, z)
    l2, u2 = wilson(active.up, active.total, z)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return diff, low, high


def judge(
    canary: Tally,
    active: Tally,
    *,
    min_ratings: int,
    max_ratings: int,
    margin: float,
    confidence: float = 0.95,
) -> Verdict:
    diff, low, high = difference_interval(canary, active, confidence)
    if canary.total < min_ratings:
        return Verdict(Decision.wait, diff, low, high, f"{canary.total}/{min_ratings} ratings")
    if high < 0:
        return Verdict(Decision.rollback, diff, low, high, "significantly worse than active")
    if low > -margin:
        return Verdict(Decision.promote, diff, low, high, f"not worse by more than {margin:.2f}")
    if canary.total >= max_ratings:
        return Verdict(
            Decision.rollback, diff, low, high, "no evidence of non-inferiority by the rating cap"
        )
    return Verdict(Decision.wait, diff, low, high, "undecided")
