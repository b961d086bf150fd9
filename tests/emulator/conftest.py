"""Fixtures: a started emulator, and a real aiogram Bot and Dispatcher pointed at it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer

from loopgram.emulator import BotApiEmulator

Polling = Callable[[Dispatcher], AbstractAsyncContextManager[None]]


@pytest.fixture
async def emu() -> AsyncIterator[BotApiEmulator]:
    async with BotApiEmulator(first_update_id=1) as emulator:
        yield emulator


@pytest.fixture
async def bot_for() -> AsyncIterator[Callable[[BotApiEmulator], Bot]]:
    """Make aiogram Bots talking to an emulator; their sessions are closed afterwards."""
    bots: list[Bot] = []

    def make(emulator: BotApiEmulator) -> Bot:
        api = TelegramAPIServer.from_base(emulator.api_url)
        bots.append(Bot(emulator.token, session=AiohttpSession(api=api)))
        return bots[-1]

    yield make
    for client in bots:
        await client.session.close()


@pytest.fixture
def bot(emu: BotApiEmulator, bot_for: Callable[[BotApiEmulator], Bot]) -> Bot:
    return bot_for(emu)


@pytest.fixture
def polling(emu: BotApiEmulator, bot: Bot) -> Polling:
    """Run ``dispatcher.start_polling`` for the duration of an ``async with``."""

    @asynccontextmanager
    async def run(dispatcher: Dispatcher) -> AsyncIterator[None]:
        task = asyncio.create_task(
            dispatcher.start_polling(
                bot, handle_signals=False, close_bot_session=False, polling_timeout=1
            )
        )
        try:
            # aiogram calls getMe before its first poll; calls are recorded when answered.
            await emu.wait_for(lambda: any(c.method == "getMe" for c in emu.calls) or task.done())
            yield
        finally:
            if not task.done():
                await dispatcher.stop_polling()
            await task

    return run
