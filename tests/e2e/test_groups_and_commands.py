"""Groups, assistants, history and /reset through the real bot."""

from __future__ import annotations

import asyncio

from sqlmodel import func, select

from bot.emulated import EmulatedBot, emulated_bot
from loopgram.models import Chat, Interaction
from tests.e2e.conftest import has_rating_buttons, rows, wait_db
from training.model_server.scripted import ScriptedBackend


async def test_group_answers_only_when_mentioned_or_replied_to(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu, db = running.emulator, running.stack.db
    group = emu.group(-100500, "Team")
    other = emu.group(-100501, "Other team")
    anna = emu.user(4001, "Anna", language_code="ru")
    await anna.send_text("просто болтаем между собой", chat=group)
    await anna.send_text("/help", chat=group)  # a command for another bot: not addressed
    await anna.send_text("@loopgram_bot что нового?", chat=group)
    answer = await emu.wait_for_bot_message(-100500, has_rating_buttons)
    assert scripted.requests[-1].messages[-1]["content"] == "что нового?"
    # A reply to the bot's answer is addressed to it, and the group keeps its own history.
    await anna.send_text("а подробнее?", chat=group, reply_to=answer)
    await emu.wait_for_bot_message(-100500, has_rating_buttons)
    contents = [m["content"] for m in scripted.requests[-1].messages]
    assert contents[1:] == ["что нового?", scripted.reply, "а подробнее?"]
    # Another group does not see this group's history.
    await anna.send_text("@loopgram_bot привет", chat=other)
    await emu.wait_for_bot_message(-100501, has_rating_buttons)
    assert [m["role"] for m in scripted.requests[-1].messages] == ["system", "user"]
    await asyncio.sleep(0.3)
    assert len(await db.run(rows(Interaction))) == 3
    # Group answers stream by editing one message (drafts are for private chats).
    assert emu.drafts(-100500) == []


async def test_allowed_chat_ids_limit_groups(bot_settings) -> None:  # type: ignore[no-untyped-def]
    async with emulated_bot(bot_settings(ALLOWED_CHAT_IDS="-100600"), with_model=False) as env:
        emu = env.emulator
        anna = emu.user(4002, "Anna", language_code="en")
        await anna.send_text("@loopgram_bot hi", chat=emu.group(-100601, "Not allowed"))
        await anna.send_text("@loopgram_bot hi", chat=emu.group(-100600, "Allowed"))
        await emu.wait_for_bot_message(-100600, has_rating_buttons)
        await asyncio.sleep(0.3)
        assert emu.bot_messages(-100601) == []
        # Private chats are not limited by the group allowlist.
        await anna.send_text("hi in private")
        await emu.wait_for_bot_message(4002, has_rating_buttons)


async def test_history_and_reset(running: EmulatedBot, scripted: ScriptedBackend) -> None:
    emu = running.emulator
    ben = emu.user(4003, "Ben", language_code="en")
    await ben.send_text("one")
    await emu.wait_for_bot_message(4003, has_rating_buttons)
    await ben.send_text("two")
    await emu.wait_for_bot_message(4003, has_rating_buttons)
    assert [m["content"] for m in scripted.requests[-1].messages][1:] == [
        "one",
        scripted.reply,
        "two",
    ]
    await ben.send_text("/reset")
    await emu.wait_for_bot_message(4003, lambda m: "forgot" in m.get("text", ""))
    await ben.send_text("three")
    await emu.wait_for_bot_message(4003, has_rating_buttons)
    assert [m["content"] for m in scripted.requests[-1].messages][1:] == ["three"]


async def test_pick_an_assistant(running: EmulatedBot, scripted: ScriptedBackend) -> None:
    emu, db = running.emulator, running.stack.db
    anna = emu.user(4004, "Anna", language_code="ru")
    await anna.send_text("/assistant")
    menu = await emu.wait_for_bot_message(4004, lambda m: "reply_markup" in m)
    await anna.press(menu, "✍️ Перефразирование")
    await emu.wait_for(lambda: len(emu.callback_answers) == 1)
    chat = await wait_db(db, lambda *, session: session.get(Chat, 4004))
    assert chat.assistant == "paraphrase"
    await anna.send_text("Кошка сидит на окне.")
    await emu.wait_for_bot_message(4004, has_rating_buttons)
    assert "перепиши текст пользователя по-русски" in scripted.requests[-1].messages[0]["content"]
    await anna.send_text("/summarize")
    reply = await emu.wait_for_bot_message(4004, lambda m: "Пересказ" in m.get("text", ""))
    assert reply
    count = await db.run(
        lambda *, session: session.exec(select(func.count()).select_from(Interaction)).one()
    )
    assert count == 1


async def test_help_and_start_in_english(running: EmulatedBot) -> None:
    emu = running.emulator
    ben = emu.user(4005, "Ben", language_code="en-GB")
    await ben.send_text("/start")
    assert "Hi, Ben" in (await emu.wait_for_bot_message(4005))["text"]
    await ben.send_text("/help")
    help_message = await emu.wait_for_bot_message(4005)
    assert "How it works" in help_message["text"]
    assert any(e["type"] == "bold" for e in help_message["entities"])
    assert {c["command"] for c in emu.my_commands()} >= {"start", "help", "assistant", "reset"}


async def test_plain_text_file_is_read_as_the_question(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu = running.emulator
    ben = emu.user(4006, "Ben", language_code="en")
    await ben.send_document(b"Line one.\nLine two.", "notes.txt", "text/plain", caption="Summarize")
    await emu.wait_for_bot_message(4006, has_rating_buttons)
    assert scripted.requests[-1].messages[-1]["content"] == "Summarize\n\nLine one.\nLine two."
    sent = await ben.send_document(b"%PDF-1.4 binary", "report.pdf", "application/pdf")
    reply = await emu.wait_for_bot_message(
        4006, lambda m: (m.get("reply_to_message") or {}).get("message_id") == sent["message_id"]
    )
    assert "looks damaged" in reply["text"]
    sent = await ben.send_document(b"\x89PNG\r\n", "photo.png", "image/png")
    reply = await emu.wait_for_bot_message(
        4006, lambda m: (m.get("reply_to_message") or {}).get("message_id") == sent["message_id"]
    )
    assert "can't read this file type" in reply["text"]
