"""/forget and /export_me as people use them, through the Bot API emulator."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlmodel import select

from bot.emulated import EmulatedBot
from loopgram.db import Database
from loopgram.models import AuditLog, Interaction, Rating, User
from tests.e2e.conftest import has_rating_buttons, wait_db

ANNA, BORIS = 4001, 4002
ANNA_QUESTION = "Anna's private question about her health"
BORIS_QUESTION = "Boris asks how to grow tomatoes"


def _buttons(message: dict[str, Any]) -> dict[str, str]:
    markup = message.get("reply_markup") or {}
    return {b["text"]: b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row}


async def _state(db: Database) -> dict[str, Any]:
    def read(*, session: Any) -> dict[str, Any]:
        return {
            "interactions": sorted(
                (i.user_id, i.prompt) for i in session.exec(select(Interaction)).all()
            ),
            "ratings": sorted(r.user_id for r in session.exec(select(Rating)).all()),
            "users": sorted(u.id for u in session.exec(select(User)).all()),
            "audit": [a.action for a in session.exec(select(AuditLog)).all()],
        }

    return await db.run(read)


async def _ask_and_rate(env: EmulatedBot, user_id: int, name: str, question: str) -> None:
    emu = env.emulator
    person = emu.user(user_id, name, language_code="en")
    await person.send_text(question)
    answer = await emu.wait_for_bot_message(user_id, has_rating_buttons)
    await person.press(answer, "👍")


async def _both_rated(env: EmulatedBot) -> None:
    await _ask_and_rate(env, ANNA, "Anna", ANNA_QUESTION)
    await _ask_and_rate(env, BORIS, "Boris", BORIS_QUESTION)

    def rated(*, session: Any) -> bool:
        return len(session.exec(select(Rating)).all()) == 2

    await wait_db(env.stack.db, rated)


async def test_forget_asks_then_deletes_only_that_persons_data(running: EmulatedBot) -> None:
    emu, db = running.emulator, running.stack.db
    await _both_rated(running)
    anna, boris = emu.user(ANNA, "Anna", language_code="en"), emu.user(BORIS, "Boris")
    before = await _state(db)
    assert before["ratings"] == [ANNA, BORIS]

    await anna.send_text("/forget")
    ask = await emu.wait_for_bot_message(ANNA, lambda m: "Delete everything" in m.get("text", ""))
    yes = _buttons(ask)["🗑 Yes, delete"]
    assert yes.startswith("fg:1:4001:")

    # Boris replays Anna's exact Yes data from his own chat; Anna sends a tampered signature.
    boris_message = emu.bot_messages(BORIS)[-1]
    await boris.press(boris_message, yes)
    await emu.wait_for(lambda: len(emu.callback_answers) == 3)  # two 👍 and this one
    assert emu.callback_answers[-1]["show_alert"] is True
    assert "not yours" in emu.callback_answers[-1]["text"]
    tampered = yes[:-4] + ("0000" if not yes.endswith("0000") else "1111")
    await anna.press(ask, tampered)
    await anna.press(ask, yes.replace(":1:", ":0:", 1).replace("4001", "4002", 1))
    await emu.wait_for(lambda: len(emu.callback_answers) == 5)
    assert all(a["show_alert"] for a in emu.callback_answers[3:])
    await asyncio.sleep(0.3)
    assert (await _state(db))["interactions"] == before["interactions"]
    assert (await _state(db))["ratings"] == [ANNA, BORIS]

    # No keeps everything.
    await anna.press(ask, "✖️ No, keep")
    await emu.wait_for_bot_message(ANNA, lambda m: "nothing was deleted" in m.get("text", ""))
    assert (await _state(db))["ratings"] == [ANNA, BORIS]

    # Yes on a fresh question deletes Anna's data, and only hers.
    await anna.send_text("/forget")
    ask = await emu.wait_for_bot_message(ANNA, lambda m: "Delete everything" in m.get("text", ""))
    await anna.press(ask, "🗑 Yes, delete")
    done = await emu.wait_for_bot_message(ANNA, lambda m: "Done: deleted" in m.get("text", ""))
    assert "1 answers and 1 ratings" in done["text"] and not _buttons(done)
    after = await _state(db)
    assert after["interactions"] == [(BORIS, BORIS_QUESTION)]
    assert after["ratings"] == [BORIS]
    assert ANNA not in after["users"] and BORIS in after["users"]
    assert after["audit"].count("privacy.forget") == 1


async def test_export_me_sends_the_persons_data_as_json(running: EmulatedBot) -> None:
    emu = running.emulator
    await _both_rated(running)
    anna = emu.user(ANNA, "Anna", language_code="en")

    await anna.send_text("/export_me")
    sent = await emu.wait_for_bot_message(ANNA, lambda m: "document" in m)
    assert sent["document"]["file_name"] == f"loopgram-my-data-{ANNA}.json"
    assert "1 answers, 1 ratings" in sent["caption"]
    raw = emu.file_bytes(sent["document"]["file_id"]).decode("utf-8")
    data = json.loads(raw)
    assert data["profile"]["id"] == ANNA and data["profile"]["first_name"] == "Anna"
    assert [i["prompt"] for i in data["interactions"]] == [ANNA_QUESTION]
    assert data["interactions"][0]["answer"] and data["interactions"][0]["created_at"]
    assert [(r["rating"], r["interaction_id"]) for r in data["ratings"]] == [
        (1, data["interactions"][0]["id"])
    ]
    assert BORIS_QUESTION not in raw and "Boris" not in raw

    # In a group the command is refused: the file would show Anna's data to everyone.
    group = emu.group(-100888, "Team")
    await anna.send_text("/export_me@loopgram_bot", chat=group)
    reply = await emu.wait_for_bot_message(-100888)
    assert "private chat" in reply["text"] and "document" not in reply


async def test_an_export_over_telegrams_limit_is_explained(
    running: EmulatedBot, monkeypatch: Any
) -> None:
    from bot.handlers import privacy as handler

    emu = running.emulator
    await _ask_and_rate(running, ANNA, "Anna", ANNA_QUESTION)
    monkeypatch.setattr(handler, "DOCUMENT_LIMIT", 10)
    await emu.user(ANNA, "Anna", language_code="en").send_text("/export_me")
    reply = await emu.wait_for_bot_message(ANNA, lambda m: "MB" in m.get("text", ""))
    assert "over Telegram's 0.0 MB limit" in reply["text"] and "document" not in reply


async def _forget(env: EmulatedBot, user_id: int) -> None:
    emu = env.emulator
    person = emu.user(user_id, "Anna", language_code="en")
    await person.send_text("/forget")
    ask = await emu.wait_for_bot_message(
        user_id, lambda m: "Delete everything" in m.get("text", "")
    )
    await person.press(ask, "🗑 Yes, delete")
    await emu.wait_for_bot_message(user_id, lambda m: "Done: deleted" in m.get("text", ""))


async def test_an_answer_still_streaming_during_forget_is_not_stored_after_it(
    running: EmulatedBot, scripted: Any
) -> None:
    emu, db = running.emulator, running.stack.db
    await _ask_and_rate(running, BORIS, "Boris", BORIS_QUESTION)
    scripted.token_delay = 0.15  # the answer takes ~2 s: /forget is confirmed meanwhile
    anna = emu.user(ANNA, "Anna", language_code="en")
    await anna.send_text(ANNA_QUESTION)
    await emu.wait_for(lambda: scripted.started == 2)

    await _forget(running, ANNA)
    # Anna still gets the answer she asked for, but nothing of it is kept: no buttons to rate
    # it, no row (the question was asked before the forget and must not outlive it).
    answer = await emu.wait_for_bot_message(ANNA, lambda m: "план недели" in m.get("text", ""))
    assert not _buttons(answer)
    await asyncio.sleep(0.3)
    after = await _state(db)
    assert after["interactions"] == [(BORIS, BORIS_QUESTION)]
    assert after["ratings"] == [BORIS]
