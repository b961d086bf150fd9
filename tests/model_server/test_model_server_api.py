"""The model server's OpenAI wire format, checked with the real ``openai`` client."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from training.model_server.app import make_backend
from training.model_server.protocol import GenerationRequest
from training.model_server.scripted import ScriptedBackend

from .conftest import Server, StartServer

ClientFactory = Callable[[Server], openai.AsyncOpenAI]
REPO_ROOT = Path(__file__).resolve().parents[2]
REPLY = "Hello there, this is a scripted answer with a few words."
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


async def _collect_stream(
    client: openai.AsyncOpenAI, **kwargs: object
) -> tuple[str, list[openai.types.chat.ChatCompletionChunk]]:
    stream = await client.chat.completions.create(stream=True, **kwargs)  # type: ignore[call-overload]
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


async def test_health_and_models(
    start: StartServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await start(ScriptedBackend(REPLY, model_ids=["loopgram-base", "adapter-a"]))
    async with http.get(f"{server.root_url}/health") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}

    models = await make_client(server).models.list()
    assert [model.id for model in models.data] == ["loopgram-base", "adapter-a"]
    assert all(model.object == "model" for model in models.data)
    assert all(isinstance(model.created, int) for model in models.data)


async def test_non_streaming_completion(start: StartServer, make_client: ClientFactory) -> None:
    backend = ScriptedBackend(REPLY)
    client = make_client(await start(backend))
    completion = await client.chat.completions.create(
        model="loopgram-base",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Say hello"}]},
        ],
        temperature=0.3,
        top_p=0.9,
        seed=7,
        max_tokens=100,
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "loopgram-base"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == REPLY
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(REPLY.split())
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )

    (request,) = backend.requests
    assert request == GenerationRequest(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        model="loopgram-base",
        max_tokens=100,
        temperature=0.3,
        top_p=0.9,
        seed=7,
        stop=[],
    )


async def test_streaming_matches_non_streaming(
    start: StartServer, make_client: ClientFactory
) -> None:
    client = make_client(await start(ScriptedBackend(REPLY)))
    completion = await client.chat.completions.create(model="loopgram-base", messages=USER)
    text, chunks = await _collect_stream(client, model="loopgram-base", messages=USER)

    assert text == completion.choices[0].message.content == REPLY
    assert len(chunks) == len(REPLY.split()) + 2  # role chunk + one per word + finish chunk
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert all(chunk.choices[0].finish_reason is None for chunk in chunks[:-1])
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)


async def test_stream_include_usage(start: StartServer, make_client: ClientFactory) -> None:
    client = make_client(await start(ScriptedBackend(REPLY)))
    text, chunks = await _collect_stream(
        client,
        model="loopgram-base",
        messages=USER,
        stream_options={"include_usage": True},
    )
    assert text == REPLY
    *content_chunks, usage_chunk = chunks
    assert all(chunk.usage is None for chunk in content_chunks)
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == len(REPLY.split())
    assert usage_chunk.usage.total_tokens == (
        usage_chunk.usage.prompt_tokens + usage_chunk.usage.completion_tokens
    )


async def test_max_tokens_gives_length(start: StartServer, make_client: ClientFactory) -> None:
    client = make_client(await start(ScriptedBackend(REPLY)))
    completion = await client.chat.completions.create(
        model="loopgram-base", messages=USER, max_completion_tokens=3
    )
    assert completion.choices[0].message.content == "Hello there, this "
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3

    text, chunks = await _collect_stream(client, model="loopgram-base", messages=USER, max_tokens=3)
    assert text == "Hello there, this "
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_stop_sequences(start: StartServer, make_client: ClientFactory) -> None:
    client = make_client(await start(ScriptedBackend(REPLY)))
    completion = await client.chat.completions.create(
        model="loopgram-base", messages=USER, stop=["scripted answer", "never"]
    )
    assert completion.choices[0].message.content == "Hello there, this is a "
    assert completion.choices[0].finish_reason == "stop"

    # The stop string spans two streamed words; nothing of it may leak out.
    text, chunks = await _collect_stream(
        client, model="loopgram-base", messages=USER, stop="a scripted"
    )
    assert text == "Hello there, this is "
    assert chunks[-1].choices[0].finish_reason == "stop"

    # A prefix of a stop string that never completes is released at the end.
    text, _ = await _collect_stream(client, model="loopgram-base", messages=USER, stop="words!")
    assert text == REPLY


async def test_unknown_model_is_404(start: StartServer, make_client: ClientFactory) -> None:
    backend = ScriptedBackend(REPLY)
    client = make_client(await start(backend))
    with pytest.raises(openai.NotFoundError) as error:
        await client.chat.completions.create(model="nope", messages=USER)
    assert error.value.status_code == 404
    assert error.value.body == {
        "message": "The model `nope` does not exist.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=USER, stream=True)
    assert backend.requests == []


async def test_bad_requests_are_400(
    start: StartServer, make_client: ClientFactory, http: aiohttp.ClientSession
) -> None:
    server = await start(ScriptedBackend(REPLY))
    client = make_client(server)
    with pytest.raises(openai.BadRequestError) as error:
        await client.chat.completions.create(model="loopgram-base", messages=[])
    assert error.value.body is not None
    assert error.value.param == "messages"

    url = f"{server.base_url}/chat/completions"
    async with http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        body = await r.json()
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"

    bad_bodies = [
        [1, 2, 3],
        {"model": "loopgram-base"},
        {"model": "loopgram-base", "messages": "hello"},
        {"model": "loopgram-base", "messages": [{"role": "robot", "content": "hi"}]},
        {"model": "loopgram-base", "messages": [{"role": "user", "content": 5}]},
        {"model": "loopgram-base", "messages": USER, "temperature": "hot"},
        {"model": "loopgram-base", "messages": USER, "temperature": 3},
        {"model": "loopgram-base", "messages": USER, "max_tokens": 0},
        {"model": "loopgram-base", "messages": USER, "max_tokens": True},
        {"model": "loopgram-base", "messages": USER, "stop": [1]},
        {"model": "loopgram-base", "messages": USER, "n": 2, "stream": True},
        {"model": "loopgram-base", "messages": USER, "n": 9},
        {"model": 5, "messages": USER},
        {"model": "loopgram-base", "messages": USER, "stream_options": {"include_usage": True}},
    ]
    for bad in bad_bodies:
        async with http.post(url, json=bad) as r:
            assert r.status == 400, bad
            body = await r.json()
            assert body["error"]["message"], bad

    async with http.get(f"{server.base_url}/nothing-here") as r:
        assert r.status == 404
        assert "error" in await r.json()


async def test_bodies_json_cannot_read_are_400(
    start: StartServer, http: aiohttp.ClientSession
) -> None:
    """Nested too deep for the parser, an integer too long to convert, an unknown charset or
    text that is not valid Unicode: the client's mistake (400), not an internal error (500)."""
    server = await start(ScriptedBackend(REPLY))
    json_type = {"Content-Type": "application/json"}
    unreadable = [
        (b"[" * 100_000 + b"]" * 100_000, json_type),
        (b'{"model": "loopgram-base", "max_tokens": ' + b"9" * 5000 + b"}", json_type),
        (b'{"model": "loopgram-base"}', {"Content-Type": "application/json; charset=no-such"}),
    ]
    for path in ("chat/completions", "rewards", "load_reward_model"):
        for data, headers in unreadable:
            async with http.post(f"{server.base_url}/{path}", data=data, headers=headers) as r:
                assert r.status == 400, (path, data[:50], headers)
                body = await r.json()
                assert body["error"]["type"] == "invalid_request_error"
                assert body["error"]["message"]

    surrogate = {"model": "loopgram-base", "messages": [{"role": "user", "content": "a\ud800"}]}
    async with http.post(f"{server.base_url}/chat/completions", json=surrogate) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "messages.[0].content"
    rewards = {"model": "rm", "messages": USER, "answers": ["fine", "b\udfff"]}
    async with http.post(f"{server.base_url}/rewards", json=rewards) as r:
        assert r.status == 400
        assert (await r.json())["error"]["param"] == "answers"


