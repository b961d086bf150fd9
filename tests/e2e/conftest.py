"""The real bot against the Bot API emulator and a scripted OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlmodel import select

from bot.emulated import EmulatedBot, emulated_bot
from loopgram.db import Database
from training.model_server.app import create_app, start_server
from training.model_server.scripted import ScriptedBackend

REPLY = "**Ответ** модели: план недели начинается с трёх главных задач."


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend(REPLY, token_delay=0.01)


@pytest.fixture
async def model_url(scripted: ScriptedBackend) -> AsyncIterator[str]:
    runner, url = await start_server(create_app(scripted), "127.0.0.1", 0)
    yield url
    await runner.cleanup()


@pytest.fixture
def bot_settings(settings_factory, sqlite_url: str, model_url: str):  # type: ignore[no-untyped-def]
    def make(**env: str) -> Any:
        env.setdefault("DATABASE_URL", sqlite_url)
        env.setdefault("LLM_BASE_URL", model_url)
        env.setdefault("STREAM_EDIT_INTERVAL", "0.05")
        env.setdefault("LLM_FIRST_TOKEN_TIMEOUT", "5")
        env.setdefault("LLM_TIMEOUT", "10")
        # Telegram's real limits (1 message/s per chat) would make every multi-message test
        # wait; tests/e2e/test_load.py runs with the real ones.
        env.setdefault("TELEGRAM_PRIVATE_PER_SECOND", "100")
        env.setdefault("TELEGRAM_GROUP_PER_MINUTE", "6000")
        env.setdefault("TELEGRAM_GLOBAL_PER_SECOND", "1000")
        env.setdefault("USER_RATE_LIMIT", "1000")
        return settings_factory(**env)

    return make


@pytest.fixture
async def running(bot_settings) -> AsyncIterator[EmulatedBot]:  # type: ignore[no-untyped-def]
    async with emulated_bot(bot_settings(), with_model=False) as env:
        yield env


async def wait_db(db: Database, query: Callable[..., Any], within: float = 10.0) -> Any:
    """Poll the database until `query(session=...)` returns something truthy."""
    deadline = time.monotonic() + within
    while True:
        result = await db.run(query)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"database never satisfied {query}")
        await asyncio.sleep(0.05)


def rows(model: Any) -> Callable[..., list[Any]]:
    return lambda *, session: list(session.exec(select(model)).all())


def has_rating_buttons(message: dict[str, Any]) -> bool:
    markup = message.get("reply_markup") or {}
    texts = [b["text"] for row in markup.get("inline_keyboard", []) for b in row]
    return any(text.startswith("👍") for text in texts)
