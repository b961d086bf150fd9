"""The playground's JSON API with the real bot behind it: acting as people, reading chats,
the side panel, and refusing bad input with a key the page translates."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from typer.testing import CliRunner

from bot.playground import Playground
from loopgram.cli import app
from loopgram.emulator.files import tiny_png
from loopgram.errors import LoopgramError
from loopgram.playground import PlaygroundServer, default_cast
from loopgram.playground.cast import MODERATORS_CHAT_ID, TEAM_CHAT_ID
from tests.playground.conftest import ALEX, ANNA, BEN, MIA, REPLY, buttons, eventually


async def chat(http: aiohttp.ClientSession, user: int, chat_id: int, **query: Any) -> Any:
    async with http.get(f"/api/chats/{chat_id}", params={"as": user, **query}) as response:
        body = await response.json()
        assert body["ok"], body
        return body["result"]


async def post(http: aiohttp.ClientSession, path: str, payload: Any) -> tuple[int, Any]:
    async with http.post(path, json=payload) as response:
        return response.status, await response.json()


async def answer_in(http: aiohttp.ClientSession, user: int, chat_id: int) -> dict[str, Any]:
    """The bot's finished answer (the one with rating buttons) in the chat."""

    async def probe() -> dict[str, Any] | None:
        messages = (await chat(http, user, chat_id))["messages"]
        return next(
            (m for m in reversed(messages) if m["from"]["is_bot"] and "👍" in buttons(m)), None
        )

    result: dict[str, Any] = await eventually(probe, "an answer with rating buttons")
    return result


async def press(
    http: aiohttp.ClientSession, user: int, chat_id: int, message: dict[str, Any], text: str
) -> dict[str, Any]:
    """Press a button; return the bot's answerCallbackQuery as the page gets it."""
    answers_from = (await chat(http, user, chat_id))["answers_next"]
    status, body = await post(
        http,
        "/api/press",
        {
            "as": user,
            "chat": chat_id,
            "message_id": message["message_id"],
            "data": buttons(message)[text],
        },
    )
    assert status == 200, body
    query_id = body["result"]["callback_query_id"]

    async def probe() -> dict[str, Any] | None:
        answers = (await chat(http, user, chat_id, answers=answers_from))["answers"]
        return next((a for a in answers if a["callback_query_id"] == query_id), None)

    result: dict[str, Any] = await eventually(probe, f"the answer to pressing {text}")
    return result


