"""Bad input of every kind gets a clear answer and changes nothing it should not."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlmodel import func, select

from bot.emulated import EmulatedBot, emulated_bot
from loopgram.models import Interaction, InteractionStatus, Rating, ReviewItem
from tests.e2e.conftest import has_rating_buttons, rows, wait_db
from training.model_server.scripted import ScriptedBackend


def _count(model):  # type: ignore[no-untyped-def]
    return lambda *, session: session.exec(select(func.count()).select_from(model)).one()


def _reply_to(message):  # type: ignore[no-untyped-def]
    return lambda m: (m.get("reply_to_message") or {}).get("message_id") == message["message_id"]


async def test_stickers_photos_voice_get_a_polite_answer_in_the_users_language(
    running: EmulatedBot,
) -> None:
    emu = running.emulator
    anna = emu.user(3001, "Anna", language_code="ru")
    ben = emu.user(3002, "Ben", language_code="en")
    for send in (anna.send_sticker, anna.send_photo, anna.send_voice):
        sent = await send()
        reply = await emu.wait_for_bot_message(3001, _reply_to(sent))
        assert "понимаю только текст" in reply["text"]
    sent = await ben.send_voice()
    reply = await emu.wait_for_bot_message(3002, _reply_to(sent))
    assert "I only understand text" in reply["text"]
    assert await running.stack.db.run(_count(Interaction)) == 0


async def test_unknown_command_and_too_long_message(running: EmulatedBot) -> None:
    emu = running.emulator
    ben = emu.user(3003, "Ben", language_code="en")
    sent = await ben.send_text("/frobnicate")
    assert (
        "don't know that command" in (await emu.wait_for_bot_message(3003, _reply_to(sent)))["text"]
    )
    # Telegram itself caps messages at 4096 characters; a forged 10,000-character one is refused.
    long_update = await ben.send_text("слово " * 1700)
    reply = await emu.wait_for_bot_message(3003, lambda m: "too long" in m.get("text", ""))
    assert "10,199 characters" in reply["text"]  # stripped of the trailing space
    assert long_update["message_id"]
    assert await running.stack.db.run(_count(Interaction)) == 0


async def test_press_by_another_user_and_forged_data_change_nothing(running: EmulatedBot) -> None:
    emu, db = running.emulator, running.stack.db
    owner = emu.user(3004, "Owner", language_code="en")
    intruder = emu.user(3005, "Intruder", language_code="en")
    group = emu.group(-100777, "Team")
    await owner.send_text("@loopgram_bot hello", chat=group)
    answer = await emu.wait_for_bot_message(-100777, has_rating_buttons)

    await intruder.press(answer, "👍", chat=group)
    await emu.wait_for(lambda: len(emu.callback_answers) == 1)
    assert emu.callback_answers[-1]["show_alert"] is True
    assert "Only the person who asked" in emu.callback_answers[-1]["text"]

    for forged in ("r:u:999999", "r:x:1", "rr:1:drop table", "garbage", "as:nonexistent"):
        await owner.press(answer, forged, chat=group)
    await emu.wait_for(lambda: len(emu.callback_answers) == 6)
    assert all(a.get("show_alert") for a in emu.callback_answers[1:])
    await asyncio.sleep(0.3)
    assert await db.run(_count(Rating)) == 0


async def test_duplicate_update_is_processed_once(running: EmulatedBot) -> None:
    emu, db = running.emulator, running.stack.db
    ben = emu.user(3006, "Ben", language_code="en")
    await ben.send_text("first question")
    await emu.wait_for_bot_message(3006, has_rating_buttons)
    update = {
        "update_id": 10**9,
        "message": {
            "message_id": 500,
            "date": 1_700_000_000,
            "chat": {"id": 3006, "type": "private", "first_name": "Ben"},
            "from": {"id": 3006, "is_bot": False, "first_name": "Ben", "language_code": "en"},
            "text": "duplicated question",
        },
    }
    emu.push_update(update)
    emu.push_update(update)
    await emu.wait_for_bot_message(3006, has_rating_buttons)
    await asyncio.sleep(0.5)
    prompts = [i.prompt for i in await db.run(rows(Interaction))]
    assert prompts.count("duplicated question") == 1


async def test_model_down_apologises_keeps_the_question_and_retry_works(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu, db = running.emulator, running.stack.db
    anna = emu.user(3007, "Anna", language_code="ru")
    scripted.fail = RuntimeError("GPU on fire")
    await anna.send_text("Вопрос, пока модель лежит")
    apology = await emu.wait_for_bot_message(3007, lambda m: "недоступна" in m.get("text", ""))
    (failed,) = await db.run(rows(Interaction))
    assert (
        failed.status == InteractionStatus.failed and failed.prompt == "Вопрос, пока модель лежит"
    )

    scripted.fail = None
    await anna.press(apology, "🔁 Повторить")
    answer = await emu.wait_for_bot_message(3007, has_rating_buttons)
    assert answer["text"].startswith("Ответ модели")
    statuses = [i.status for i in await db.run(rows(Interaction))]
    assert statuses == [InteractionStatus.failed, InteractionStatus.ok]


async def test_model_server_unreachable(bot_settings) -> None:  # type: ignore[no-untyped-def]
    settings = bot_settings(LLM_BASE_URL="http://127.0.0.1:9/v1")  # nothing listens on port 9
    async with emulated_bot(settings, with_model=False) as env:
        ben = env.emulator.user(3008, "Ben", language_code="en")
        await ben.send_text("hello?")
        reply = await env.emulator.wait_for_bot_message(
            3008, lambda m: "not available" in m.get("text", "")
        )
        assert "Try again" in str(reply["reply_markup"])


async def test_model_too_slow(bot_settings, scripted: ScriptedBackend) -> None:  # type: ignore[no-untyped-def]
    scripted.first_token_delay = 3
    async with emulated_bot(bot_settings(LLM_FIRST_TOKEN_TIMEOUT="0.5"), with_model=False) as env:
        ben = env.emulator.user(3009, "Ben", language_code="en")
        await ben.send_text("are you there?")
        await env.emulator.wait_for_bot_message(3009, lambda m: "too long" in m.get("text", ""))


async def test_long_answer_is_split_into_valid_messages(
    bot_settings,
    scripted: ScriptedBackend,  # type: ignore[no-untyped-def]
) -> None:
    paragraph = "Это **длинный** абзац ответа с `кодом` и <угловыми> скобками & амперсандом. "
    scripted.reply = "\n\n".join([paragraph * 10] * 12)  # ~9,600 characters
    scripted.token_delay = 0.0
    async with emulated_bot(bot_settings(LLM_MAX_TOKENS="4000"), with_model=False) as env:
        emu = env.emulator
        ben = emu.user(3010, "Ben", language_code="ru")
        await ben.send_text("напиши длинный ответ")
        last = await emu.wait_for_bot_message(3010, has_rating_buttons, timeout=20)
        bot_messages = emu.bot_messages(3010)
        assert len(bot_messages) == 3
        assert all(len(m["text"]) <= 4096 for m in bot_messages)
        assert "<угловыми>" in bot_messages[0]["text"] and "**" not in bot_messages[0]["text"]
        assert bot_messages[-1]["message_id"] == last["message_id"]
        assert all(not m.get("reply_markup") for m in bot_messages[:-1])
        failed = [
            c for c in emu.calls if not c.ok and c.method in ("sendMessage", "editMessageText")
        ]
        assert failed == []

        def attached(*, session):  # type: ignore[no-untyped-def]
            return [i for i in rows(Interaction)(session=session) if i.telegram_message_id]

        (interaction,) = await wait_db(env.stack.db, attached)
        assert interaction.telegram_message_ids == [m["message_id"] for m in bot_messages]


async def test_ids_beyond_64_bits_in_callback_data_are_invalid_buttons(
    bot_settings,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No row can have such an id, and SQLite refuses to even look one up (OverflowError):
    the press is an invalid button, answered in the presser's language, not an error."""
    huge = 10**20
    forged = (
        f"r:u:{huge}",
        f"r:g:{huge}",
        f"rr:{huge}:wrong",
        f"o:{huge}:style:formal",
        f"mc:{huge}",
        f"src:{huge}",
        f"rv:{huge}:a",  # pressed by a moderator: the role check passes, the id is looked up
        f"rv:{huge}:c",
    )
    async with emulated_bot(bot_settings(MODERATOR_IDS="3011"), with_model=False) as env:
        emu, db = env.emulator, env.stack.db
        mod = emu.user(3011, "Mona", language_code="ru")
        await mod.send_text("вопрос")
        answer = await emu.wait_for_bot_message(3011, has_rating_buttons)
        with caplog.at_level(logging.ERROR):
            for n, data in enumerate(forged, start=1):
                await mod.press(answer, data)
                await emu.wait_for(lambda n=n: len(emu.callback_answers) == n)  # type: ignore[misc]
        assert [a["text"] for a in emu.callback_answers] == ["Эта кнопка больше не действует."] * 8
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        assert await db.run(_count(Rating)) == 0
        assert await db.run(_count(Interaction)) == 1


