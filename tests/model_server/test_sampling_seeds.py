"""`serve-model --seed`: unseeded answers seeded by their content, their asker (OpenAI's
`user` field) and how often that asker sent the conversation, so two runs sending the same
conversations get the same answers in any arrival order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from openai.types.chat import ChatCompletionMessageParam

from bot.simulation.options import SimulationOptions
from bot.simulation.runner import simulation_env
from bot.stack import start_builtin_model
from loopgram.settings import Settings
from tests.model_server.conftest import Server
from training.model_server.app import NGRAM_BASE_MODEL, create_app, start_server
from training.model_server.ngram import NGramBackend
from training.model_server.sampling_seeds import SEED_BITS, ContentSeeds
from training.model_server.scripted import ScriptedBackend

Messages = list[ChatCompletionMessageParam]
A_TEXT = "Перескажи кратко: кот сидел на окне весь день."
A: Messages = [{"role": "user", "content": A_TEXT}]
B: Messages = [
    {"role": "system", "content": "You rewrite text."},
    {"role": "user", "content": "Rewrite: the meeting moved to Friday."},
]


def _seeds(seeds: ContentSeeds, asks: list[Messages]) -> list[int]:
    return [seeds.next_seed(messages) for messages in asks]  # type: ignore[arg-type]


def test_the_kth_ask_of_a_conversation_gets_the_same_seed_in_any_order() -> None:
    first = _seeds(ContentSeeds(7), [A, B, A, B])
    second = _seeds(ContentSeeds(7), [B, B, A, A])
    assert (first[0], first[2]) == (second[2], second[3])  # A's 1st and 2nd ask
    assert (first[1], first[3]) == (second[0], second[1])  # B's
    assert len(set(first)) == 4  # a second ask (🔄) is a new draw, not a copy
    assert all(0 <= seed < 2**SEED_BITS for seed in first)


def test_each_asker_counts_their_own_asks() -> None:
    """Two people asking the same thing in either order get the same draws each."""
    first = [ContentSeeds(7).next_seed(A, user=u) for u in ("anna", "boris")]  # type: ignore[arg-type]
    seeds = ContentSeeds(7)
    boris, anna = (seeds.next_seed(A, user=u) for u in ("boris", "anna"))  # type: ignore[arg-type]
    assert first == [anna, boris] and anna != boris
    assert ContentSeeds(7).next_seed(A, user=None) != anna  # type: ignore[arg-type]


def test_the_seed_depends_on_the_server_seed_and_every_message() -> None:
    assert _seeds(ContentSeeds(7), [A]) != _seeds(ContentSeeds(8), [A])
    system_changed: Messages = [{"role": "system", "content": "You summarise."}, B[1]]
    role_changed: Messages = [{"role": "assistant", "content": A_TEXT}]
    seeds = _seeds(ContentSeeds(7), [B, system_changed, A, role_changed])
    assert len(set(seeds)) == 4


def test_a_forgotten_conversation_counts_from_its_first_ask_again() -> None:
    seeds = ContentSeeds(1, remember=1)
    first_a = _seeds(seeds, [A])[0]
    seeds.next_seed(B)  # type: ignore[arg-type]  # A is forgotten: memory stays bounded
    assert _seeds(seeds, [A]) == [first_a]
    with pytest.raises(ValueError, match="at least 1"):
        ContentSeeds(1, remember=0)


async def _server(backend: object, sampling_seed: int | None) -> Server:
    runner, url = await start_server(
        create_app(backend, sampling_seed=sampling_seed),  # type: ignore[arg-type]
        "127.0.0.1",
        0,
    )
    return Server(runner, url)


async def test_the_server_seeds_unseeded_requests_and_keeps_a_requests_own_seed() -> None:
    import openai

    backend = ScriptedBackend("ok")
    server = await _server(backend, sampling_seed=3)
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="-", max_retries=0)
    try:
        await client.chat.completions.create(model="loopgram-base", messages=A)
        await client.chat.completions.create(model="loopgram-base", messages=A, seed=99)
        await client.chat.completions.create(model="loopgram-base", messages=B, n=3)
        await client.chat.completions.create(model="loopgram-base", messages=A, stream=False)
    finally:
        await client.close()
        await server.runner.cleanup()
    expected = ContentSeeds(3)
    a1, b1, a2 = _seeds(expected, [A, B, A])
    # The explicit seed is kept and does not count as an ask; n candidates get seed + i.
    assert [r.seed for r in backend.requests] == [a1, 99, b1, b1 + 1, b1 + 2, a2]


async def test_user_must_be_a_string(http: aiohttp.ClientSession) -> None:
    server = await _server(ScriptedBackend("ok"), sampling_seed=3)
    try:
        async with http.post(
            f"{server.base_url}/chat/completions", json={"messages": A, "user": 42}
        ) as response:
            assert response.status == 400
            error = (await response.json())["error"]
    finally:
        await server.runner.cleanup()
    assert error["param"] == "user" and "must be a string" in error["message"]


async def test_two_servers_with_one_seed_answer_alike_whatever_the_order() -> None:
    """The n-gram model really samples: the same conversations asked in another order get
    the same answers, and a server without a seed still samples at random."""
    import openai

    async def answers(order: list[Messages], sampling_seed: int | None) -> list[str]:
        server = await _server(NGramBackend(), sampling_seed)
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="-", max_retries=0)
        try:
            texts = []
            for messages in order:
                completion = await client.chat.completions.create(
                    model="loopgram-base", messages=messages, temperature=1.0, max_tokens=40
                )
                texts.append(completion.choices[0].message.content or "")
            return texts
        finally:
            await client.close()
            await server.runner.cleanup()

    forward = await answers([A, B, A], sampling_seed=11)
    backward = await answers([A, A, B], sampling_seed=11)
    assert forward[0] == backward[0] and forward[1] == backward[2] and forward[2] == backward[1]
    assert forward[0] and forward[1]
    unseeded = {tuple(await answers([A], sampling_seed=None)) for _ in range(6)}
    assert len(unseeded) > 1


async def test_builtin_model_seed_reaches_the_embedded_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """BUILTIN_MODEL_SEED (set by `loopgram simulate` to its --seed) seeds the server that
    the embedded stack starts."""
    import openai

    options = SimulationOptions(data_dir=tmp_path, seed=5)
    assert simulation_env(options)["BUILTIN_MODEL_SEED"] == "5"
    monkeypatch.setenv("BUILTIN_MODEL_SEED", "5")
    monkeypatch.setenv("BUILTIN_MODEL_PORT", "0")
    monkeypatch.setenv("BASE_MODEL_PATH", NGRAM_BASE_MODEL)
    settings = Settings.load()
    assert settings.llm.builtin_model_seed == 5

    async def ask_twice() -> list[str]:
        runner, url = await start_builtin_model(settings)
        client = openai.AsyncOpenAI(base_url=url, api_key="-", max_retries=0)
        try:
            return [
                (await client.chat.completions.create(model=settings.llm.llm_model, messages=A))
                .choices[0]
                .message.content
                or ""
                for _ in range(2)
            ]
        finally:
            await client.close()
            await runner.cleanup()

    assert await ask_twice() == await ask_twice()


def test_max_loras_reaches_the_server_from_the_cli_and_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`serve-model --max-loras N` wins over BUILTIN_MAX_LORAS, which sets the default; the
    embedded stack passes the setting to the backend it makes."""
    from typer.testing import CliRunner

    from bot import stack
    from loopgram.cli import app
    from loopgram.settings import LLMSettings
    from training.model_server import app as server_app
    from training.model_server.protocol import DEFAULT_MAX_LORAS

    # The setting's default is the server's own (settings do not import the server).
    assert LLMSettings.model_fields["builtin_max_loras"].default == DEFAULT_MAX_LORAS
    # ... and holds every assistant's active adapter and canary (chat trains as well).
    from loopgram.assistants import ASSISTANTS

    assert len(ASSISTANTS) * 2 <= DEFAULT_MAX_LORAS
    served: list[int] = []
    monkeypatch.setattr(server_app, "serve", lambda **kw: served.append(kw["max_loras"]))
    monkeypatch.setenv("BUILTIN_MAX_LORAS", "5")
    assert Settings.load().llm.builtin_max_loras == 5
    runner = CliRunner()
    assert runner.invoke(app, ["serve-model"]).exit_code == 0
    assert runner.invoke(app, ["serve-model", "--max-loras", "2"]).exit_code == 0
    assert served == [5, 2]
    refused = runner.invoke(app, ["serve-model", "--max-loras", "0"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    monkeypatch.setenv("BUILTIN_MAX_LORAS", "0")
    with pytest.raises(ValueError, match="builtin_max_loras"):
        Settings.load()

    monkeypatch.setenv("BUILTIN_MAX_LORAS", "3")
    made: list[int] = []

    def make_backend(*args: object, max_loras: int, **kwargs: object) -> object:
        made.append(max_loras)
        raise RuntimeError("stop here")

    monkeypatch.setattr(server_app, "make_backend", make_backend)
    with pytest.raises(RuntimeError, match="stop here"):
        asyncio.run(stack.start_builtin_model(Settings.load()))
    assert made == [3]
