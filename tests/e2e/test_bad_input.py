"""Bad input of every kind gets a clear answer and changes nothing it should not."""

from __future__ import annotations

import asyncio

from sqlmodel import func, select

from bot.emulated import EmulatedBot, emulated_bot
from loopgram.models import Interaction, InteractionStatus, Rating
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
