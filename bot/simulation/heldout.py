"""The 👍 rate on held-out prompts: what the simulated people would think of a model version.

Held-out prompts are never sent as traffic, so nothing trained on them. They are asked of
the model server directly, with exactly the messages the bot builds for them (the same
system prompt and layout) and the model name the bot would use, so every version is
measured on the same prompts: the base model, each round's serving adapter, the control.
Answers are judged as a user sees them (rendered the way the bot renders them for
Telegram) and without rating noise: the rate is the share of answers the people like.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from bot.simulation.preferences import judge
from bot.simulation.prompts import Prompt
from loopgram.assistants import get_assistant
from loopgram.canary import wilson
from loopgram.errors import ModelUnavailableError
from loopgram.llm import LLMClient
from loopgram.telegram_text import markdown_to_html

_TAG = re.compile(r"<[^>]+>")
Z95 = NormalDist().inv_cdf(0.975)


def as_user_sees(answer: str) -> str:
    return html.unescape(_TAG.sub("", markdown_to_html(answer)))


@dataclass(frozen=True)
class RateEstimate:
    liked: int
    total: int
    model: str
    samples: tuple[tuple[str, str, bool], ...] = ()
    """(prompt, answer, liked) of a few answers, for the report."""

    @property
    def rate(self) -> float:
        return self.liked / self.total if self.total else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.liked, self.total, Z95)

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            "thumbs_up_rate": round(self.rate, 4),
            "ci_low": round(low, 4),
            "ci_high": round(high, 4),
            "liked": self.liked,
            "answers": self.total,
            "model": self.model,
        }


async def heldout_rate(
    llm: LLMClient,
    prompts: Sequence[Prompt],
    *,
    models: dict[str, str],
    samples_per_prompt: int,
    concurrency: int,
    max_tokens: int,
    keep_examples: int = 3,
) -> RateEstimate:
    """Ask every held-out prompt `samples_per_prompt` times (sampled as the bot samples) of
    its assistant's model in `models`, and count the answers the simulated people like."""
    limit = asyncio.Semaphore(concurrency)

    async def one(prompt: Prompt) -> tuple[str, str, bool]:
        messages = get_assistant(prompt.assistant).build_messages(
            lang=prompt.lang, history=[], text=prompt.text
        )
        async with limit:
            for attempt in range(3):
                try:
                    answer = await llm.complete(
                        messages, model=models[prompt.assistant], max_tokens=max_tokens
                    )
                    break
                except ModelUnavailableError:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(2.0)
        seen = as_user_sees(answer)
        return prompt.text, seen, judge(prompt.assistant, prompt.text, seen).liked

    jobs = [one(p) for p in prompts for _ in range(samples_per_prompt)]
    results = await asyncio.gather(*jobs)
    liked = sum(1 for _, _, ok in results if ok)
    model = ", ".join(sorted(set(models.values())))
    return RateEstimate(liked, len(results), model, tuple(results[:keep_examples]))
