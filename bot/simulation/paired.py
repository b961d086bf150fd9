"""The difference of two 👍 rates measured on the same held-out items, with its interval.

Two versions answered the same items with the same seeds, so their outcomes come in pairs.
Only the discordant pairs (liked by one, not the other) carry the difference, which is why
a paired interval is much narrower than the gap between two independent Wilson intervals.
The interval is Newcombe's hybrid score interval for paired proportions (method 10 of
Newcombe, Statistics in Medicine 17:2635, 1998): Wilson intervals of both rates, combined with
the pairs' correlation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.simulation.heldout import Z95
from loopgram.canary import wilson


@dataclass(frozen=True)
class PairedDifference:
    """`rate(a) - rate(b)` over `pairs` items; `a_only` / `b_only` are the discordant pairs."""

    difference: float
    low: float
    high: float
    pairs: int
    a_only: int
    b_only: int

    @property
    def within_noise(self) -> bool:
        """The interval holds zero: no difference shown at 95%."""
        return self.low <= 0.0 <= self.high

    def as_dict(self) -> dict[str, Any]:
        return {
            "difference": round(self.difference, 4),
            "ci_low": round(self.low, 4),
            "ci_high": round(self.high, 4),
            "pairs": self.pairs,
            "a_only": self.a_only,
            "b_only": self.b_only,
        }


def paired_difference(a: Sequence[bool], b: Sequence[bool], z: float = Z95) -> PairedDifference:
    """`a` and `b`: liked or not, item by item, for the same items in the same order."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes differ in length: {len(a)} vs {len(b)}")
    n = len(a)
    if n == 0:
        raise ValueError("no paired outcomes")
    both = sum(x and y for x, y in zip(a, b, strict=True))
    a_only = sum(x and not y for x, y in zip(a, b, strict=True))
    b_only = sum(y and not x for x, y in zip(a, b, strict=True))
    neither = n - both - a_only - b_only
    p1, p2 = (both + a_only) / n, (both + b_only) / n
    l1, u1 = wilson(both + a_only, n, z)
    l2, u2 = wilson(both + b_only, n, z)
    margins = (both + a_only) * (neither + b_only) * (both + b_only) * (neither + a_only)
    phi = (both * neither - a_only * b_only) / math.sqrt(margins) if margins else 0.0
    theta = p1 - p2
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return PairedDifference(
        theta, max(-1.0, theta - below), min(1.0, theta + above), n, a_only, b_only
    )