async def test_backend_failure_is_500(start: StartServer, make_client: ClientFactory) -> None:
    backend = ScriptedBackend(REPLY, fail=RuntimeError("GPU on fire"))
    client = make_client(await start(backend))
    with pytest.raises(openai.InternalServerError) as error:
        await client.chat.completions.create(model="loopgram-base", messages=USER)
    assert "GPU on fire" in error.value.message
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="loopgram-base", messages=USER, stream=True)

    backend.fail = None
    completion = await client.chat.completions.create(model="loopgram-base", messages=USER)
    assert completion.choices[0].message.content == REPLY


class _BreaksMidway:
    def model_ids(self) -> list[str]:
        return ["loopgram-base"]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[str]:
        yield "partial "
        raise RuntimeError("lost the model")


async def test_failure_mid_stream_raises_in_client(
    start: StartServer, make_client: ClientFactory
) -> None:
    client = make_client(await start(_BreaksMidway()))
    stream = await client.chat.completions.create(model="loopgram-base", messages=USER, stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIError, match="lost the model"):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "partial "


async def test_concurrent_streams_run_in_parallel(
    start: StartServer, make_client: ClientFactory
) -> None:
    words, delay = 10, 0.05
    backend = ScriptedBackend(
        lambda request: " ".join(f"{request.messages[-1]['content']}-{i}" for i in range(words)),
        token_delay=delay,
        first_token_delay=delay,
    )
    client = make_client(await start(backend))

    async def one(i: int) -> str:
        text, chunks = await _collect_stream(
            client, model="loopgram-base", messages=[{"role": "user", "content": f"r{i}"}]
        )
        assert chunks[-1].choices[0].finish_reason == "stop"
        return text

    began = time.perf_counter()
    texts = await asyncio.gather(*(one(i) for i in range(10)))
    elapsed = time.perf_counter() - began

    for i, text in enumerate(texts):
        assert text == " ".join(f"r{i}-{j}" for j in range(words))
    sequential = 10 * words * delay  # 5 s if the requests were served one by one
    assert elapsed < sequential / 3, elapsed
    assert backend.completed == 10


