"""The model server's side of best-of-n: ``n`` candidates in one request (batched), and
reward models behind ``/v1/load_reward_model`` + ``/v1/rewards``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from training.model_server.app import MAX_N, create_app, start_server
from training.model_server.ngram import NGramBackend
from training.model_server.rewards import UnknownRewardModelError
from training.model_server.scripted import ScriptedBackend

from .conftest import Server, StartServer

ClientFactory = Callable[[Server], openai.AsyncOpenAI]
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


class FakeRewards:
    """Scores an answer by how many times it says "good"; records loads."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}

    def names(self) -> list[str]:
        return list(self.loaded)

    async def load(self, name: str, path: str, base_model: str | None = None) -> None:
        self.loaded[name] = path

    async def score(
        self, name: str, messages: Sequence[dict[str, str]], answers: Sequence[str]
    ) -> list[float]:
        if name not in self.loaded:
            raise UnknownRewardModelError(name)
        return [float(answer.count("good")) for answer in answers]

    def close(self) -> None:
        pass


async def _post(http: aiohttp.ClientSession, url: str, body: object) -> tuple[int, Any]:
    async with http.post(url, json=body) as response:
        return response.status, await response.json()


async def test_n_candidates_come_back_as_choices_with_their_own_seeds(
    start: StartServer, make_client: ClientFactory
) -> None:
    replies = iter(["first answer", "second answer here", "third"])
    backend = ScriptedBackend(lambda request: next(replies))
    client = make_client(await start(backend))
    completion = await client.chat.completions.create(
        model="loopgram-base", messages=USER, n=3, seed=40, temperature=0.7
    )
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert [c.message.content for c in completion.choices] == [
        "first answer",
        "second answer here",
        "third",
    ]
    assert all(c.finish_reason == "stop" for c in completion.choices)
    # One request, three generations: seeds 40, 41, 42 (the same seed would repeat one answer).
    assert [r.seed for r in backend.requests] == [40, 41, 42]
    assert {r.temperature for r in backend.requests} == {0.7}
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2 + 3 + 1  # every candidate counts
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 6

    # Unseeded candidates stay unseeded (each samples on its own).
    backend.reply = "same"
    unseeded = await client.chat.completions.create(model="loopgram-base", messages=USER, n=2)
    assert len(unseeded.choices) == 2 and [r.seed for r in backend.requests[3:]] == [None, None]


async def test_n_limits_and_streaming_are_clear_400s(
    start: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start(ScriptedBackend("hi"))
    url = f"{server.base_url}/chat/completions"
    for body, words in (
        ({"messages": USER, "n": MAX_N + 1}, f"at most {MAX_N}"),
        ({"messages": USER, "n": 0}, "at least 1"),
        ({"messages": USER, "n": 2, "stream": True}, "Streaming supports only n=1"),
        ({"messages": USER, "n": "4"}, "must be an integer"),
    ):
        status, answer = await _post(http, url, body)
        assert status == 400, body
        assert words in answer["error"]["message"] and answer["error"]["param"] == "n"
    status, answer = await _post(http, url, {"messages": USER, "n": MAX_N})
    assert status == 200 and len(answer["choices"]) == MAX_N


async def test_a_failing_candidate_fails_the_request(
    start: StartServer, make_client: ClientFactory
) -> None:
    calls = 0

    def reply(request: object) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("GPU on fire")
        return "fine"

    client = make_client(await start(ScriptedBackend(reply)))
    with pytest.raises(openai.InternalServerError, match="GPU on fire"):
        await client.chat.completions.create(model="loopgram-base", messages=USER, n=3)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=USER, n=3)


async def test_a_client_leaving_stops_every_candidate(
    start: StartServer, http: aiohttp.ClientSession
) -> None:
    backend = ScriptedBackend("one two three four five six", token_delay=0.2)
    server = await start(backend)
    body = {"model": "loopgram-base", "messages": USER, "n": 3}
    with pytest.raises(TimeoutError):
        async with http.post(
            f"{server.base_url}/chat/completions",
            json=body,
            timeout=aiohttp.ClientTimeout(total=0.5),
        ):
            pass
    for _ in range(50):  # the server notices the closed connection on its next write
        if backend.aborted == 3:
            break
        await asyncio.sleep(0.1)
    assert (backend.started, backend.aborted, backend.completed) == (3, 3, 0)


async def test_ngram_backend_gives_n_candidates(
    start: StartServer, make_client: ClientFactory
) -> None:
    client = make_client(await start(NGramBackend()))
    completion = await client.chat.completions.create(
        model="loopgram-base", messages=USER, n=4, seed=3, max_tokens=20
    )
    texts = [c.message.content for c in completion.choices]
    assert len(texts) == 4 and all(texts)
    assert len(set(texts)) > 1  # four seeds, not four copies


