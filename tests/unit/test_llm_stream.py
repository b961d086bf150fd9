"""`LLMClient.stream_chat` reads raw streamed chunks: odd or hostile servers on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from loopgram.errors import ModelUnavailableError
from loopgram.http_site import start_site
from loopgram.llm import LLMClient
from loopgram.settings import LLMSettings

Events = list[Any]


def _chunk(content: Any) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": content}]}


@pytest.fixture
async def sse_server() -> AsyncIterator[Callable[[Events], str]]:
    """A server whose /v1/chat/completions streams the given events (`data:` lines)."""
    script: dict[str, Events] = {"events": []}
    seen: list[dict[str, Any]] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in script["events"]:
            data = event if isinstance(event, str) else json.dumps(event)
            await response.write(f"data: {data}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner, host, port = await start_site(app, "127.0.0.1", 0)

    def serve(events: Events) -> str:
        script["events"] = events
        return f"http://{host}:{port}/v1"

    serve.seen = seen  # type: ignore[attr-defined]
    yield serve
    await runner.cleanup()


def _client(url: str) -> LLMClient:
    return LLMClient(
        LLMSettings(llm_base_url=url, llm_timeout=10, llm_first_token_timeout=5, llm_model="m")
    )


async def test_text_deltas_are_joined_and_the_request_is_the_chat_completions_one(
    sse_server: Callable[[Events], str],
) -> None:
    url = sse_server(
        [
            _chunk({"role": "assistant"}),
            _chunk({"content": "Hello"}),
            _chunk({"content": ", world"}),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
    )
    client = _client(url)
    try:
        answer = await client.complete([{"role": "user", "content": "hi"}], max_tokens=7)
    finally:
        await client.close()
    assert answer == "Hello, world"
    body = sse_server.seen[-1]  # type: ignore[attr-defined]
    assert body["model"] == "m" and body["stream"] is True and body["max_tokens"] == 7
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert "user" not in body and "seed" not in body  # sent only when given


async def test_the_end_user_pseudonym_is_sent_as_openais_user_field(
    sse_server: Callable[[Events], str],
) -> None:
    client = _client(sse_server([_chunk({"content": "ok"})]))
    try:
        await client.complete([{"role": "user", "content": "hi"}], user="a1b2", seed=3)
    finally:
        await client.close()
    body = sse_server.seen[-1]  # type: ignore[attr-defined]
    assert (body["user"], body["seed"]) == ("a1b2", 3)


async def test_malformed_chunks_carry_no_text_and_do_not_break_the_stream(
    sse_server: Callable[[Events], str],
) -> None:
    url = sse_server(
        [
            [1, 2, 3],
            {"choices": "not a list"},
            {"choices": [None, {"delta": "text"}, {"delta": {"content": 5}}]},
            {"usage": {"completion_tokens": 1}},
            _chunk({"content": "ok"}),
        ]
    )
    client = _client(url)
    try:
        assert await client.complete([{"role": "user", "content": "hi"}]) == "ok"
    finally:
        await client.close()


async def test_an_error_event_in_the_stream_is_model_unavailable(
    sse_server: Callable[[Events], str],
) -> None:
    url = sse_server([_chunk({"content": "par"}), {"error": {"message": "out of memory"}}])
    client = _client(url)
    try:
        with pytest.raises(ModelUnavailableError, match="out of memory"):
            await client.complete([{"role": "user", "content": "hi"}])
    finally:
        await client.close()


async def test_a_non_json_event_is_model_unavailable_not_a_crash(
    sse_server: Callable[[Events], str],
) -> None:
    url = sse_server(["{not json"])
    client = _client(url)
    try:
        with pytest.raises(ModelUnavailableError, match="malformed"):
            await client.complete([{"role": "user", "content": "hi"}])
    finally:
        await client.close()


@pytest.mark.parametrize(("status", "not_served"), [(404, True), (500, False), (400, False)])
async def test_a_404_is_a_model_the_server_does_not_serve(status: int, not_served: bool) -> None:
    """vLLM and the built-in server answer 404 for an unknown or unloaded LoRA: the caller may
    route elsewhere. Other errors stay plain ModelUnavailableError, streamed or best-of-n."""
    from loopgram.errors import ModelNotServedError

    async def refuse(request: web.Request) -> web.Response:
        body = {"error": {"message": "The model `chat-v9` does not exist.", "code": status}}
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", refuse)
    runner, host, port = await start_site(app, "127.0.0.1", 0)
    client = _client(f"http://{host}:{port}/v1")
    try:
        with pytest.raises(ModelUnavailableError) as streamed:
            await client.complete([{"role": "user", "content": "hi"}], model="chat-v9")
        with pytest.raises(ModelUnavailableError) as many:
            await client.complete_many([{"role": "user", "content": "hi"}], n=2, model="chat-v9")
    finally:
        await client.close()
        await runner.cleanup()
    for caught in (streamed, many):
        assert isinstance(caught.value, ModelNotServedError) is not_served
        assert caught.value.key == "error-model-unavailable"  # the same text for the person
