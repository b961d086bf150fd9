"""The policy gate's reward-model check: the assistant's active reward model scores the
candidate's and the active adapter's answers to the same held-out prompts (the very answers the
LLM judge compares), and how often its preference agrees with the judge's.

It is reported beside preference accuracy and the judge, and blocks a run only when
`reward_min_win_rate` > 0: a young reward model, trained on the same pairs the candidate
learned from, shares the candidate's blind spots and should not veto a run on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Message = dict[str, str]
TIE = 1e-6  # reward differences this small are ties (identical answers score identically)
PROMPT_CHARS = 80  # a disagreeing prompt as the report shows it
MAX_DISAGREEMENTS = 10  # kept on the run record


@dataclass(frozen=True)
class HeldOutAnswer:
    """One held-out prompt answered greedily by the candidate and by the active adapter (or
    the base model when there is none)."""

    prompt: list[Message]
    candidate: str
    active: str

    @property
    def question(self) -> str:
        return str(self.prompt[-1]["content"]) if self.prompt else ""


def preference(margin: float) -> float:
    """1.0 the candidate's answer scored higher, 0.0 the active one's, 0.5 a tie."""
    return 1.0 if margin > TIE else 0.0 if margin < -TIE else 0.5


@dataclass(frozen=True)
class RewardComparison:
    name: str
    candidate: list[float]
    active: list[float]

    @property
    def margins(self) -> list[float]:
        return [c - a for c, a in zip(self.candidate, self.active, strict=True)]

    @property
    def win_rate(self) -> float:
        """Share of prompts where the candidate's answer scored higher, ties counting half."""
        margins = self.margins
        return sum(preference(m) for m in margins) / len(margins) if margins else 0.5

    def as_dict(self) -> dict[str, Any]:
        n = len(self.candidate)
        return {
            "available": True,
            "name": self.name,
            "candidate_mean": round(sum(self.candidate) / n, 4) if n else 0.0,
            "active_mean": round(sum(self.active) / n, 4) if n else 0.0,
            "win_rate": round(self.win_rate, 4),
            "prompts": n,
            "margins": [round(m, 4) for m in self.margins],
        }


Scorer = Callable[[Sequence[tuple[Sequence[Message], str]]], list[float]]


def compare_answers(score: Scorer, name: str, answers: Sequence[HeldOutAnswer]) -> RewardComparison:
    """Both answers of every prompt scored in one batched call of `score`."""
    items: list[tuple[Sequence[Message], str]] = []
    for answer in answers:
        items += [(answer.prompt, answer.candidate), (answer.prompt, answer.active)]
    scores = score(items)
    return RewardComparison(name, scores[0::2], scores[1::2])


def reward_check(db: Any, assistant: str, answers: Sequence[HeldOutAnswer]) -> dict[str, Any]:
    """The active reward model's verdict on the held-out answers, or why there is none.

    It is loaded into a scorer of its own (on its own base model) that is dropped afterwards:
    the training process must not keep a second copy of a base model between runs."""
    from loopgram import adapters
    from training.reward import RewardScorer

    if not answers:
        return {
            "available": False,
            "note": "no held-out answers (judge_samples is 0 or no held-out prompts)",
        }

    def lookup(*, session: Any) -> tuple[str, str, str] | None:
        found = adapters.active_reward_model(session=session, assistant=assistant)
        return None if found is None else (found.name, found.path, found.base_model)

    row = db.call(lookup)
    if row is None:
        return {"available": False, "note": f"no active reward model for {assistant}"}
    name, path, base_model = row
    try:
        if not (Path(path) / "adapter_config.json").exists():
            raise OSError(f"no reward model at {path}")
        scorer = RewardScorer(Path(base_model))
        scorer.add(name, Path(path))
        comparison = compare_answers(lambda items: scorer.score(name, items), name, answers)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        # Files gone or unreadable: recorded, and the other checks decide.
        log.warning("gate.reward_model_unusable name=%s error=%s", name, exc)
        return {
            "available": False,
            "name": name,
            "note": f"reward model {name} unusable: {str(exc)[:200]}",
        }
    return comparison.as_dict()


def _side(value: float) -> str:
    return "candidate" if value > 0.5 else "active"


def short(text: str, limit: int = PROMPT_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def agreement(
    judge: dict[str, Any], reward_model: dict[str, Any], answers: Sequence[HeldOutAnswer]
) -> dict[str, Any]:
    """Per prompt, does the judge prefer the same side as the reward model?

    Prompts where either is undecided (a judge verdict that flipped with the answer order, or
    equal rewards) are left out of the share and counted apart: a tie is no preference, so it
    can neither agree nor disagree, and counting it either way would hide what the two think."""
    if not (judge.get("available") and reward_model.get("available")):
        return {"available": False, "note": "needs both the judge and the reward model"}
    judged = [float(p) for p in judge.get("preferences", [])]
    rewarded = [preference(float(m)) for m in reward_model.get("margins", [])]
    count = min(len(judged), len(rewarded), len(answers))
    agreed, compared, undecided = 0, 0, 0
    disagreements: list[dict[str, Any]] = []
    for i in range(count):
        if judged[i] == 0.5 or rewarded[i] == 0.5:
            undecided += 1
            continue
        compared += 1
        if judged[i] == rewarded[i]:
            agreed += 1
        elif len(disagreements) < MAX_DISAGREEMENTS:
            disagreements.append(
                {
                    "prompt": short(answers[i].question),
                    "judge": _side(judged[i]),
                    "reward_model": _side(rewarded[i]),
                    "margin": round(float(reward_model["margins"][i]), 4),
                }
            )
    if compared == 0:
        return {
            "available": False,
            "note": f"no prompt decided by both ({undecided} undecided by one of them)",
            "undecided": undecided,
        }
    return {
        "available": True,
        "agreement": round(agreed / compared, 4),
        "agreed": agreed,
        "compared": compared,
        "undecided": undecided,
        "disagreements": disagreements,
    }
