"""Webhook delivery to a small aiohttp server, and the getUpdates conflict."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramConflictError
from aiogram.types import Message
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from loopgram.emulator import BotApiEmulator


class Receiver:
    """A webhook endpoint that records deliveries and can fail the first few."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=500)
        self.received.append((dict(request.headers), await request.json()))
        return web.json_response({})


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/hook"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recorder = Receiver(failures=2)
    app = web.Application()
    app.router.add_post("/hook", recorder.handle)
    runner, recorder.url = await serve(app)
    yield recorder
    await runner.cleanup()


@pytest.fixture
async def fast_emu() -> AsyncIterator[BotApiEmulator]:
    async with BotApiEmulator(first_update_id=1, webhook_retry_delays=(0.01, 0.02, 0.05)) as emu:
        yield emu


async def test_webhook_delivery_with_secret_retries_and_order(
    fast_emu: BotApiEmulator, bot_for: Callable[[BotApiEmulator], Bot], receiver: Receiver
) -> None:
    emu, bot = fast_emu, bot_for(fast_emu)
    anna = emu.user(1001, "Anna")
    assert await bot.set_webhook(receiver.url, secret_token="s3cret_T0ken") is True
    for text in ("one", "two", "three"):
        await anna.send_text(text)
    await emu.wait_for(lambda: len(receiver.received) == 3)
    assert [body["message"]["text"] for _, body in receiver.received] == ["one", "two", "three"]
    assert [body["update_id"] for _, body in receiver.received] == [1, 2, 3]
    assert all(h["X-Telegram-Bot-Api-Secret-Token"] == "s3cret_T0ken" for h, _ in receiver.received)
    info = await bot.get_webhook_info()
    assert (info.url, info.pending_update_count) == (receiver.url, 0)
    assert info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"

    with pytest.raises(TelegramConflictError) as caught:
        await bot.get_updates()
    assert caught.value.message == (
        "Conflict: can't use getUpdates method while webhook is active; "
        "use deleteWebhook to delete the webhook first"
    )
    assert await bot.delete_webhook() is True
    await anna.send_text("four")
    assert [u.message.text for u in await bot.get_updates() if u.message] == ["four"]


async def test_webhook_gives_up_after_bounded_retries(
    fast_emu: BotApiEmulator, bot_for: Callable[[BotApiEmulator], Bot]
) -> None:
    bot = bot_for(fast_emu)
    await bot.set_webhook("http://127.0.0.1:9/unreachable")
    await fast_emu.user(1001, "Anna").send_text("lost")
    await fast_emu.wait_for(lambda: len(fast_emu.webhook_failures) == 1)
    info = await bot.get_webhook_info()
    assert info.pending_update_count == 0
    assert info.last_error_message == "Connection refused"


async def test_method_in_webhook_answer_is_executed(
    fast_emu: BotApiEmulator, bot_for: Callable[[BotApiEmulator], Bot]
) -> None:
    bot = bot_for(fast_emu)
    dp = Dispatcher()

    @dp.message()
    async def echo(message: Message) -> Any:
        return message.answer(f"echo: {message.text}")  # answered inside the webhook response

    app = web.Application()
    SimpleRequestHandler(dp, bot, secret_token="abc", handle_in_background=False).register(
        app, path="/hook"
    )
    runner, url = await serve(app)
    try:
        await bot.set_webhook(url, secret_token="abc")
        await fast_emu.user(1001, "Anna").send_text("ping")
        reply = await fast_emu.wait_for_bot_message(1001)
    finally:
        await runner.cleanup()
    assert reply["text"] == "echo: ping"
    assert [c.source for c in fast_emu.calls if c.method == "sendMessage"] == ["webhook_response"]
