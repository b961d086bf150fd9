"""The held-out measurement with best-of-n on: answers come through the bot's own `BestOfN`
(n candidates from the real model server app, scored behind its real /v1/rewards), the rate
counts the picked answer and the policy-alone rate the first candidate; with the reward
server down every answer is the unscored first candidate and the measurement still ends."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from bot.simulation.heldout import BestOfNMeasure, RateEstimate, heldout_rate
from bot.simulation.preferences import judge
from bot.simulation.prompts import Prompt
from loopgram.best_of_n import BestOfN, BestOfNPlan
from loopgram.llm import LLMClient
from loopgram.reward_client import RewardClient, RewardModelRef
from loopgram.settings import Settings
from tests.model_server.test_best_of_n_server import FakeRewards
from training.model_server.app import create_app, start_server
from training.model_server.scripted import ScriptedBackend

SOURCE = "The library near the station opens early every morning for students and readers."
LONG = (
    "The library that is near the station opens very early every single morning for all "
    "of the students and also for the readers."
)
GOOD = "The good library near the station opens early for students and readers."
OFF = "Weeks are long."
PROMPT = Prompt("paraphrase", "en", SOURCE)


@pytest.fixture
def rewards() -> FakeRewards:
    return FakeRewards()  # prefers answers that say "good"


@pytest.fixture
async def model_url(rewards: FakeRewards) -> AsyncIterator[str]:
    replies: Iterator[str] = itertools.cycle([LONG, GOOD, OFF])
    backend = ScriptedBackend(lambda request: next(replies))
    runner, url = await start_server(create_app(backend, rewards=rewards), "127.0.0.1", 0)
    yield url
    await runner.cleanup()


@pytest.fixture
def make_settings(settings_factory, model_url: str) -> Callable[..., Settings]:  # type: ignore[no-untyped-def]
    def make(**env: str) -> Settings:
        made: Settings = settings_factory(LLM_BASE_URL=model_url, BEST_OF_N="3", **env)
        return made

    return make


async def measure_best_of_3(
    settings: Settings, tmp_path: Path, *, seed: int | None = None
) -> RateEstimate:
    """Two best-of-3 answers to PROMPT from the base model, picked by a reward model."""
    llm = LLMClient(settings.llm)
    service = BestOfN(
        settings=settings.reward, llm=llm, rewards=RewardClient.from_settings(settings)
    )
    plan = BestOfNPlan(3, RewardModelRef("paraphrase-rm-v1", str(tmp_path / "rm")))
    try:
        return await heldout_rate(
            llm,
            [PROMPT],
            models={"paraphrase": "loopgram-base"},
            samples_per_prompt=2,
            concurrency=1,  # the scripted replies cycle: one request at a time
            max_tokens=64,
            best_of_n=BestOfNMeasure(service, {"paraphrase": plan}),
            seed=seed,
        )
    finally:
        await llm.close()


async def _measure(settings: Settings, tmp_path: Path) -> tuple[float, float, int, int, int]:
    estimate = await measure_best_of_3(settings, tmp_path)
    return (
        estimate.rate,
        estimate.policy_rate,
        estimate.best_of_n,
        estimate.unscored,
        estimate.total,
    )


def test_the_candidates_are_what_the_test_means() -> None:
    assert judge("paraphrase", SOURCE, GOOD).liked
    assert not judge("paraphrase", SOURCE, LONG).liked
    assert not judge("paraphrase", SOURCE, OFF).liked


async def test_best_of_n_answers_are_measured_as_served(
    make_settings: Callable[..., Settings], rewards: FakeRewards, tmp_path: Path
) -> None:
    rate, policy_rate, picked, unscored, total = await _measure(make_settings(), tmp_path)
    # The reward model picked the liked candidate; the first one alone is never liked.
    assert (rate, policy_rate, picked, unscored, total) == (1.0, 0.0, 2, 0, 2)
    assert rewards.loaded == {"paraphrase-rm-v1": str(tmp_path / "rm")}


async def test_a_reward_server_that_is_down_leaves_the_first_candidate(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(REWARD_BASE_URL="http://127.0.0.1:9/v1", REWARD_TIMEOUT="2")
    rate, policy_rate, picked, unscored, total = await _measure(settings, tmp_path)
    assert (rate, policy_rate, picked, unscored, total) == (0.0, 0.0, 0, 2, 2)
