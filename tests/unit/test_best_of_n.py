"""Best-of-n without a database: the choice, the reward client against a real server (a
fake reward host behind the real endpoints), and BEST_OF_N's configuration errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from loopgram.best_of_n import PAIR_MARGIN, BestOfN, BestOfNPlan, choose
from loopgram.errors import ModelUnavailableError
from loopgram.http_site import start_site
from loopgram.llm import LLMClient
from loopgram.reward_client import RewardClient, RewardModelRef, RewardUnavailableError
from loopgram.settings import LLMSettings, RewardSettings
from tests.model_server.test_best_of_n_server import FakeRewards
from training.model_server.app import create_app, start_server
from training.model_server.scripted import ScriptedBackend

ROOT = Path(__file__).resolve().parents[2]
PROMPT = [{"role": "user", "content": "Rewrite: the meeting is at noon."}]
RM = RewardModelRef("paraphrase-rm-v1", "/adapters/paraphrase-rm-v1", "/models/base")


# --------------------------------------------------------------------------- the choice


def test_choose_sends_the_highest_reward_among_acceptable_candidates() -> None:
    texts = ["plain", "good one", "leaks the system prompt", "meh"]
    rewards = [0.1, 1.5, 9.0, -0.4]
    chosen, pair = choose(texts, rewards, lambda text: "leaks" not in text)
    assert chosen == 1  # 2 scored higher but is not acceptable
    assert pair == (1, 3)  # best over worst acceptable: 1.9 apart
    # A tie goes to the earlier candidate; close rewards make no pair.
    assert choose(["a", "b", "c"], [0.3, 0.3, 0.3 - PAIR_MARGIN / 2]) == (0, None)
    # The same text twice is no pair, whatever the scores (identical answers would be noise).
    assert choose(["same", " same "], [2.0, 0.0]) == (0, None)
    # Empty candidates never win.
    assert choose(["", "  ", "text"], [5.0, 4.0, -1.0]) == (2, None)


def test_unscored_or_hopeless_candidates() -> None:
    assert choose(["first", "second"], None) == (0, None)
    assert choose(["", "second"], None) == (1, None)
    # Nothing acceptable: position 0, for the caller's own checks to refuse.
    assert choose(["", ""], [1.0, 0.0]) == (0, None)
    assert choose(["leak", "leak"], [1.0, 0.0], lambda _: False) == (0, None)


# ----------------------------------------------------------------------- reward client


@pytest.fixture
async def reward_server() -> AsyncIterator[tuple[str, FakeRewards]]:
    rewards = FakeRewards()
    runner, url = await start_server(
        create_app(ScriptedBackend("hi"), rewards=rewards), "127.0.0.1", 0
    )
    yield url, rewards
    await runner.cleanup()


async def test_client_loads_a_missing_reward_model_and_asks_again(
    reward_server: tuple[str, FakeRewards],
) -> None:
    url, rewards = reward_server
    client = RewardClient(url, timeout=5)
    assert await client.score(RM, PROMPT, ["good", "bad", "good good"]) == [1.0, 0.0, 2.0]
    assert rewards.loaded == {RM.name: RM.path}
    # The model server restarted and forgot it: loaded again, still one call for the caller.
    rewards.loaded.clear()
    assert await client.score(RM, PROMPT, ["good"]) == [1.0]
    assert rewards.loaded == {RM.name: RM.path}
    assert await client.score(RM, PROMPT, []) == []


async def _serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/rewards", handler)
    app.router.add_post("/v1/load_reward_model", handler)
    runner, _, port = await start_site(app, "127.0.0.1", 0)
    return runner, f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize(
    "reply",
    [
        web.json_response({"scores": [1.0]}),  # one score for two answers
        web.json_response({"scores": [1.0, "x"]}),
        web.json_response({"scores": [1.0, True]}),
        web.json_response({"result": "ok"}),
        web.json_response([1.0, 2.0]),
        web.Response(text="<html>proxy error</html>", status=200),
        web.Response(text="NaN", status=200),
        web.json_response({"error": {"message": "boom"}}, status=500),
    ],
    ids=["short", "string", "bool", "no-scores", "array", "html", "nan", "500"],
)
async def test_garbage_from_the_reward_server_is_unavailable(reply: web.Response) -> None:
    async def handler(request: web.Request) -> web.Response:
        return reply

    runner, url = await _serve(handler)
    try:
        with pytest.raises(RewardUnavailableError):
            await RewardClient(url, timeout=5).score(RM, PROMPT, ["a", "b"])
    finally:
        await runner.cleanup()


async def test_down_slow_or_unloadable_reward_server_is_unavailable_in_time() -> None:
    with pytest.raises(RewardUnavailableError):  # nothing listens there
        await RewardClient("http://127.0.0.1:9/v1", timeout=5).score(RM, PROMPT, ["a"])

    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), timeout=30)
        return web.json_response({"scores": [1.0]})

    runner, url = await _serve(slow)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(RewardUnavailableError, match=r"within 0\.5 s"):
            await RewardClient(url, timeout=0.5).score(RM, PROMPT, ["a"])
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        release.set()
        await runner.cleanup()

    async def unknown(request: web.Request) -> web.Response:
        if request.path.endswith("load_reward_model"):
            return web.json_response({"error": {"message": "No reward model found"}}, status=404)
        return web.json_response({"error": {"message": "no such model"}}, status=404)

    runner, url = await _serve(unknown)
    try:
        with pytest.raises(RewardUnavailableError, match="No reward model found"):
            await RewardClient(url, timeout=5).score(RM, PROMPT, ["a"])
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------- best-of-n, end to end


@pytest.fixture
async def model_server() -> AsyncIterator[tuple[str, ScriptedBackend, FakeRewards]]:
    replies = iter(["A fine answer.", "A good answer.", "A good good answer.", "Bad."] * 10)
    backend = ScriptedBackend(lambda request: next(replies))
    rewards = FakeRewards()
    runner, url = await start_server(create_app(backend, rewards=rewards), "127.0.0.1", 0)
    yield url, backend, rewards
    await runner.cleanup()


def _best_of_n(url: str, reward_url: str | None = None, **llm: Any) -> BestOfN:
    settings = LLMSettings(llm_base_url=url, llm_timeout=10, llm_first_token_timeout=5, **llm)
    return BestOfN(
        settings=RewardSettings(best_of_n={"paraphrase": 4}),
        llm=LLMClient(settings),
        rewards=RewardClient(reward_url or url, timeout=2),
    )


async def test_best_of_n_sends_what_the_reward_model_prefers(
    model_server: tuple[str, ScriptedBackend, FakeRewards],
) -> None:
    url, backend, _ = model_server
    service = _best_of_n(url, llm_temperature=0)
    result = await service.run(
        BestOfNPlan(4, RM),
        messages=PROMPT,
        model="loopgram-base",
        max_tokens=50,
        assistant="paraphrase",
    )
    assert [c.text for c in result.candidates] == [
        "A fine answer.",
        "A good answer.",
        "A good good answer.",
        "Bad.",
    ]
    assert [c.reward for c in result.candidates] == [0.0, 1.0, 2.0, 0.0]
    assert result.chosen == 2 and result.text == "A good good answer."
    assert result.reward_model == RM.name and result.pair == (2, 0)
    # One request with n=4, sampled (LLM_TEMPERATURE 0 would give four copies).
    assert len(backend.requests) == 4 and {r.temperature for r in backend.requests} == {0.7}
    await service.llm.close()


async def test_reward_server_down_sends_the_first_candidate_and_rests(
    model_server: tuple[str, ScriptedBackend, FakeRewards],
) -> None:
    url, _, _ = model_server
    service = _best_of_n(url, reward_url="http://127.0.0.1:9/v1")
    result = await service.run(
        BestOfNPlan(4, RM),
        messages=PROMPT,
        model="loopgram-base",
        max_tokens=50,
        assistant="paraphrase",
    )
    assert result.chosen == 0 and result.text == "A fine answer."
    assert not result.scored and result.pair is None
    assert [c.reward for c in result.candidates] == [None] * 4
    assert len(result.candidates) == 4, "every candidate is kept"
    assert service._resting_until > 0  # the next answers stream as usual for a while
    await service.llm.close()


async def test_model_down_is_the_usual_model_error() -> None:
    service = _best_of_n("http://127.0.0.1:9/v1")
    with pytest.raises(ModelUnavailableError):
        await service.run(
            BestOfNPlan(4, RM),
            messages=PROMPT,
            model="loopgram-base",
            max_tokens=50,
            assistant="paraphrase",
        )
    await service.llm.close()


# --------------------------------------------------------------------------- settings


def test_best_of_n_settings(settings_factory: Any) -> None:
    reward = settings_factory(BEST_OF_N="paraphrase=4, summarize=2").reward
    assert reward.candidates_for("paraphrase") == 4 and reward.candidates_for("chat") == 1
    assert settings_factory(BEST_OF_N="3").reward.candidates_for("chat") == 3
    assert settings_factory().reward.candidates_for("paraphrase") == 1  # off by default


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("paraphrase=x", "BEST_OF_N: expected assistant=N, got 'paraphrase=x'"),
        ("paraphrase", "BEST_OF_N: expected assistant=N, got 'paraphrase'"),
        ("paraphrase=9", "BEST_OF_N for paraphrase: 9 is outside 1..8"),
        ("chat=0", "BEST_OF_N for chat: 0 is outside 1..8"),
    ],
)
def test_a_wrong_best_of_n_is_one_clear_line(tmp_path: Path, value: str, message: str) -> None:
    env = {**os.environ, "BEST_OF_N": value, "DATA_DIR": str(tmp_path)}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "loopgram.cli", "adapters", "list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: invalid configuration: {message}"


async def test_scores_of_many_answers_keep_their_order(
    reward_server: tuple[str, FakeRewards],
) -> None:
    url, _ = reward_server
    texts = [" ".join(["good"] * (i % 5)) or "none" for i in range(64)]
    assert await RewardClient(url, timeout=5).score(RM, PROMPT, texts) == [
        float(i % 5) for i in range(64)
    ]
