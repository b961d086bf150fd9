"""The scripted OpenAI-compatible model server (the one the e2e tests use), per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from loopgram.llm import LLMClient
from loopgram.settings import LLMSettings
from training.model_server.app import create_app, start_server
from training.model_server.scripted import ScriptedBackend

Serve = Callable[[ScriptedBackend], Awaitable[LLMClient]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start a backend behind the real server; get an LLMClient talking to it."""
    runners: list[web.AppRunner] = []
    clients: list[LLMClient] = []

    async def start(backend: ScriptedBackend) -> LLMClient:
        runner, url = await start_server(create_app(backend), "127.0.0.1", 0)
        runners.append(runner)
        client = LLMClient(LLMSettings(llm_base_url=url, llm_timeout=10, llm_first_token_timeout=5))
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
    for runner in runners:
        await runner.cleanup()