async def test_report_and_reaction_on_any_part_of_a_long_answer_count_for_it(
    bot_settings,  # type: ignore[no-untyped-def]
    scripted: ScriptedBackend,
) -> None:
    """A long answer is several messages with the buttons on the last; people reply with
    /report to, or react on, whichever part they were reading."""
    scripted.reply = "\n\n".join(["Абзац длинного ответа. " * 40] * 12)
    scripted.token_delay = 0.0
    async with emulated_bot(bot_settings(LLM_MAX_TOKENS="4000"), with_model=False) as env:
        emu, db = env.emulator, env.stack.db
        ben = emu.user(3012, "Ben", language_code="en")
        await ben.send_text("a long answer, please")
        await emu.wait_for_bot_message(3012, has_rating_buttons, timeout=20)

        def attached(*, session):  # type: ignore[no-untyped-def]
            return [i for i in rows(Interaction)(session=session) if i.telegram_message_id]

        (interaction,) = await wait_db(db, attached)
        first, *_ = emu.bot_messages(3012)
        assert len(interaction.telegram_message_ids) > 1
        assert first["message_id"] != interaction.telegram_message_id

        sent = await ben.send_text("/report the middle is wrong", reply_to=first)
        reply = await emu.wait_for_bot_message(3012, _reply_to(sent))
        assert "moderators will look" in reply["text"]
        (item,) = await wait_db(db, rows(ReviewItem))
        assert item.interaction_id == interaction.id

        await ben.react(first, "👎")
        (rating,) = await wait_db(db, rows(Rating))
        assert (rating.interaction_id, rating.value) == (interaction.id, -1)


