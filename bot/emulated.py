"""The real bot against the local Bot API emulator: for the demo, the playground and tests.

Nothing is faked on the bot's side: the same dispatcher, handlers, worker and database run
as in production; only Telegram is the emulator on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from pydantic import SecretStr

from bot.runner import serve
from bot.stack import Stack, embedded_stack
from loopgram.emulator import BotApiEmulator
from loopgram.settings import Settings


@dataclass
class EmulatedBot:
    emulator: BotApiEmulator
    stack: Stack


@contextlib.asynccontextmanager
async def emulated_bot(
    settings: Settings,
    *,
    emulator: BotApiEmulator | None = None,
    with_worker: bool = True,
    with_model: bool = True,
    with_training: bool = False,
) -> AsyncIterator[EmulatedBot]:
    emu = emulator or BotApiEmulator(token="424242:EMULATED-loopgram-demo-token")  # noqa: S106
    owns_emulator = emulator is None
    if owns_emulator:
        await emu.start()
    settings = replace(
        settings,
        telegram=settings.telegram.model_copy(
            update={
                "telegram_bot_token": SecretStr(emu.token),
                "telegram_api_url": emu.api_url,
            }
        ),
    )
    try:
        async with embedded_stack(
            settings, with_worker=with_worker, with_model=with_model, with_training=with_training
        ) as stack:
            stop = asyncio.Event()
            ready = asyncio.Event()
            task = asyncio.create_task(serve(stack.runtime, stack.bot, stop=stop, ready=ready))
            try:
                await emu.wait_for(lambda: ready.is_set() or task.done(), timeout=30)
                if task.done():
                    task.result()
                yield EmulatedBot(emu, stack)
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=30)
    finally:
        if owns_emulator:
            await emu.stop()
