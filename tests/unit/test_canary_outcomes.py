"""The canary's outcome of a first answer, without a database: how it is valued and ordered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loopgram.canary_outcomes import Outcome, nth_cutoff, tally

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_regeneration_is_a_thumbs_down_from_the_moment_it_happens() -> None:
    liked_then_regenerated = Outcome(1, 10, rating=(at(1), 1), regenerated_at=at(5))
    assert liked_then_regenerated.key == (at(1), 1)
    assert liked_then_regenerated.value((at(4), 99)) == 1
    assert liked_then_regenerated.value((at(5), 99)) == -1
    assert liked_then_regenerated.value() == -1
    # The pick after a 🔄 (here a 👍 on the first version) does not undo the 🔄.
    picked_back = Outcome(2, 11, rating=(at(9), 1), regenerated_at=at(3))
    assert picked_back.key == (at(3), 2) and picked_back.value() == -1
    only_regenerated = Outcome(3, 12, rating=None, regenerated_at=at(2))
    assert only_regenerated.value() == -1


def test_a_tally_counts_outcomes_per_person_up_to_a_cutoff() -> None:
    outcomes = sorted(
        [
            Outcome(1, 10, rating=(at(1), 1), regenerated_at=None),
            Outcome(2, 10, rating=(at(2), 1), regenerated_at=at(6)),
            Outcome(3, 11, rating=(at(3), -1), regenerated_at=None),
            Outcome(4, 12, rating=None, regenerated_at=at(4)),
        ],
        key=lambda o: o.key,
    )
    everything = tally(outcomes)
    assert (everything.up, everything.total, everything.by_person) == (
        1,
        4,
        ((0, 1), (0, 1), (1, 2)),
    )
    cutoff = nth_cutoff(outcomes, 3)
    assert cutoff == (at(3), 3)
    third = tally(outcomes, cutoff)
    assert (third.up, third.total, third.by_person) == (2, 3, ((0, 1), (2, 2)))


@pytest.mark.parametrize("n", [0, -1, 5])
def test_a_look_beyond_the_outcomes_has_no_cutoff(n: int) -> None:
    outcomes = [Outcome(i, i, rating=(at(i), 1), regenerated_at=None) for i in range(1, 5)]
    assert nth_cutoff(outcomes, n) is None