async def panel(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get("/api/panel") as response:
        body = await response.json()
        return body["result"]  # type: ignore[no-any-return]


async def test_page_config_and_static_files(http: aiohttp.ClientSession, pg: Playground) -> None:
    async with http.get("/") as response:
        assert response.status == 200
        assert "/static/playground.js" in await response.text()
    for name in ("playground.js", "playground.css"):
        async with http.get(f"/static/{name}") as response:
            assert response.status == 200
    async with http.get("/static/../server.py") as response:
        assert response.status == 404
    async with http.get("/api/config") as response:
        config = (await response.json())["result"]
    assert [i["role"] for i in config["identities"]] == ["user", "user", "moderator", "admin"]
    assert {g["id"] for g in config["groups"]} == {TEAM_CHAT_ID, MODERATORS_CHAT_ID}
    assert config["bot"]["username"] == "loopgram_bot"
    assert pg.url.startswith("http://127.0.0.1:")


async def test_ask_see_the_streamed_answer_rate_it_and_see_it_stored(
    http: aiohttp.ClientSession, pg: Playground
) -> None:
    status, body = await post(
        http, "/api/send", {"as": ANNA, "chat": ANNA, "text": "How do I plan my week?"}
    )
    assert status == 200, body
    answer = await answer_in(http, ANNA, ANNA)
    assert answer["text"] == REPLY.replace("**", "")
    assert {"type": "bold", "offset": 0, "length": 4} in answer["entities"]
    # The answer was streamed into a draft before the message was sent.
    assert pg.env.emulator.drafts(ANNA)

    version = (await chat(http, ANNA, ANNA))["version"]
    unchanged = await chat(http, ANNA, ANNA, version=version)
    assert unchanged["unchanged"] is True

    reply = await press(http, ANNA, ANNA, answer, "👍")
    assert reply["text"] == "Thanks! 👍"
    assert reply["show_alert"] is False

    async def rated() -> dict[str, Any] | None:
        data = await panel(http)
        found = [i for i in data["interactions"] if i["ratings"]]
        return data if found else None

    data = await eventually(rated, "the rating in the panel")
    interaction = data["interactions"][0]
    assert interaction["user"] == "Anna"
    assert interaction["prompt"] == "How do I plan my week?"
    assert answer["message_id"] in interaction["message_ids"]
    assert interaction["ratings"] == [
        {
            "user_id": ANNA,
            "user": "Anna",
            "value": 1,
            "reason": None,
            "comment": None,
            "source": "button",
        }
    ]
    assert data["buffer"]["ratings"] == 1
    assert data["assistants"]["chat"] == {
        "buffer": {"pairs": 0, "ratings": 1},
        "active": None,
        "canary": None,
    }
    async with http.get("/api/stats.png", params={"v": data["chart_version"]}) as response:
        assert response.status == 200
        assert response.content_type == "image/png"
        assert (await response.read()).startswith(b"\x89PNG")


async def test_a_plain_user_pressing_a_review_button_is_refused(
    http: aiohttp.ClientSession, pg: Playground
) -> None:
    await post(http, "/api/send", {"as": BEN, "chat": BEN, "text": "Capital of Australia?"})
    answer = await answer_in(http, BEN, BEN)
    why = await press(http, BEN, BEN, answer, "👎")
    assert why["show_alert"] is False

    async def reasons() -> dict[str, Any] | None:
        messages = (await chat(http, BEN, BEN))["messages"]
        return next((m for m in messages if "❌ Wrong" in buttons(m)), None)

    await press(http, BEN, BEN, await eventually(reasons, "the reason buttons"), "❌ Wrong")

    async def card() -> dict[str, Any] | None:
        messages = (await chat(http, ANNA, MODERATORS_CHAT_ID))["messages"]
        return next((m for m in messages if "✅ Approve" in buttons(m)), None)

    review_card = await eventually(card, "the review card in the moderators' group", within=30)
    refusal = await press(http, ANNA, MODERATORS_CHAT_ID, review_card, "✅ Approve")
    assert refusal == {
        "callback_query_id": refusal["callback_query_id"],
        "text": "Only moderators can review answers.",
        "show_alert": True,
        "url": None,
    }
    # The moderator may.
    approved = await press(http, MIA, MODERATORS_CHAT_ID, review_card, "✅ Approve")
    assert approved["text"] != refusal["text"]


async def test_group_chat_and_files(http: aiohttp.ClientSession, pg: Playground) -> None:
    await post(http, "/api/send", {"as": BEN, "chat": TEAM_CHAT_ID, "text": "@loopgram_bot hi all"})
    answer = await answer_in(http, ANNA, TEAM_CHAT_ID)  # Anna sees the group too
    assert answer["reply_to_message"]["from"]["id"] == BEN
    assert answer["edit_count"] >= 1  # streamed by edits in groups

    form = aiohttp.FormData()
    form.add_field("as", str(ANNA))
    form.add_field("chat", str(ANNA))
    form.add_field("caption", "a picture")
    form.add_field("file", tiny_png(), filename="pic.png", content_type="image/png")
    async with http.post("/api/send", data=form) as response:
        assert response.status == 200, await response.text()
    messages = (await chat(http, ANNA, ANNA))["messages"]
    photo = messages[-1]["photo"][-1]
    async with http.get(f"/api/files/{photo['file_id']}") as response:
        assert response.content_type == "image/png"
    async with http.get("/api/files/nope") as response:
        assert response.status == 404

    # A broken PDF reaches the bot, which answers in words instead of failing silently.
    form = aiohttp.FormData()
    form.add_field("as", str(ANNA))
    form.add_field("chat", str(ANNA))
    form.add_field("file", b"%PDF-1.7 garbage", filename="broken.pdf")
    async with http.post("/api/send", data=form) as response:
        sent = (await response.json())["result"]["message_id"]

    async def replied() -> bool:
        messages = (await chat(http, ANNA, ANNA))["messages"]
        return any(
            m["from"]["is_bot"] and m["message_id"] > sent and m.get("text") for m in messages
        )

    await eventually(replied, "the bot's reply to a broken PDF")

    # The admin's /stats: text, then the chart as a photo the page can show.
    await post(http, "/api/send", {"as": ALEX, "chat": ALEX, "text": "/stats"})

    async def chart() -> dict[str, Any] | None:
        messages = (await chat(http, ALEX, ALEX))["messages"]
        return next((m for m in messages if m["from"]["is_bot"] and m.get("photo")), None)

    stats = await eventually(chart, "the /stats chart")
    async with http.get(f"/api/files/{stats['photo'][-1]['file_id']}") as response:
        assert response.content_type == "image/png"


BAD_MESSAGES: list[tuple[Any, int, str]] = [
    ({"as": ANNA, "chat": ANNA, "text": "   "}, 400, "empty-message"),
    ({"as": ANNA, "chat": ANNA, "text": "x" * 4097}, 400, "message-too-long"),
    ({"as": ANNA, "chat": ANNA, "text": "🙂" * 2049}, 400, "message-too-long"),
    ({"as": ANNA, "chat": ANNA, "text": "a\x00b"}, 400, "bad-text"),
    ({"as": ANNA, "chat": ANNA, "text": 5}, 400, "bad-request"),
    ({"as": 999, "chat": ANNA, "text": "hi"}, 400, "unknown-user"),
    ({"as": "x", "chat": ANNA, "text": "hi"}, 400, "bad-request"),
    ({"as": ANNA, "chat": BEN, "text": "hi"}, 403, "not-your-chat"),
    ({"as": ANNA, "chat": -5, "text": "hi"}, 404, "unknown-chat"),
    ({"as": ANNA, "chat": ANNA, "text": "hi", "reply_to": 9999}, 404, "unknown-message"),
    ([1, 2], 400, "bad-request"),
]


async def test_bad_messages_are_refused_with_a_key(http: aiohttp.ClientSession) -> None:
    for payload, status, error in BAD_MESSAGES:
        got, body = await post(http, "/api/send", payload)
        assert (got, body["ok"], body["error"]) == (status, False, error), payload
        assert body["description"]


async def test_bad_bodies_files_and_forged_buttons(
    http: aiohttp.ClientSession, pg: Playground
) -> None:
    async with http.post(
        "/api/send", data=b"{not json", headers={"Content-Type": "application/json"}
    ) as response:
        assert (response.status, (await response.json())["error"]) == (400, "bad-request")
    async with http.post(
        "/api/send",
        data=b'{"as": 101, "chat": 101, "text": "\\ud800"}',
        headers={"Content-Type": "application/json"},
    ) as response:
        assert (await response.json())["error"] == "bad-text"
    async with http.post("/api/send", data=b"text=hi") as response:
        assert response.status == 415

    def form(data: bytes, name: str = "a.txt") -> aiohttp.FormData:
        f = aiohttp.FormData()
        f.add_field("as", str(ANNA))
        f.add_field("chat", str(ANNA))
        f.add_field("file", data, filename=name)
        return f

    async with http.post("/api/send", data=form(b"")) as response:
        body = await response.json()
        assert (response.status, body["error"], body["params"]) == (
            400,
            "empty-file",
            {"name": "a.txt"},
        )
    pg.server.file_limit = 1000
    async with http.post("/api/send", data=form(b"x" * 1001)) as response:
        assert (response.status, (await response.json())["error"]) == (413, "file-too-large")
    async with http.post("/api/send", data=form(b"x" * 200_000)) as response:
        assert (response.status, (await response.json())["error"]) == (413, "file-too-large")

    await post(http, "/api/send", {"as": ANNA, "chat": ANNA, "text": "Plan my day"})
    answer = await answer_in(http, ANNA, ANNA)
    forged = {"as": ANNA, "chat": ANNA, "message_id": answer["message_id"], "data": "r:u:1:999"}
    status, body = await post(http, "/api/press", forged)
    assert (status, body["error"]) == (400, "forged-button")
    mine = [m for m in (await chat(http, ANNA, ANNA))["messages"] if not m["from"]["is_bot"]]
    status, body = await post(http, "/api/press", {**forged, "message_id": mine[0]["message_id"]})
    assert (status, body["error"]) == (404, "unknown-message")
    # Nothing forged reached the bot.
    assert not [a for a in pg.env.emulator.callback_answers if a["data"] == "r:u:1:999"]


async def test_other_hosts_and_sites_are_refused(
    http: aiohttp.ClientSession, pg: Playground
) -> None:
    async with http.get("/api/config", headers={"Host": "evil.example:80"}) as response:
        assert (response.status, (await response.json())["error"]) == (403, "bad-host")
    async with http.post(
        "/api/send",
        data=json.dumps({"as": ANNA, "chat": ANNA, "text": "hi"}),
        headers={"Content-Type": "application/json", "Origin": "http://evil.example"},
    ) as response:
        assert (response.status, (await response.json())["error"]) == (403, "bad-origin")


async def test_a_busy_port_is_a_clear_error(pg: Playground) -> None:
    port = int(pg.url.rsplit(":", 1)[1].strip("/"))
    other = PlaygroundServer(pg.env.emulator, pg.env.stack.db, default_cast("ru"), lang="ru")
    with pytest.raises(LoopgramError, match=rf"127\.0\.0\.1:{port} .*--port"):
        await other.start("127.0.0.1", port)


def test_the_command_refuses_an_unknown_language() -> None:
    result = CliRunner().invoke(app, ["playground", "--lang", "de"])
    assert result.exit_code == 2
    assert "Unknown language “de”: use ru or en." in result.output


def test_the_cast_speaks_the_chosen_language() -> None:
    cast = default_cast("ru")
    assert [i.name for i in cast.identities][:2] == ["Анна", "Борис"]
    assert {i.language for i in cast.identities} == {"ru"}
    assert cast.moderator_chat_id == MODERATORS_CHAT_ID


def test_the_command_says_at_once_when_the_port_is_busy(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            app, ["playground", "--port", str(port), "--data-dir", str(tmp_path / "pg")]
        )
    assert result.exit_code == 2
    assert f"Cannot serve the playground on 127.0.0.1:{port} (" in result.output


async def test_odd_numbers_and_bodies_are_a_4xx_not_a_crash(
    http: aiohttp.ClientSession, pg: Playground
) -> None:
    """Input the checks let through to int() or json.loads must still be refused as bad input
    (a 500 "internal" tells the page the playground broke)."""
    calls = len(pg.env.emulator.calls)
    for raw in ("--101", "²", "1_0_1"):
        got, body = await post(http, "/api/send", {"as": raw, "chat": ANNA, "text": "hi"})
        assert (got, body["error"]) == (400, "bad-request"), raw
        async with http.get(f"/api/chats/{ANNA}", params={"as": raw}) as response:
            assert (response.status, (await response.json())["error"]) == (400, "bad-request")
    async with http.post(
        "/api/send", data=b"[" * 100_000, headers={"Content-Type": "application/json"}
    ) as response:
        assert (response.status, (await response.json())["error"]) == (400, "bad-request")
    form = (  # a field that is not UTF-8
        b'--b\r\nContent-Disposition: form-data; name="as"\r\n\r\n\xff\xfe\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        b"hello\r\n--b--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    async with http.post("/api/send", data=form, headers=headers) as response:
        assert (response.status, (await response.json())["error"]) == (400, "bad-request")
    assert len(pg.env.emulator.calls) == calls  # nothing reached the bot
