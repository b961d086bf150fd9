"""Small exact tests shared by the gates (no scipy at run time)."""

from __future__ import annotations

import math


def sign_test(successes: int, failures: int) -> float:
    """One-sided exact sign test: P(at most `successes` of the decisive trials) when each is
    a fair coin. Small: the successes are fewer than chance explains."""
    n = successes + failures
    if n == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, k) for k in range(successes + 1)) / float(2**n))
