"""Webhook mode: the secret, bad bodies (the shared update zoo), and real delivery."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.emulated import EmulatedBot, emulated_bot
from tests.conftest import SHARED_DATA
from tests.e2e.conftest import has_rating_buttons

SECRET = "s3cret-token-for-tests"
ZOO = SHARED_DATA / "telegram-update-zoo.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def webhook_bot(bot_settings) -> AsyncIterator[tuple[EmulatedBot, str]]:  # type: ignore[no-untyped-def]
    port = free_port()
    url = f"http://127.0.0.1:{port}/tg/webhook"
    settings = bot_settings(
        BOT_MODE="webhook",
        WEBHOOK_URL=url,
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_HOST="127.0.0.1",
        WEBHOOK_PORT=str(port),
    )
    async with emulated_bot(settings, with_model=False) as env:
        yield env, url


async def test_updates_arrive_by_webhook_and_are_answered(
    webhook_bot: tuple[EmulatedBot, str],
) -> None:
    env, _url = webhook_bot
    emu = env.emulator
    ben = emu.user(5001, "Ben", language_code="en")
    await ben.send_text("hello over webhook")
    answer = await emu.wait_for_bot_message(5001, has_rating_buttons)
    await ben.press(answer, "👍")
    await emu.wait_for(lambda: len(emu.callback_answers) == 1)
    assert emu.webhook_deliveries, "the emulator delivered nothing by webhook"


def _update(update_id: int, text: str = "hi") -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1,
            "date": 1_700_000_000,
            "chat": {"id": 5002, "type": "private", "first_name": "Ann"},
            "from": {"id": 5002, "is_bot": False, "first_name": "Ann"},
            "text": text,
        },
    }


async def test_secret_is_required(webhook_bot: tuple[EmulatedBot, str]) -> None:
    env, url = webhook_bot
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=_update(1)) as response:
            assert response.status == 401
        headers = {"X-Telegram-Bot-Api-Secret-Token": "wrong"}
        async with http.post(url, json=_update(2), headers=headers) as response:
            assert response.status == 403
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        async with http.post(
            url, data=b"{not json", headers={**headers, "Content-Type": "application/json"}
        ) as response:
            assert response.status == 400
        async with http.post(
            url.replace("/tg/webhook", "/healthz").replace("post", "get")
        ) as response:
            assert response.status in (200, 405)
        async with http.get(url.rsplit("/", 2)[0] + "/healthz") as response:
            assert response.status == 200
    assert env.emulator.bot_messages(5002) == []


def _zoo() -> list[dict[str, Any]]:
    if not ZOO.exists():
        pytest.skip(f"{ZOO} not present")
    return list(json.loads(ZOO.read_text(encoding="utf-8")))


def _body(entry: dict[str, Any]) -> bytes:
    body = entry["body"]
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    expand = entry.get("expand")
    if expand:
        fill = expand["unit"] * expand["times"] + expand.get("close", "") * expand["times"]
        text = text.replace(expand["placeholder"], fill)
    return text.encode(entry.get("encoding", "utf-8"))


async def test_update_zoo_valid_2xx_bad_4xx_and_still_serving(
    webhook_bot: tuple[EmulatedBot, str],
) -> None:
    env, url = webhook_bot
    entries = _zoo()
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    wrong: list[str] = []
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for entry in entries:
            content_type = entry.get("content_type", "application/json")
            async with http.post(
                url, data=_body(entry), headers={**headers, "Content-Type": content_type}
            ) as response:
                ok = (
                    200 <= response.status < 300
                    if entry["kind"] == "valid"
                    else 400 <= response.status < 500
                )
                if not ok:
                    wrong.append(f"{entry['name']} ({entry['kind']}) -> {response.status}")
    assert wrong == []
    # Still serving: a normal conversation works after the whole zoo.
    emu = env.emulator
    ben = emu.user(5003, "Ben", language_code="en")
    await ben.send_text("still there?")
    await emu.wait_for_bot_message(5003, has_rating_buttons, timeout=20)


def test_zoo_file_location_is_outside_the_project() -> None:
    assert not Path(__file__).resolve().is_relative_to(SHARED_DATA)
