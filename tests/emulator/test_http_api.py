"""The HTTP surface as any client sees it: status codes, bodies, encodings, control API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from loopgram.emulator import BotApiEmulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, emu: BotApiEmulator, method: str, **params: Any
) -> tuple[int, dict[str, Any]]:
    url = f"{emu.api_url}/bot{emu.token}/{method}"
    async with http.post(url, json=params) as response:
        return response.status, await response.json()


async def test_unauthorized_and_unknown_method(
    emu: BotApiEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{emu.api_url}/bot1:WRONG/getMe") as response:
        assert response.status == 401
        assert await response.json() == {
            "ok": False,
            "error_code": 401,
            "description": "Unauthorized",
        }
    assert await call(http, emu, "sendTelepathy") == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found: method not found"},
    )


async def test_method_names_are_case_insensitive_and_get_works(
    emu: BotApiEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{emu.api_url}/bot{emu.token}/GETME") as response:
        body = await response.json()
    assert body["ok"] is True
    assert body["result"]["username"] == "loopgram_bot" and body["result"]["id"] == 123456
    assert emu.calls[-1].method == "getMe"


async def test_form_encoded_values_are_coerced(
    emu: BotApiEmulator, http: aiohttp.ClientSession
) -> None:
    await emu.user(1001, "Anna").send_text("hi")
    markup = json.dumps({"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]})
    form = {
        "chat_id": "1001",
        "text": "hello",
        "reply_markup": markup,
        "reply_to_message_id": "1",
        "protect_content": "true",
    }
    async with http.post(f"{emu.api_url}/bot{emu.token}/sendMessage", data=form) as response:
        body = await response.json()
    message = body["result"]
    assert message["chat"]["id"] == 1001 and message["reply_to_message"]["message_id"] == 1
    assert message["reply_markup"] == {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
    assert message["has_protected_content"] is True
    assert emu.calls[-1].params["chat_id"] == 1001
    assert emu.calls[-1].params["reply_markup"]["inline_keyboard"][0][0]["text"] == "A"


async def test_telegram_error_texts(emu: BotApiEmulator, http: aiohttp.ClientSession) -> None:
    await emu.user(1001, "Anna").send_text("hi")
    cases = [
        ({"text": "x"}, "Bad Request: chat_id is empty"),
        ({"chat_id": 1001}, "Bad Request: message text is empty"),
        (
            {"chat_id": 1001, "text": "x", "reply_markup": "{oops"},
            "Bad Request: can't parse reply keyboard markup JSON object",
        ),
        (
            {"chat_id": 1001, "text": "x", "reply_markup": {"inline_keyboard": [[{"text": "A"}]]}},
            "Bad Request: can't parse inline keyboard button: "
            "Text buttons are unallowed in the inline keyboard",
        ),
        (
            {
                "chat_id": 1001,
                "text": "x",
                "reply_markup": {"inline_keyboard": [[{"callback_data": "a"}]]},
            },
            'Bad Request: can\'t parse inline keyboard button: Field "text" must be of type String',
        ),
        (
            {
                "chat_id": 1001,
                "text": "x",
                "reply_markup": {"inline_keyboard": [[{"text": "A", "callback_data": ""}]]},
            },
            "Bad Request: BUTTON_DATA_INVALID",
        ),
        (
            {"chat_id": 1001, "text": "x", "reply_parameters": {"message_id": 77}},
            "Bad Request: message to be replied not found",
        ),
        (
            {"chat_id": 1001, "text": "x", "parse_mode": "BBCode"},
            "Bad Request: unsupported parse_mode",
        ),
        (
            {"chat_id": 1001, "text": "a.b", "parse_mode": "MarkdownV2"},
            "Bad Request: can't parse entities: Character '.' is reserved and must be escaped "
            "with the preceding '\\'",
        ),
        ({"chat_id": -42, "text": "x"}, "Bad Request: chat not found"),
    ]
    for params, description in cases:
        status, body = await call(http, emu, "sendMessage", **params)
        assert (status, body) == (
            400,
            {"ok": False, "error_code": 400, "description": description},
        ), params
    status, body = await call(
        http,
        emu,
        "sendMessage",
        chat_id=1001,
        text="x",
        reply_parameters={"message_id": 77, "allow_sending_without_reply": True},
    )
    assert status == 200 and "reply_to_message" not in body["result"]


async def test_long_polling_returns_as_soon_as_an_update_arrives(
    emu: BotApiEmulator, http: aiohttp.ClientSession
) -> None:
    anna = emu.user(1001, "Anna")
    started = time.monotonic()
    poll = asyncio.create_task(call(http, emu, "getUpdates", timeout=20))
    await asyncio.sleep(0.1)
    await anna.send_text("wake up")
    status, body = await poll
    assert status == 200 and time.monotonic() - started < 5
    [update] = body["result"]
    assert update["update_id"] == 1 and update["message"]["text"] == "wake up"
    # Not confirmed yet: delivered again; confirmed by offset: gone.
    assert (await call(http, emu, "getUpdates"))[1]["result"] == [update]
    assert (await call(http, emu, "getUpdates", offset=2))[1]["result"] == []
    assert emu.pending_updates == []


async def test_newer_poll_terminates_older_one(
    emu: BotApiEmulator, http: aiohttp.ClientSession
) -> None:
    first = asyncio.create_task(call(http, emu, "getUpdates", timeout=10))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(call(http, emu, "getUpdates", timeout=0))
    status, body = await first
    assert status == 409
    assert body["description"] == (
        "Conflict: terminated by other getUpdates request; "
        "make sure that only one bot instance is running"
    )
    assert (await second)[0] == 200


async def test_allowed_updates_and_reactions(
    emu: BotApiEmulator, http: aiohttp.ClientSession
) -> None:
    anna = emu.user(1001, "Anna")
    sent = await anna.send_text("hi")
    await anna.react(sent, "👍")
    # Reactions are opt-in: the default allowed_updates drops them.
    body = (await call(http, emu, "getUpdates"))[1]
    assert [next(k for k in u if k != "update_id") for u in body["result"]] == ["message"]
    await anna.react(sent, "🔥")
    body = (
        await call(
            http, emu, "getUpdates", offset=2, allowed_updates=["message", "message_reaction"]
        )
    )[1]
    [update] = body["result"]
    reaction = update["message_reaction"]
    assert reaction["old_reaction"] == [{"type": "emoji", "emoji": "👍"}]
    assert reaction["new_reaction"] == [{"type": "emoji", "emoji": "🔥"}]


async def test_webhook_methods_describe_their_result(
    emu: BotApiEmulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(
        http, emu, "setWebhook", url="http://127.0.0.1:9/x", secret_token="bad secret!"
    )
    assert status == 400
    assert body["description"] == "Bad Request: secret token contains unallowed characters"
    assert (await call(http, emu, "deleteWebhook"))[1] == {
        "ok": True,
        "result": True,
        "description": "Webhook is already deleted",
    }
    _, body = await call(http, emu, "setWebhook", url="http://127.0.0.1:9/x")
    assert body["description"] == "Webhook was set"
    assert (await call(http, emu, "getUpdates"))[0] == 409
    _, body = await call(http, emu, "deleteWebhook", drop_pending_updates=True)
    assert body["description"] == "Webhook was deleted"


async def test_flood_control() -> None:
    async with BotApiEmulator(enforce_limits=True) as emu, aiohttp.ClientSession() as http:
        await emu.user(1001, "Anna").send_text("hi")
        group = emu.group(-100123, title="Team")
        statuses = [
            (await call(http, emu, "sendMessage", chat_id=1001, text=str(i)))[0] for i in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        status, body = await call(http, emu, "sendMessage", chat_id=1001, text="again")
        assert body == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        }
        emu.advance_time(1.0)
        assert (await call(http, emu, "sendMessage", chat_id=1001, text="later"))[0] == 200
        for i in range(20):
            assert (await call(http, emu, "sendMessage", chat_id=group.id, text=str(i)))[0] == 200
        status, body = await call(http, emu, "sendMessage", chat_id=group.id, text="21st")
        assert status == 429 and body["parameters"]["retry_after"] == 3
        assert emu.limit_violations == 3


async def test_commands_chat_actions_get_chat_and_delete(
    emu: BotApiEmulator, http: aiohttp.ClientSession
) -> None:
    await emu.user(1001, "Anna", username="anna").send_text("hi")
    commands = [{"command": "start", "description": "Start"}]
    assert (await call(http, emu, "setMyCommands", commands=commands))[1]["result"] is True
    assert (await call(http, emu, "getMyCommands"))[1]["result"] == commands
    assert (await call(http, emu, "getMyCommands", language_code="ru"))[1]["result"] == []
    _, body = await call(
        http, emu, "setMyCommands", commands=[{"command": "Bad Cmd", "description": "x"}]
    )
    assert body["description"] == "Bad Request: BOT_COMMAND_INVALID"
    await call(http, emu, "deleteMyCommands")
    assert emu.my_commands() == []

    assert (await call(http, emu, "sendChatAction", chat_id=1001, action="typing"))[0] == 200
    assert (await call(http, emu, "sendChatAction", chat_id=1001, action="dance"))[1][
        "description"
    ] == "Bad Request: wrong parameter action in request"
    assert [a["action"] for a in emu.chat_actions(1001)] == ["typing"]

    info = (await call(http, emu, "getChat", chat_id="@anna"))[1]["result"]
    assert (info["id"], info["type"], info["first_name"]) == (1001, "private", "Anna")

    sent = (await call(http, emu, "sendMessage", chat_id=1001, text="bye"))[1]["result"]
    assert (await call(http, emu, "deleteMessage", chat_id=1001, message_id=sent["message_id"]))[1][
        "result"
    ] is True
    assert (await call(http, emu, "deleteMessage", chat_id=1001, message_id=sent["message_id"]))[1][
        "description"
    ] == ("Bad Request: message to delete not found")
    assert [m["text"] for m in emu.chat_messages(1001)] == ["hi"]


async def test_control_api(emu: BotApiEmulator, http: aiohttp.ClientSession) -> None:
    update = {
        "message": {
            "message_id": 5,
            "date": 1,
            "text": "from the playground",
            "chat": {"id": 3003, "type": "private", "first_name": "Pat"},
            "from": {"id": 3003, "is_bot": False, "first_name": "Pat"},
        }
    }
    async with http.post(f"{emu.api_url}/_emulator/updates", json=update) as response:
        body = await response.json()
    assert body == {"ok": True, "result": {"update_id": 1}}
    async with http.get(f"{emu.api_url}/_emulator/chats/3003/messages") as response:
        messages = (await response.json())["result"]
    assert [m["text"] for m in messages] == ["from the playground"]
    await call(http, emu, "sendMessage", chat_id=3003, text="answer")
    async with http.get(f"{emu.api_url}/_emulator/calls?since=0") as response:
        calls = await response.json()
    assert [c["method"] for c in calls["result"]] == ["sendMessage"]
    assert calls["next"] == 1 and calls["result"][0]["result"]["message_id"] == 6
    async with http.get(f"{emu.api_url}/_emulator/chats/777/messages") as response:
        assert response.status == 404


async def test_multipart_upload_and_file_download(
    emu: BotApiEmulator, http: aiohttp.ClientSession
) -> None:
    await emu.user(1001, "Anna").send_text("hi")
    form = aiohttp.FormData()
    form.add_field("chat_id", "1001")
    form.add_field("caption", "<b>report</b>")
    form.add_field("parse_mode", "HTML")
    form.add_field("document", b"hello file", filename="notes.txt")
    async with http.post(f"{emu.api_url}/bot{emu.token}/sendDocument", data=form) as response:
        message = (await response.json())["result"]
    document = message["document"]
    assert (document["file_name"], document["mime_type"]) == ("notes.txt", "text/plain")
    assert message["caption_entities"] == [{"type": "bold", "offset": 0, "length": 6}]
    _, body = await call(http, emu, "getFile", file_id=document["file_id"])
    path = body["result"]["file_path"]
    async with http.get(f"{emu.api_url}/file/bot{emu.token}/{path}") as response:
        assert await response.read() == b"hello file"
    async with http.get(f"{emu.api_url}/file/bot{emu.token}/documents/nope") as response:
        assert response.status == 404
    assert (await call(http, emu, "getFile", file_id="nope"))[1]["description"] == (
        "Bad Request: invalid file_id"
    )
    assert (await call(http, emu, "sendPhoto", chat_id=1001))[1]["description"] == (
        "Bad Request: there is no photo in the request"
    )
    assert (await call(http, emu, "sendPhoto", chat_id=1001, photo=document["file_id"]))[1][
        "description"
    ] == "Bad Request: can't use file of type Document as Photo"
