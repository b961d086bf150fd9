"""The 👍 rate on held-out prompts: what the simulated people would think of a model version.

Held-out prompts are never sent as traffic, so nothing trained on them. They are asked of
the model server directly, with exactly the messages the bot builds for them (the same
system prompt and layout) and the model name the bot would use, so every version is
measured on the same prompts: the base model, each round's serving adapter, the control.
Answers are judged as a user sees them (rendered the way the bot renders them for
Telegram) and without rating noise: the rate is the share of answers the people like.

With best-of-n on (`BestOfNMeasure`) an answer is what the bot would send: n candidates
from the same model in one request, the active reward model picks (`loopgram.best_of_n`,
the bot's own code). The first candidate alone is counted too: the policy's own rate from
the same samples, so the reward model's share of a gain is visible in one run.

Measurements are paired: held-out item k (a prompt and a sample number) is sampled with the
same seed for every version, so two versions differ only where their models differ, and the
difference of two rates gets a paired interval (`bot.simulation.paired`) much narrower than
the two rates' own intervals.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from bot.simulation.preferences import Judgement, judge
from bot.simulation.prompts import Prompt
from loopgram.assistants import get_assistant
from loopgram.best_of_n import BestOfN, BestOfNPlan
from loopgram.canary import wilson
from loopgram.errors import ModelUnavailableError
from loopgram.llm import LLMClient
from loopgram.telegram_text import markdown_to_html

_TAG = re.compile(r"<[^>]+>")
Z95 = NormalDist().inv_cdf(0.975)
SEED_STRIDE = 8
"""Seeds between two held-out items: a best-of-n request samples candidate i with seed + i,
and BEST_OF_N is at most 8, so no two candidates of a measurement share a seed."""


def as_user_sees(answer: str) -> str:
    return html.unescape(_TAG.sub("", markdown_to_html(answer)))


@dataclass(frozen=True)
class RateEstimate:
    liked: int
    total: int
    model: str
    samples: tuple[tuple[str, str, bool], ...] = ()
    """(prompt, answer, liked) of a few answers, for the report."""
    best_of_n: int = 0
    """Answers picked by the reward model from n candidates (0: best-of-n was off)."""
    unscored: int = 0
    """Best-of-n answers whose scoring failed: the first candidate was taken."""
    policy_liked: int | None = None
    """Liked first candidates of the best-of-n answers plus the liked single answers (None:
    as `liked`, measured without best-of-n)."""
    outcomes: tuple[bool, ...] = ()
    """Liked or not, per held-out item in item order: what paired comparisons use."""
    policy_outcomes: tuple[bool, ...] = ()
    """As `outcomes` for the first candidate (the policy alone)."""
    seed: int | None = None
    """The measurement's base seed; two estimates pair only if they share it."""
    verdicts: tuple[tuple[str, int], ...] = ()
    """How many answers got each of the people's verdicts ("concise", "chatter", "ignores the
    source", ...), most frequent first: what changed between versions, not only how much."""
    mean_words: float | None = None
    """Mean length of the answers as the user sees them, in words."""

    @property
    def rate(self) -> float:
        return self.liked / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.liked, self.total, Z95)

    @property
    def policy_rate(self) -> float:
        """The 👍 rate without the reward model's pick (equal to `rate` without best-of-n)."""
        liked = self.liked if self.policy_liked is None else self.policy_liked
        return liked / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval
        data: dict[str, Any] = {
            "thumbs_up_rate": round(self.rate, 4),
            "ci_low": round(low, 4),
            "ci_high": round(high, 4),
            "liked": self.liked,
            "answers": self.total,
            "model": self.model,
        }
        if self.verdicts:
            data["verdicts"] = dict(self.verdicts)
        if self.mean_words is not None:
            data["mean_words"] = round(self.mean_words, 1)
        if self.best_of_n or self.unscored:
            data |= {
                "best_of_n_answers": self.best_of_n,
                "unscored_answers": self.unscored,
                "policy_thumbs_up_rate": round(self.policy_rate, 4),
            }
        return data


