"""The playground with the real bot behind the Bot API emulator and a scripted model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.playground import Playground, playground, playground_settings
from loopgram.playground import default_cast
from training.model_server.app import create_app, start_server
from training.model_server.scripted import ScriptedBackend

# Markdown from the model: the bot sends it as HTML, the page must show it bold.
REPLY = "**Plan** the week: start with the three most important tasks."
ANNA, BEN, MIA, ALEX = 101, 102, 201, 301


@pytest.fixture
async def model_url() -> AsyncIterator[str]:
    runner, url = await start_server(
        create_app(ScriptedBackend(REPLY, token_delay=0.01)), "127.0.0.1", 0
    )
    yield url
    await runner.cleanup()


@pytest.fixture
async def pg(settings_factory, model_url: str, tmp_path: Path) -> AsyncIterator[Playground]:  # type: ignore[no-untyped-def]
    settings = settings_factory(
        LLM_BASE_URL=model_url, LLM_FIRST_TOKEN_TIMEOUT="5", LLM_TIMEOUT="10"
    )
    settings = playground_settings(settings, default_cast("en"), data_dir=tmp_path / "pg")
    settings = replace(settings, bot=settings.bot.model_copy(update={"stream_edit_interval": 0.05}))
    async with playground(settings, lang="en", with_model=False) as running:
        yield running


@pytest.fixture
async def http(pg: Playground) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=pg.url) as session:
        yield session


async def eventually(
    probe: Callable[[], Any], what: str, within: float = 20.0, every: float = 0.1
) -> Any:
    """Await `probe()` until it returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """Button text -> callback data."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return {b["text"]: b.get("callback_data", "") for row in rows for b in row}