async def test_a_comment_in_a_group_is_stored_without_the_bots_mention(
    running: EmulatedBot,
) -> None:
    """In a group the comment after 👎 must mention the bot to reach it; the mention is not
    part of the comment, and a mention alone is no comment."""
    emu, db = running.emulator, running.stack.db
    group = emu.group(-100778, "Team")
    ben = emu.user(3013, "Ben", language_code="en")
    await ben.send_text("@loopgram_bot hello", chat=group)
    answer = await emu.wait_for_bot_message(-100778, has_rating_buttons)
    await ben.press(answer, "👎", chat=group)
    reasons = await emu.wait_for_bot_message(-100778, lambda m: "Wrong" in str(m))
    await ben.press(reasons, "❌ Wrong", chat=group)
    await emu.wait_for_bot_message(-100778, lambda m: "describe" in m.get("text", ""))

    sent = await ben.send_text("@loopgram_bot", chat=group)
    reply = await emu.wait_for_bot_message(-100778, _reply_to(sent))
    assert "empty" in reply["text"]
    await ben.send_text("@loopgram_bot it should name three rivers", chat=group)
    await emu.wait_for_bot_message(-100778, lambda m: "comment is saved" in m.get("text", ""))
    await running.stack.runtime.feedback_sink.flush()

    def commented(*, session):  # type: ignore[no-untyped-def]
        return [r for r in rows(Rating)(session=session) if r.comment]

    (rating,) = await wait_db(db, commented)
    assert rating.comment == "it should name three rivers"


async def test_a_message_without_a_sender_is_dropped_without_an_error(
    running: EmulatedBot, caplog: pytest.LogCaptureFixture
) -> None:
    """Outside channels Telegram always names a message's sender (a stand-in user for an
    anonymous admin); an update with none is forged and nothing could be attributed to it."""
    emu, db = running.emulator, running.stack.db
    group = emu.group(-100779, "Team")
    ben = emu.user(3014, "Ben", language_code="en")
    chat = {"id": -100779, "type": "supergroup", "title": "Team"}
    mention = [{"type": "mention", "offset": 0, "length": 13}]
    with caplog.at_level(logging.ERROR):
        for message_id, content in enumerate(
            (
                {"text": "@loopgram_bot who am I?", "entities": mention},
                {"text": "/reset@loopgram_bot"},
                {
                    "document": {"file_id": "f1", "file_unique_id": "u1", "file_name": "a.txt"},
                    "caption": "@loopgram_bot",
                    "caption_entities": mention,
                },
            ),
            start=900,
        ):
            emu.push_update(
                {
                    "message": {
                        "message_id": message_id,
                        "date": 1_700_000_000,
                        "chat": chat,
                        "sender_chat": {"id": -100999, "type": "channel", "title": "News"},
                        **content,
                    }
                }
            )
        await ben.send_text("@loopgram_bot and me?", chat=group)  # handled after the three
        await emu.wait_for_bot_message(-100779, has_rating_buttons)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert len(emu.bot_messages(-100779)) == 1
    assert [i.prompt for i in await db.run(rows(Interaction))] == ["and me?"]


async def test_a_question_deleted_before_the_answer_still_gets_it(
    running: EmulatedBot, caplog: pytest.LogCaptureFixture
) -> None:
    """People delete a message right after sending it; Telegram refuses a reply to a message
    that is gone unless the bot allows sending without it."""
    emu = running.emulator
    ben = emu.user(3014, "Ben", language_code="en")
    with caplog.at_level(logging.ERROR):
        for text, arrived in (
            ("/nosuchcommand", lambda m: "don't know" in m.get("text", "")),
            ("what is a paraphrase?", has_rating_buttons),
        ):
            ben.delete(await ben.send_text(text))  # before the bot can see it
            answer = await emu.wait_for_bot_message(3014, arrived)
            assert "reply_to_message" not in answer
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    (interaction,) = await running.stack.db.run(rows(Interaction))
    assert interaction.status == InteractionStatus.ok