@dataclass(frozen=True)
class BestOfNMeasure:
    """Best-of-n as the bot does it: `plans` holds the assistants that answer best-of-n now
    (n > 1 and an active reward model), as `BestOfN.plan` decided for them."""

    service: BestOfN
    plans: dict[str, BestOfNPlan]


@dataclass(frozen=True)
class _Answer:
    prompt: str
    text: str
    liked: bool
    first_liked: bool
    mode: str  # "single", "best_of_n" or "unscored"
    why: str  # the people's verdict on the answer sent ("concise", "chatter", ...)


async def heldout_rate(
    llm: LLMClient,
    prompts: Sequence[Prompt],
    *,
    models: dict[str, str],
    samples_per_prompt: int,
    concurrency: int,
    max_tokens: int,
    keep_examples: int = 3,
    best_of_n: BestOfNMeasure | None = None,
    seed: int | None = None,
) -> RateEstimate:
    """Ask every held-out prompt `samples_per_prompt` times (sampled as the bot samples) of
    its assistant's model in `models`, and count the answers the simulated people like.
    With a `seed`, item k is sampled with seed + k * SEED_STRIDE, for every model alike."""
    limit = asyncio.Semaphore(concurrency)

    def judged(prompt: Prompt, answer: str) -> tuple[str, Judgement]:
        seen = as_user_sees(answer)
        return seen, judge(prompt.assistant, prompt.text, seen)

    async def ask(prompt: Prompt, item_seed: int | None) -> _Answer:
        messages = get_assistant(prompt.assistant).build_messages(
            lang=prompt.lang, history=[], text=prompt.text
        )
        model = models[prompt.assistant]
        plan = best_of_n.plans.get(prompt.assistant) if best_of_n is not None else None
        if plan is None or best_of_n is None:
            answer = await llm.complete(
                messages, model=model, max_tokens=max_tokens, seed=item_seed
            )
            seen, verdict = judged(prompt, answer)
            return _Answer(prompt.text, seen, verdict.liked, verdict.liked, "single", verdict.why)
        result = await best_of_n.service.run(
            plan,
            messages=messages,
            model=model,
            max_tokens=max_tokens,
            assistant=prompt.assistant,
            seed=item_seed,
        )
        seen, verdict = judged(prompt, result.text)
        first = result.candidates[0].text if result.candidates else ""
        return _Answer(
            prompt.text,
            seen,
            verdict.liked,
            judged(prompt, first)[1].liked,
            "best_of_n" if result.scored else "unscored",
            verdict.why,
        )

    async def one(prompt: Prompt, item: int) -> _Answer:
        item_seed = None if seed is None else seed + item * SEED_STRIDE
        async with limit:
            for attempt in range(3):
                try:
                    return await ask(prompt, item_seed)
                except ModelUnavailableError:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(2.0)
        raise AssertionError("unreachable")

    items = [p for p in prompts for _ in range(samples_per_prompt)]
    jobs = [one(p, k) for k, p in enumerate(items)]
    results = await asyncio.gather(*jobs)
    model = ", ".join(sorted(set(models.values())))
    return RateEstimate(
        sum(r.liked for r in results),
        len(results),
        model,
        tuple((r.prompt, r.text, r.liked) for r in results[:keep_examples]),
        best_of_n=sum(r.mode == "best_of_n" for r in results),
        unscored=sum(r.mode == "unscored" for r in results),
        policy_liked=sum(r.first_liked for r in results),
        outcomes=tuple(r.liked for r in results),
        policy_outcomes=tuple(r.first_liked for r in results),
        seed=seed,
        verdicts=tuple(Counter(r.why for r in results).most_common()),
        mean_words=sum(len(r.text.split()) for r in results) / len(results) if results else None,
    )
