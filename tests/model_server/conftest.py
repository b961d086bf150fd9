from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import openai
import pytest
from aiohttp import web

from training.model_server.app import create_app, start_server
from training.model_server.protocol import GenerationBackend


class Server:
    def __init__(self, runner: web.AppRunner, base_url: str) -> None:
        self.runner = runner
        self.base_url = base_url  # ".../v1"
        self.root_url = base_url.removesuffix("/v1")


StartServer = Callable[[GenerationBackend], Awaitable[Server]]


@pytest.fixture
async def start() -> AsyncIterator[StartServer]:
    runners: list[web.AppRunner] = []

    async def _start(backend: GenerationBackend) -> Server:
        runner, base_url = await start_server(create_app(backend), "127.0.0.1", 0)
        runners.append(runner)
        return Server(runner, base_url)

    yield _start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[[Server], openai.AsyncOpenAI]]:
    clients: list[openai.AsyncOpenAI] = []

    def _make(server: Server) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(
            base_url=server.base_url, api_key="not-needed", max_retries=0, timeout=20
        )
        clients.append(client)
        return client

    yield _make
    for client in clients:
        await client.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