async def test_client_disconnect_stops_generation(
    start: StartServer, make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    backend = ScriptedBackend(" ".join(["word"] * 200), token_delay=0.02)
    client = make_client(await start(backend))
    caplog.set_level(logging.WARNING)

    stream = await client.chat.completions.create(model="loopgram-base", messages=USER, stream=True)
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.close()

    for _ in range(100):
        if backend.aborted:
            break
        await asyncio.sleep(0.02)
    assert backend.aborted == 1
    assert backend.completed == 0

    backend.reply = REPLY
    backend.token_delay = 0.0
    completion = await client.chat.completions.create(model="loopgram-base", messages=USER)
    assert completion.choices[0].message.content == REPLY
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_make_backend() -> None:
    assert make_backend("ngram", model_id="my-model").model_ids() == ["my-model"]
    with pytest.raises(NotImplementedError):
        make_backend("Qwen/Qwen2.5-0.5B-Instruct")


async def test_serve_runs_until_sigterm(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = REPO_ROOT
    code = (
        "from training.model_server.app import serve; "
        f"serve(host='127.0.0.1', port={port}, base_model='ngram', model_id='served-name')"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        url = f"http://127.0.0.1:{port}/v1"

        async def wait_for_url() -> None:
            assert process.stderr is not None
            while url not in (line := (await process.stderr.readline()).decode()):
                assert line, "the server exited before logging its URL"

        await asyncio.wait_for(wait_for_url(), 20)
        async with http.get(f"http://127.0.0.1:{port}/v1/models") as response:
            assert (await response.json())["data"][0]["id"] == "served-name"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
