"""LLM-as-judge for the gate: the configured model compares a candidate's answer with the
active adapter's, pairwise, asked twice with the order swapped.

Small judges prefer whichever answer comes first (or second); a verdict that flips with the
order is counted as a tie, so position bias cancels instead of deciding.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from loopgram.stats import sign_test

log = logging.getLogger(__name__)

JUDGE_SYSTEM = (
    "You are a strict evaluator of assistant answers. Compare two answers to the same "
    "question for correctness, helpfulness and clarity. Reply with exactly one letter: "
    "A if Answer A is better, B if Answer B is better."
)
_LETTER = re.compile(r"\b([AB])\b")


@dataclass(frozen=True)
class JudgeScore:
    win_rate: float  # candidate wins, ties counting half
    ties: int
    comparisons: int
    # Per item, in order: 1.0 the candidate won in both orders, 0.0 the active answer did,
    # 0.5 a tie (the verdict flipped with the order). Compared with the reward model's.
    preferences: tuple[float, ...] = ()

    @property
    def wins(self) -> int:
        return sum(1 for p in self.preferences if p == 1.0)

    @property
    def losses(self) -> int:
        return sum(1 for p in self.preferences if p == 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "win_rate": self.win_rate,
            "ties": self.ties,
            "comparisons": self.comparisons,
            "preferences": list(self.preferences),
            "wins": self.wins,
            "losses": self.losses,
            # Fewer wins than a fair coin gives, on the comparisons the two orders agree on.
            "p_worse": round(sign_test(self.wins, self.losses), 4),
        }


class PairwiseJudge:
    def __init__(self, client: openai.OpenAI, model: str, *, max_tokens: int = 4) -> None:
        self.client = client
        self.model = model
        self.max_tokens = max_tokens

    def _pick(self, question: str, answer_a: str, answer_b: str) -> str | None:
        reply = self.client.chat.completions.create(
            model=self.model,
            messages=[
                {"role": "system", "content": JUDGE_SYSTEM},
                {
                    "role": "user",
                    "content": f"Question:\n{question}\n\nAnswer A:\n{answer_a}\n\n"
                    f"Answer B:\n{answer_b}\n\nWhich answer is better? Reply A or B.",
                },
            ],
            temperature=0.0,
            max_tokens=self.max_tokens,
        )
        match = _LETTER.search(reply.choices[0].message.content or "")
        return match.group(1) if match else None

    def prefer(self, question: str, first: str, second: str) -> float:
        """1.0 when `first` wins in both orders, 0.0 when `second` does, else 0.5."""
        forward = self._pick(question, first, second)
        backward = self._pick(question, second, first)
        if forward == "A" and backward == "B":
            return 1.0
        if forward == "B" and backward == "A":
            return 0.0
        return 0.5


def judge_candidate(judge: PairwiseJudge, items: Sequence[tuple[str, str, str]]) -> JudgeScore:
    """`items` are (question, candidate answer, active answer)."""
    scores = [judge.prefer(question, candidate, active) for question, candidate, active in items]
    if not scores:
        return JudgeScore(0.5, 0, 0)
    return JudgeScore(
        sum(scores) / len(scores), sum(s == 0.5 for s in scores), len(scores), tuple(scores)
    )


def judge_veto(
    judged: dict[str, Any], *, min_win_rate: float, rule: str, alpha: float
) -> str | None:
    """Why the judge's verdict (`JudgeScore.as_dict()`) rejects the candidate, or None.

    Under the `better` gate rule a win rate below `min_win_rate` is enough. Under `not-worse`
    it must also be worse than chance explains: the candidate loses more of the decisive
    comparisons (both orders agree) than a fair coin would, by the one-sided sign test at
    `alpha`. On a dozen prompts one comparison moves the win rate by 0.08, so the point rule
    alone vetoes candidates the canary would promote; a judge that calls every pair a tie
    cannot veto at all."""
    win_rate = float(judged["win_rate"])
    if win_rate >= min_win_rate:
        return None
    wins, losses, p_worse = judged["wins"], judged["losses"], judged["p_worse"]
    if rule != "better" and p_worse >= alpha:
        return None
    reason = (
        f"the judge prefers the active answers (candidate win rate {win_rate:.2f} < "
        f"{min_win_rate:.2f}"
    )
    if rule != "better":
        reason += f"; won {wins}, lost {losses}, p={p_worse:.3f}"
    return reason + ")"
