"""The task check of the training gate: a candidate that does the assistant's job worse
than the active adapter is refused, whatever the preference gate said."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loopgram.evaluation.gate import PRIMARY_METRIC, task_check
from loopgram.evaluation.results import EvalResult
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


@pytest.mark.parametrize("assistant", EVALUATED)
def test_every_evaluated_assistant_has_a_primary_metric(assistant: str) -> None:
    assert assistant in PRIMARY_METRIC


def test_task_check_tolerates_noise_within_the_margin() -> None:
    def result(value: float) -> EvalResult:
        return EvalResult("label", "m", None, {"accuracy": value}, [])

    assert task_check(result(0.70), result(0.74), margin=0.05).passed
    assert not task_check(result(0.60), result(0.74), margin=0.05).passed
