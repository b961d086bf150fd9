"""A run capped at max_examples keeps the pairs on the most recent answers, of any kind."""

from __future__ import annotations

from training.datasets import PreferenceExample
from training.pipeline import _newest


def _pair(*ids: int, source: str) -> PreferenceExample:
    message = {"role": "assistant", "content": "x"}
    return PreferenceExample(
        prompt=[{"role": "user", "content": "q"}],
        chosen=message,
        rejected=message,
        weight=1.0,
        source=source,
        interaction_ids=ids,
    )


def test_newest_pairs_win_whatever_their_source() -> None:
    # Stored regenerate pairs come first in the dataset, rating pairs after them.
    examples = [
        _pair(90, 91, source="regenerate"),
        _pair(10, 11, source="regenerate"),
        _pair(50, 52, source="rating"),
        _pair(20, 30, source="rating"),
    ]
    kept = _newest(examples, 2)
    assert [e.interaction_ids for e in kept] == [(50, 52), (90, 91)]
    assert _newest(examples, 10) == sorted(examples, key=lambda e: max(e.interaction_ids))
