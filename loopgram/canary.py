"""When a canary adapter has earned promotion, or must be rolled back.

The question is one of non-inferiority: is the canary's 👍 rate not worse than the active
one's by more than `margin`? Newcombe's hybrid Wilson interval for the difference of two
proportions answers it without a normal approximation that breaks at small counts or rates
near 0 or 1.

The canary is checked every few minutes, but judged only at planned looks: on its first
`min_ratings` ratings, then on twice as many, and so on up to `max_ratings`. Each look gets
a share of the error rate in proportion to its ratings (a weighted Bonferroni split), so a
canary worse by the margin is promoted at most 2.5% of the time however often it is checked.
A fixed 95% interval re-checked as ratings arrive promotes such a canary far more often: 14–16%
with production's 50–400 ratings checked at every rating (tests/unit/test_canary.py).

Ratings come in clusters: a person sees one version and may rate many answers, and people
differ in taste, so 100 ratings from 5 heavy users say less than 100 from 100 people. When a
tally carries its ratings per person, each arm's counts are shrunk by its design effect (the
cluster-robust variance of its 👍 rate over the binomial one, never below 1) before the
Wilson intervals: the effective-sample-size method for clustered proportions.
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
    by_person: tuple[tuple[int, int], ...] = ()
    """(👍, ratings) of each person; empty: ratings taken as independent."""

    @property
    def rate(self) -> float:
        return self.up / self.total if self.total else 0.0

    @property
    def design_effect(self) -> float:
        """How much the clustering by person inflates the variance of the 👍 rate (≥ 1).

        The ratio estimator's cluster-robust variance, k/(k-1) · Σ(up_j - p·n_j)² / n²,
        over the binomial p(1-p)/n. With one person, or a rate of 0 or 1, there is no spread
        to estimate it from: then the worst case, each person one observation (n / k). No
        breakdown: 1.
        """
        people = len(self.by_person)
        p = self.rate
        if people == 0 or self.total == 0:
            return 1.0
        if people == 1 or p in (0.0, 1.0):
            return self.total / people
        spread = sum((up - p * n) ** 2 for up, n in self.by_person)
        clustered = people / (people - 1) * spread / self.total**2
        return max(1.0, clustered / (p * (1 - p) / self.total))


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    difference: float
    low: float
    high: float
    reason: str
    look: int = 0
    """The canary ratings this verdict was reached on (0: before the first look)."""
    confidence: float = 0.0
    """The interval's confidence at this look."""


def looks(min_ratings: int, max_ratings: int) -> tuple[int, ...]:
    """The canary rating counts it is judged at: `min_ratings`, doubling, and the cap."""
    first = max(1, min_ratings)
    points = [first]
    while points[-1] * 2 < max_ratings:
        points.append(points[-1] * 2)
    if max_ratings > first:
        points.append(max_ratings)
    return tuple(points)


def look_reached(ratings: int, points: tuple[int, ...]) -> int | None:
    """The last look `ratings` canary ratings have reached, if any."""
    reached = [point for point in points if point <= ratings]
    return reached[-1] if reached else None


def look_confidence(look: int, points: tuple[int, ...], confidence: float) -> float:
    """The interval's confidence at `look`: the error rate `1 - confidence` is spent over the
    looks in proportion to their ratings, so the last and largest look keeps most of it."""
    return 1 - (1 - confidence) * look / sum(points)


def wilson(up: float, total: float, z: float) -> tuple[float, float]:
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
    """(canary - active, low, high): Newcombe's method 10 interval, each arm's counts
    divided by its design effect (`Tally.design_effect`)."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p1, p2 = canary.rate, active.rate
    d1, d2 = canary.design_effect, active.design_effect
    l1, u1 = wilson(canary.up / d1, canary.total / d1, z)
    l2, u2 = wilson(active.up / d2, active.total / d2, z)
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
    """The verdict at the last look `canary`'s ratings have reached. For the error rate to
    hold, `canary` holds the canary's first ratings, as many as that look (`adapters`
    truncates them so), and `active` the active model's ratings over the same time."""
    points = looks(min_ratings, max_ratings)
    look = look_reached(canary.total, points)
    if look is None:
        diff, low, high = difference_interval(canary, active, confidence)
        return Verdict(Decision.wait, diff, low, high, f"{canary.total}/{points[0]} ratings")
    at = look_confidence(look, points, confidence)
    diff, low, high = difference_interval(canary, active, at)

    def verdict(decision: Decision, reason: str) -> Verdict:
        return Verdict(decision, diff, low, high, reason, look=look, confidence=at)

    if high < 0:
        return verdict(Decision.rollback, "significantly worse than active")
    if low > -margin:
        return verdict(Decision.promote, f"not worse by more than {margin:.2f}")
    if look == points[-1]:
        return verdict(Decision.rollback, "no evidence of non-inferiority by the rating cap")
    following = points[points.index(look) + 1]
    return verdict(Decision.wait, f"undecided at {look} ratings; judged again at {following}")
