"""Best-of-n at serving time: n candidates in one request, the reward model picks one.

Per assistant and off by default (`BEST_OF_N`, `settings.reward.candidates_for`). An answer
goes best-of-n when the assistant asks for n > 1 candidates and has an active reward model
(the registry is read at most every `cache_seconds`, like `routing.AdapterRouter`). Then:

1. one non-streamed request for n candidates (`LLMClient.complete_many`), same model,
   adapter and prompt as the single answer;
2. the reward server scores them (`RewardClient`, within REWARD_TIMEOUT);
3. the highest-scored candidate the caller accepts (not empty, not leaking the bot's
   instructions) is sent; a tie goes to the earlier one.

If scoring fails (the reward server down, slow, or talking nonsense) the first acceptable
candidate is sent, all are stored unscored, and best-of-n rests for `REST_SECONDS` (answers
stream as usual meanwhile) so that a dead reward server does not cost every answer its
timeout. If the model fails, the caller's usual error path runs.

Every candidate is stored (`answer_candidate`, with its reward and the `chosen` one), in the
transaction that stores the interaction. When the best and the worst acceptable candidate
differ in text and in reward by at least `PAIR_MARGIN`, a `best_of_n` preference pair is
stored too: machine-labelled, so training uses it only with `reward_pairs` on.

Structured assistants (moderation verdicts, labels) never go best-of-n: their answer is a
JSON value checked against a schema (with a repair turn), not prose a reward model ranks.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlmodel import Session

from loopgram import crud, metrics
from loopgram.adapters import active_reward_model
from loopgram.llm import ChatMessage, LLMClient
from loopgram.models import (
    AnswerCandidate,
    AnswerScore,
    Interaction,
    PairSource,
    PreferencePair,
)
from loopgram.reward_client import RewardClient, RewardModelRef, RewardUnavailableError
from loopgram.settings import RewardSettings

log = logging.getLogger(__name__)

PAIR_MARGIN = 0.5
"""Reward difference (best - worst) a best_of_n pair needs: P(best preferred) = sigmoid(0.5)
≈ 0.62 under the reward model's Bradley-Terry reading. Closer candidates teach nothing sure."""
PAIR_WEIGHT = 0.5
"""A machine label counts as much as a pair derived from two ratings, less than a 🔄 choice."""
REST_SECONDS = 30.0
"""After a scoring failure, answers skip best-of-n for this long."""
SAMPLING_TEMPERATURE = 0.7
"""Used for the candidates when LLM_TEMPERATURE is 0: greedy decoding gives n copies."""


@dataclass(frozen=True)
class BestOfNPlan:
    n: int
    reward_model: RewardModelRef


@dataclass(frozen=True)
class Candidate:
    position: int
    text: str
    reward: float | None = None


@dataclass(frozen=True)
class BestOfNResult:
    """The candidates of one answer, which was sent, and which pair (if any) to store."""

    candidates: tuple[Candidate, ...]
    chosen: int
    reward_model: str | None  # None: unscored (the reward server failed)
    pair: tuple[int, int] | None = None  # (chosen, rejected) positions
    generate_seconds: float = 0.0
    score_seconds: float = 0.0

    @property
    def text(self) -> str:
        return self.candidates[self.chosen].text

    @property
    def scored(self) -> bool:
        return self.reward_model is not None


def choose(
    texts: Sequence[str],
    rewards: Sequence[float] | None,
    acceptable: Callable[[str], bool] = lambda _text: True,
    *,
    margin: float = PAIR_MARGIN,
) -> tuple[int, tuple[int, int] | None]:
    """(position to send, (chosen, rejected) pair or None).

    Only acceptable, non-empty candidates compete; with none, position 0 is returned and the
    caller's own checks refuse it. Unscored: the first acceptable one, no pair."""
    fine = [i for i, text in enumerate(texts) if text.strip() and acceptable(text)]
    if not fine:
        return 0, None
    if rewards is None:
        return fine[0], None
    best = max(fine, key=lambda i: (rewards[i], -i))
    worst = min(fine, key=lambda i: (rewards[i], i))
    if rewards[best] - rewards[worst] >= margin and texts[best].strip() != texts[worst].strip():
        return best, (best, worst)
    return best, None


class RewardModelLookup:
    """The active reward model of each assistant, read at most every `cache_seconds`."""

    def __init__(self, cache_seconds: float = 5.0) -> None:
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, RewardModelRef | None]] = {}
        self._lock = threading.Lock()

    def active(self, *, session: Session, assistant: str) -> RewardModelRef | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(assistant)
            if cached is not None and now - cached[0] < self.cache_seconds:
                return cached[1]
        row = active_reward_model(session=session, assistant=assistant)
        ref = None if row is None else RewardModelRef(row.name, row.path, row.base_model or None)
        with self._lock:
            self._cache[assistant] = (now, ref)
        return ref

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()


