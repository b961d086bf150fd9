"""The task check of the training gate: a candidate that does the assistant's job worse
than the active adapter is refused, whatever the preference gate said."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loopgram.evaluation.gate import PRIMARY_METRIC, task_check
from loopgram.evaluation.metrics import MAX_REWRITE_LENGTH
from loopgram.evaluation.results import EvalResult, ItemRecord
from loopgram.evaluation.sets import EVALUATED, load_set
from training.config import TrainConfig
from training.pipeline import _task

GOLD = {item.text: item.label for item in load_set("moderate").items}


class FakeScorer:
    """Greedy answers by adapter name: one that knows the gold labels, one that rambles."""

    def __init__(self, good: set[str | None]) -> None:
        self.good = good
        self.calls: list[str | None] = []

    def generate(self, adapter: str | None, prompt: list[dict[str, str]], max_tokens: int) -> str:
        self.calls.append(adapter)
        if adapter not in self.good:
            return "I am not sure what you mean."
        label = GOLD.get(prompt[-1]["content"], "ok")
        verdict = {"label": label, "confidence": 0.9, "reason": "Because.", "action": "none"}
        return json.dumps(verdict)


def config(**overrides: Any) -> TrainConfig:
    return TrainConfig(
        **{"assistant": "moderate", "method": "dpo", "task_eval_items": 6, **overrides}
    )


def test_a_candidate_worse_at_the_task_fails_the_check() -> None:
    scorer = FakeScorer(good={"active"})
    result = _task(config(), scorer, has_active=True)
    assert result["available"] and result["metric"] == "macro_f1"
    assert result["active"] > 0.9 and result["candidate"] == 0.0
    assert result["passed"] is False
    # 6 items each; the rambling candidate gets one repair turn per item.
    assert scorer.calls.count("active") == 6 and scorer.calls.count("candidate") == 12


def test_a_candidate_as_good_as_the_base_model_passes() -> None:
    scorer = FakeScorer(good={"candidate", None})
    result = _task(config(), scorer, has_active=False)
    assert result["passed"] is True and result["candidate"] == result["active"]
    assert None in scorer.calls  # no active adapter: compared with the base model


def test_the_check_is_skipped_when_off_or_without_a_set() -> None:
    scorer = FakeScorer(good=set())
    assert _task(config(task_eval_items=0), scorer, has_active=True)["available"] is False
    chat = TrainConfig(assistant="chat", method="dpo")
    assert _task(chat, scorer, has_active=True)["available"] is False
    assert scorer.calls == []


def test_the_paraphrase_check_records_its_length_bound() -> None:
    scorer = FakeScorer(good=set())
    result = _task(
        config(assistant="paraphrase", task_eval_items=2, task_max_rewrite_length=1.0),
        scorer,
        has_active=True,
    )
    assert result["available"] and result["metric"] == "ok_rate"
    assert result["max_rewrite_length"] == 1.0
    assert "max_rewrite_length" not in _task(config(task_eval_items=1), scorer, has_active=True)


@pytest.mark.parametrize("bound", [0.2, 12.0])
def test_a_length_bound_out_of_range_is_refused(bound: float) -> None:
    with pytest.raises(ValueError, match="task_max_rewrite_length"):
        config(task_max_rewrite_length=bound)


def test_the_gate_and_the_evaluation_share_the_default_length_bound() -> None:
    assert TrainConfig(assistant="paraphrase").task_max_rewrite_length == MAX_REWRITE_LENGTH


@pytest.mark.parametrize("assistant", EVALUATED)
def test_every_evaluated_assistant_has_a_primary_metric(assistant: str) -> None:
    assert assistant in PRIMARY_METRIC


def _result(verdicts: str) -> EvalResult:
    """'r' right, 'w' wrong per item; accuracy is the share right."""
    items = [ItemRecord(str(i), "en", "x", "y", "z", v == "r") for i, v in enumerate(verdicts)]
    return EvalResult("label", "m", None, {"accuracy": verdicts.count("r") / len(items)}, items)


def test_task_check_fails_only_what_the_items_show_to_be_worse() -> None:
    active = _result("r" * 37 + "w" * 13)  # 0.74
    # Within the margin: passes whatever the items say.
    assert task_check(_result("r" * 35 + "w" * 15), active, margin=0.05).passed
    # 0.60: below the margin, and 7 items lost against none won: fails.
    worse = task_check(_result("r" * 30 + "w" * 20), active, margin=0.05)
    assert not worse.passed
    assert (worse.better_items, worse.worse_items) == (0, 7)
    assert worse.as_dict()["p_worse"] == round(1 / 128, 4)
    # 0.60 again, but lost 9 items and won 2 others: p = 0.033, still fails at 0.05...
    mixed = _result("rr" + "r" * 26 + "w" * 9 + "w" * 2 + "r" * 2 + "w" * 9)
    assert mixed.metrics["accuracy"] == 0.6
    assert not task_check(mixed, active, margin=0.05).passed
    # ...and passes at 0.01: the items do not show it at that level.
    assert task_check(mixed, active, margin=0.05, alpha=0.01).passed


def test_a_few_items_fail_a_candidate_only_when_it_loses_them_all() -> None:
    active = _result("rrrrrrrr")
    assert task_check(_result("rrrrrrrw"), active, margin=0.05).passed  # 0.875: one item
    assert task_check(_result("rrrrwwww"), active, margin=0.05).passed  # 4 of 4: p = 0.0625
    assert not task_check(_result("rrrwwwww"), active, margin=0.05).passed  # 5 of 5: 0.031


def test_task_check_refuses_evaluations_of_different_items() -> None:
    with pytest.raises(ValueError, match="same assistant and items"):
        task_check(_result("rr"), _result("rrr"), margin=0.05)
