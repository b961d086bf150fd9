"""Newcombe's paired interval: exact cases, edge cases, and its coverage on simulated pairs."""

from __future__ import annotations

import random

import pytest

from bot.simulation.paired import paired_difference
from loopgram.canary import Tally, difference_interval


def test_identical_outcomes_differ_by_zero_inside_a_symmetric_interval() -> None:
    outcomes = [k % 3 == 0 for k in range(60)]
    same = paired_difference(outcomes, outcomes)
    assert same.difference == 0 and same.within_noise
    assert same.low == pytest.approx(-same.high)
    assert same.high < 0.07  # no discordant pair: only the binomial floor


def test_one_way_discordant_pairs_exclude_zero_and_swap_sign() -> None:
    a = [True] * 30 + [False] * 70
    b = [True] * 20 + [False] * 80
    gain = paired_difference(a, b)
    assert (gain.difference, gain.a_only, gain.b_only) == (pytest.approx(0.1), 10, 0)
    assert 0 < gain.low < 0.1 < gain.high
    loss = paired_difference(b, a)
    assert loss.difference == pytest.approx(-0.1)
    assert loss.low == pytest.approx(-gain.high) and loss.high == pytest.approx(-gain.low)


def test_pairing_is_tighter_than_two_independent_samples() -> None:
    # Same rates (0.5 vs 0.4), but here only 10 of 100 items changed.
    a = [k < 50 for k in range(100)]
    b = [k < 40 for k in range(100)]
    paired = paired_difference(a, b)
    _, low, high = difference_interval(Tally(50, 100), Tally(40, 100))
    assert paired.high - paired.low < (high - low) / 2
    assert paired.low > 0 > low


def test_mismatched_or_empty_outcomes_are_refused() -> None:
    with pytest.raises(ValueError, match="length"):
        paired_difference([True], [True, False])
    with pytest.raises(ValueError, match="no paired"):
        paired_difference([], [])


def test_about_95_percent_of_intervals_cover_the_true_difference() -> None:
    rng = random.Random(7)
    n, runs, covered = 120, 1500, 0
    p_base, p_flip_up, p_flip_down = 0.3, 0.25, 0.08  # true difference 0.7*0.25 - 0.3*0.08
    truth = (1 - p_base) * p_flip_up - p_base * p_flip_down
    for _ in range(runs):
        b = [rng.random() < p_base for _ in range(n)]
        a = [(x and rng.random() >= p_flip_down) or (not x and rng.random() < p_flip_up) for x in b]
        interval = paired_difference(a, b)
        covered += interval.low <= truth <= interval.high
    assert 0.93 <= covered / runs <= 0.975