class BestOfN:
    def __init__(
        self,
        *,
        settings: RewardSettings,
        llm: LLMClient,
        rewards: RewardClient,
        cache_seconds: float = 5.0,
    ) -> None:
        self.settings = settings
        self.llm = llm
        self.rewards = rewards
        self.lookup = RewardModelLookup(cache_seconds)
        self._resting_until = 0.0

    def plan(
        self, *, session: Session, assistant: str, structured: bool = False
    ) -> BestOfNPlan | None:
        """Whether this answer goes best-of-n (runs with the answer's database session)."""
        n = self.settings.candidates_for(assistant)
        if n <= 1 or structured or time.monotonic() < self._resting_until:
            return None
        model = self.lookup.active(session=session, assistant=assistant)
        return None if model is None else BestOfNPlan(n, model)

    async def run(
        self,
        plan: BestOfNPlan,
        *,
        messages: Sequence[ChatMessage],
        model: str,
        max_tokens: int | None,
        assistant: str,
        acceptable: Callable[[str], bool] = lambda _text: True,
        seed: int | None = None,
        user: str | None = None,
    ) -> BestOfNResult:
        """Generate, score and choose. ModelUnavailableError when the model fails; a scoring
        failure only makes the result unscored. `seed` is for measurements (repeatable
        candidates); the bot samples unseeded."""
        started = time.monotonic()
        texts = await self.llm.complete_many(
            messages,
            n=plan.n,
            model=model,
            max_tokens=max_tokens,
            temperature=self.llm.settings.llm_temperature or SAMPLING_TEMPERATURE,
            seed=seed,
            user=user,
        )
        generated = time.monotonic()
        metrics.BEST_OF_N_SECONDS.labels(stage="generate").observe(generated - started)
        rewards: list[float] | None = None
        if any(text.strip() for text in texts):
            try:
                rewards = await self.rewards.score(plan.reward_model, messages, texts)
            except RewardUnavailableError as exc:
                self._resting_until = time.monotonic() + REST_SECONDS
                log.warning(
                    "best_of_n.unscored assistant=%s reward_model=%s candidates=%s error=%s; "
                    "sending the first candidate, best-of-n rests %.0f s",
                    assistant,
                    plan.reward_model.name,
                    len(texts),
                    exc,
                    REST_SECONDS,
                )
        scored = time.monotonic()
        if rewards is not None:
            metrics.BEST_OF_N_SECONDS.labels(stage="score").observe(scored - generated)
        if not texts:  # a server that ignored n and answered nothing: the empty-answer path
            texts = [""]
        chosen, pair = choose(texts, rewards, acceptable)
        candidates = tuple(
            Candidate(i, text, rewards[i] if rewards is not None else None)
            for i, text in enumerate(texts)
        )
        outcome = "scored" if rewards is not None else "unscored"
        metrics.BEST_OF_N.labels(assistant=assistant, outcome=outcome).inc()
        log.info(
            "best_of_n.%s assistant=%s n=%s chosen=%s rewards=%s generate_s=%.2f score_s=%.2f",
            outcome,
            assistant,
            len(texts),
            chosen,
            "-" if rewards is None else ",".join(f"{r:.3f}" for r in rewards),
            generated - started,
            scored - generated,
        )
        return BestOfNResult(
            candidates=candidates,
            chosen=chosen,
            reward_model=plan.reward_model.name if rewards is not None else None,
            pair=pair,
            generate_seconds=generated - started,
            score_seconds=scored - generated,
        )


def add_interaction_with_candidates(
    *, session: Session, interaction: Interaction, result: BestOfNResult
) -> Interaction:
    """Store the interaction (whose answer is the chosen candidate), every candidate, the
    best_of_n pair and the sent answer's reward, in the caller's one transaction.

    The reward is stored as the answer's `answer_score` for that reward model: it is the
    score the satisfaction pass would compute (same scorer, same prompt messages, same text),
    so that pass does not score best-of-n answers a second time."""
    stored = crud.add_interaction(session=session, interaction=interaction)
    assert stored.id is not None
    sent = result.candidates[result.chosen]
    if (
        result.reward_model is not None
        and sent.reward is not None
        and math.isfinite(sent.reward)
        and sent.text == stored.answer
    ):
        session.add(
            AnswerScore(
                interaction_id=stored.id, reward_model=result.reward_model, score=sent.reward
            )
        )
    for candidate in result.candidates:
        session.add(
            AnswerCandidate(
                interaction_id=stored.id,
                position=candidate.position,
                text=candidate.text,
                reward=candidate.reward,
                reward_model=result.reward_model if candidate.reward is not None else None,
                chosen=candidate.position == result.chosen,
            )
        )
    if result.pair is not None:
        chosen, rejected = (result.candidates[i] for i in result.pair)
        session.add(
            PreferencePair(
                pair_key=f"best_of_n:{stored.id}",
                assistant=stored.assistant,
                prompt=stored.prompt,
                chosen=chosen.text,
                rejected=rejected.text,
                # The chosen side is the answer sent; the rejected one lives only as a
                # candidate row (no interaction of its own).
                chosen_interaction_id=stored.id if chosen.text == stored.answer else None,
                rejected_interaction_id=None,
                source=PairSource.best_of_n,
                weight=PAIR_WEIGHT,
                user_id=stored.user_id,
            )
        )
    session.flush()
    return stored