async def test_rewards_endpoint_loads_on_request_and_rejects_bad_bodies(
    http: aiohttp.ClientSession,
) -> None:
    rewards = FakeRewards()
    runner, base_url = await start_server(
        create_app(ScriptedBackend("hi"), rewards=rewards), "127.0.0.1", 0
    )
    try:
        body = {"model": "chat-rm-v1", "messages": USER, "answers": ["good good", "bad", "good"]}
        status, answer = await _post(http, f"{base_url}/rewards", body)
        assert status == 404
        assert answer["error"]["code"] == "model_not_found"
        assert "chat-rm-v1" in answer["error"]["message"]

        load = {"name": "chat-rm-v1", "path": "/models/chat-rm-v1"}
        assert await _post(http, f"{base_url}/load_reward_model", load) == (
            200,
            {"name": "chat-rm-v1", "loaded": True},
        )
        assert rewards.loaded == {"chat-rm-v1": "/models/chat-rm-v1"}
        assert await _post(http, f"{base_url}/rewards", body) == (
            200,
            {"model": "chat-rm-v1", "scores": [2.0, 0.0, 1.0]},
        )

        bad = [
            [1],
            {"messages": USER, "answers": ["a"]},
            {"model": "chat-rm-v1", "answers": ["a"]},
            {"model": "chat-rm-v1", "messages": USER},
            {"model": "chat-rm-v1", "messages": USER, "answers": []},
            {"model": "chat-rm-v1", "messages": USER, "answers": ["a", 2]},
            {"model": "chat-rm-v1", "messages": USER, "answers": ["a"] * 65},
            {"model": "chat-rm-v1", "messages": [{"role": "robot"}], "answers": ["a"]},
        ]
        for wrong in bad:
            status, answer = await _post(http, f"{base_url}/rewards", wrong)
            assert status == 400, wrong
            assert answer["error"]["message"], wrong
        for wrong_load in (
            {"name": "x"},
            {"path": "/p"},
            {"name": "x", "path": "/p", "base_model": 1},
        ):
            status, answer = await _post(http, f"{base_url}/load_reward_model", wrong_load)
            assert status == 400 and answer["error"]["message"], wrong_load
        async with http.post(
            f"{base_url}/rewards", data=b"{nope", headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 400
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ the real thing (torch)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    from tests.training.conftest import CONCISE, CORPUS, RAMBLING
    from training.tiny_model import build_tiny_causal_lm

    texts = [*CORPUS.read_text(encoding="utf-8").splitlines(), CONCISE, RAMBLING]
    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny", texts)


@pytest.fixture(scope="module")
def reward_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward model trained on the tiny model to prefer the concise answer (~10 s)."""
    from tests.training.conftest import pair_rows
    from training.config import TrainConfig
    from training.reward import train_reward_model

    config = TrainConfig(
        method="reward", learning_rate=5e-3, epochs=3, batch_size=8, max_length=96, lora_r=8
    )
    folder = tmp_path_factory.mktemp("reward") / "chat-rm-v1"
    return train_reward_model(
        config, pair_rows(24), model_path=tiny_model, output_dir=folder
    ).adapter_path


async def test_transformers_backend_generates_the_candidates_as_one_batch(
    tiny_model: Path, start: StartServer, make_client: ClientFactory
) -> None:
    from training.model_server.transformers_backend import TransformersBackend

    backend = TransformersBackend(tiny_model, "loopgram-base", threads=1)
    try:
        client = make_client(await start(backend))
        kwargs: dict[str, Any] = {
            "model": "loopgram-base",
            "messages": USER,
            "max_tokens": 12,
            "temperature": 1.0,
        }
        alone = [
            (await client.chat.completions.create(seed=10 + i, **kwargs)).choices[0].message.content
            for i in range(4)
        ]
        assert backend.batch_sizes() == {1: 4}
        together = await client.chat.completions.create(n=4, seed=10, **kwargs)
        # Candidate i is the answer seed 10 + i gives alone: each row samples on its own.
        assert [c.message.content for c in together.choices] == alone
        assert len(set(alone)) > 1
        assert backend.batch_sizes() == {1: 4, 4: 1}, "the four candidates were one batch"
    finally:
        backend.close()


async def test_rewards_with_a_trained_reward_model_prefer_the_concise_answer(
    tiny_model: Path, reward_model: Path, http: aiohttp.ClientSession
) -> None:
    from tests.training.conftest import CONCISE, RAMBLING
    from training import reward

    reward.clear_cache()
    # The n-gram server knows no base model of its own: the one recorded with the reward
    # model is used.
    runner, base_url = await start_server(create_app(NGramBackend()), "127.0.0.1", 0)
    try:
        prompt = [{"role": "user", "content": "Question number 5150: can you help?"}]
        body = {"model": "chat-rm-v1", "messages": prompt, "answers": [RAMBLING, CONCISE]}
        status, _ = await _post(http, f"{base_url}/rewards", body)
        assert status == 404
        status, answer = await _post(
            http,
            f"{base_url}/load_reward_model",
            {"name": "chat-rm-v1", "path": str(reward_model)},
        )
        assert (status, answer) == (200, {"name": "chat-rm-v1", "loaded": True}), answer
        # Loading again from the same folder is harmless; a reused name is refused.
        load_again = {"name": "chat-rm-v1", "path": str(reward_model)}
        assert (await _post(http, f"{base_url}/load_reward_model", load_again))[0] == 200
        status, answer = await _post(http, f"{base_url}/rewards", body)
        assert status == 200, answer
        scores = answer["scores"]
        assert answer["model"] == "chat-rm-v1" and len(scores) == 2
        assert scores[1] > scores[0], "the reward model prefers the concise answer"

        missing = {"name": "chat-rm-v2", "path": str(reward_model.parent / "nothing")}
        status, answer = await _post(http, f"{base_url}/load_reward_model", missing)
        assert status == 404 and "No reward model" in answer["error"]["message"]
        status, answer = await _post(http, f"{base_url}/rewards", {**body, "model": "chat-rm-v2"})
        assert status == 404 and answer["error"]["code"] == "model_not_found"
    finally:
        await runner.cleanup()
        reward.clear_cache()
