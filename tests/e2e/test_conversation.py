"""What a user sees and what lands in the database, through the real bot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bot.emulated import EmulatedBot
from loopgram.models import Interaction, PreferencePair, Rating, ReviewItem
from tests.e2e.conftest import REPLY, has_rating_buttons, rows, wait_db
from training.model_server.scripted import ScriptedBackend


async def test_message_streamed_answer_rating_export(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu, db = running.emulator, running.stack.db
    anna = emu.user(1001, "Anna", language_code="ru")

    await anna.send_text("/start")
    greeting = await emu.wait_for_bot_message(1001)
    assert "Привет, Anna" in greeting["text"]

    question = await anna.send_text("Как спланировать рабочую неделю?")
    answer = await emu.wait_for_bot_message(1001, has_rating_buttons)
    assert answer["text"] == "Ответ модели: план недели начинается с трёх главных задач."
    assert any(e["type"] == "bold" for e in answer.get("entities", []))
    assert answer["reply_to_message"]["message_id"] == question["message_id"]
    assert len(emu.drafts(1001)) >= 1, "the answer was not streamed"
    assert any(c.method == "sendChatAction" for c in emu.calls)
    # The model got the Russian system prompt and the question.
    request = scripted.requests[-1]
    assert request.messages[0]["role"] == "system" and "по-русски" in request.messages[0]["content"]
    assert request.messages[-1] == {"role": "user", "content": "Как спланировать рабочую неделю?"}

    (interaction,) = await wait_db(
        db,
        lambda *, session: [i for i in rows(Interaction)(session=session) if i.telegram_message_id],
    )
    assert interaction.answer == REPLY and interaction.telegram_message_id == answer["message_id"]

    await anna.press(answer, "👍")
    await emu.wait_for(lambda: len(emu.callback_answers) == 1)
    assert emu.callback_answers[0]["text"] == "Спасибо! 👍"
    (rating,) = await wait_db(db, rows(Rating))
    assert (rating.value, rating.user_id, rating.interaction_id) == (1, 1001, interaction.id)
    assert rating.pressed_at is not None  # stamped by the bot: an older press cannot undo it

    export = subprocess.run(
        [sys.executable, "-m", "loopgram.cli", "feedback", "export", "--format", "jsonl"],
        env={"DATABASE_URL": str(db.engine.url), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    )
    (line,) = export.stdout.splitlines()
    exported = json.loads(line)
    assert exported["rating"] == 1 and exported["answer"] == REPLY and exported["user_id"] == 1001


async def test_thumbs_down_reason_comment_and_review_flag(running: EmulatedBot) -> None:
    emu, db = running.emulator, running.stack.db
    ben = emu.user(2002, "Ben", language_code="en")
    await ben.send_text("How do I write a summary?")
    answer = await emu.wait_for_bot_message(2002, has_rating_buttons)

    await ben.press(answer, "👎")
    await emu.wait_for(lambda: len(emu.callback_answers) == 1)
    assert "What was wrong" in emu.callback_answers[0]["text"]
    reasons = await emu.wait_for_bot_message(
        2002, lambda m: "Unhelpful" in json.dumps(m.get("reply_markup"), ensure_ascii=False)
    )
    await ben.press(reasons, "🤷 Unhelpful")
    await emu.wait_for_bot_message(2002, lambda m: "/skip" in m.get("text", ""))
    await ben.send_text("It should list the key points first.")
    await emu.wait_for_bot_message(2002, lambda m: "comment is saved" in m.get("text", ""))

    def complete(*, session):  # type: ignore[no-untyped-def]
        found = session.exec(__import__("sqlmodel").select(Rating)).first()
        return found if found is not None and found.comment else None

    rating = await wait_db(db, complete)
    assert (rating.value, rating.reason, rating.comment) == (
        -1,
        "unhelpful",
        "It should list the key points first.",
    )
    (item,) = await wait_db(db, rows(ReviewItem))
    assert (item.reason, item.status) == ("thumbs_down", "pending")
    # The comment was not answered as a new question.
    assert len(await db.run(rows(Interaction))) == 1


async def test_regenerate_then_choice_records_a_pair(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu, db = running.emulator, running.stack.db
    ben = emu.user(2003, "Ben", language_code="en")
    await ben.send_text("Name a colour")
    first = await emu.wait_for_bot_message(2003, has_rating_buttons)
    scripted.reply = "Blue, the colour of the sky."
    await ben.press(first, "🔄")
    second = await emu.wait_for_bot_message(
        2003, lambda m: has_rating_buttons(m) and m["message_id"] != first["message_id"]
    )
    assert second["text"] == "Blue, the colour of the sky."
    await ben.press(second, "👍")
    (pair,) = await wait_db(db, rows(PreferencePair))
    assert pair.chosen == "Blue, the colour of the sky." and pair.rejected == REPLY
    assert pair.source == "regenerate"
    interactions = await db.run(rows(Interaction))
    assert interactions[1].parent_interaction_id == interactions[0].id


async def test_a_press_answered_too_late_is_still_stored(
    running: EmulatedBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an outage the bot may answer a press past Telegram's window ("query is too
    old"): the rating must be stored all the same."""
    from loopgram.emulator.methods import callbacks

    emu, db = running.emulator, running.stack.db
    carl = emu.user(1003, "Carl", language_code="en")
    await carl.send_text("How do I plan my week?")
    answer = await emu.wait_for_bot_message(1003, has_rating_buttons)
    monkeypatch.setattr(callbacks, "ANSWER_WINDOW", -1)  # every answer is too late now
    await carl.press(answer, "👎")
    (rating,) = await wait_db(db, rows(Rating))
    assert (rating.value, rating.user_id) == (-1, 1003)
    assert emu.callback_answers == []
    await emu.wait_for_bot_message(1003, lambda m: "Unhelpful" in str(m.get("reply_markup")))
