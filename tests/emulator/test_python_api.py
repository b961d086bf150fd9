"""The Python driving API: users, media shapes, updates, waiting helpers."""

from __future__ import annotations

import pytest
from aiogram import Bot
from aiogram.types import Message, Update

from loopgram.emulator import BotApiEmulator, EmulatedChat, EmulatedUser
from loopgram.emulator.updates import time_based_first_id


def updates(emu: BotApiEmulator) -> list[Update]:
    """Pending updates parsed by aiogram's models: the emulator's shapes must validate."""
    return [Update.model_validate(u) for u in emu.pending_updates]


async def test_group_message_with_mention_and_reply(emu: BotApiEmulator, bot: Bot) -> None:
    anna = emu.user(1001, "Anna", language_code="ru", username="anna")
    group = emu.group(-100123, title="Team")
    assert isinstance(anna, EmulatedUser) and isinstance(group, EmulatedChat)
    await anna.send_text("hello", chat=group)
    bot_message = await bot.send_message(group.id, "Ask me")
    sent = await anna.send_text(
        "@loopgram_bot привет /help", chat=group, reply_to=bot_message.message_id
    )
    assert sent["chat"] == {"id": -100123, "title": "Team", "type": "supergroup"}
    assert sent["from"]["language_code"] == "ru"
    assert sent["entities"] == [
        {"type": "mention", "offset": 0, "length": 13},
        {"type": "bot_command", "offset": 21, "length": 5},
    ]
    assert sent["reply_to_message"]["text"] == "Ask me"
    assert [m["message_id"] for m in emu.chat_messages(group.id)] == [1, 2, 3]
    parsed = updates(emu)[-1].message
    assert parsed is not None and parsed.reply_to_message is not None


async def test_media_shapes_validate_as_aiogram_types(emu: BotApiEmulator, bot: Bot) -> None:
    anna = emu.user(1001, "Anna")
    await anna.send_sticker("🎉")
    photo = await anna.send_photo(caption="look #cats")
    await anna.send_voice(duration=7)
    await anna.send_document(b"a,b\n1,2\n", "data.csv")
    messages = [u.message for u in updates(emu)]
    assert all(isinstance(m, Message) for m in messages)
    sticker, picture, voice, document = messages
    assert sticker is not None and sticker.sticker is not None
    assert sticker.sticker.emoji == "🎉"
    assert picture is not None and picture.photo is not None and picture.caption == "look #cats"
    assert photo["caption_entities"] == [{"type": "hashtag", "offset": 5, "length": 5}]
    assert voice is not None and voice.voice is not None and voice.voice.duration == 7
    assert document is not None and document.document is not None
    assert (document.document.file_name, document.document.mime_type) == ("data.csv", "text/csv")
    file = await bot.get_file(picture.photo[-1].file_id)
    assert file.file_path is not None
    assert emu.file_bytes(picture.photo[-1].file_id).startswith(b"\x89PNG")


async def test_edit_press_react_and_raw_updates(emu: BotApiEmulator, bot: Bot) -> None:
    anna = emu.user(1001, "Anna")
    sent = await anna.send_text("typo")
    edited = await anna.edit_text(sent["message_id"], "fixed")
    assert edited["text"] == "fixed" and "edit_date" in edited
    assert emu.chat_messages(1001)[0]["edits"][0]["text"] == "typo"
    with pytest.raises(ValueError, match="has no message"):
        await anna.edit_text(99, "x")

    question = await bot.send_message(
        1001,
        "Rate",
        reply_markup={
            "inline_keyboard": [
                [
                    {"text": "Good", "callback_data": "g"},
                    {"text": "Site", "url": "https://example.com"},
                ]
            ]
        },
    )
    query_id = await anna.press(question.message_id, "g")
    with pytest.raises(ValueError, match="has no callback_data"):
        await anna.press(question.message_id, "Site")
    await anna.react(question.message_id, "👍")
    raw_id = emu.push_update(
        {
            "message": {
                "message_id": 50,
                "date": 1,
                "text": "raw",
                "chat": {"id": 1001, "type": "private"},
                "from": {"id": 1001, "is_bot": False, "first_name": "Anna"},
            }
        }
    )
    kinds = [u.event_type for u in updates(emu)]
    assert kinds == ["message", "edited_message", "callback_query", "message_reaction", "message"]
    assert emu.pending_updates[2]["callback_query"]["id"] == query_id
    assert raw_id == emu.pending_updates[-1]["update_id"] == 5
    assert emu.chat_messages(1001)[-1]["text"] == "raw"


async def test_update_ids_start_from_time_and_increase() -> None:
    first = time_based_first_id(now=1_800_000_000.0)
    assert first < 2**31 and time_based_first_id(now=1_800_000_001.0) == first + 10
    emu = BotApiEmulator()
    user = emu.user(1, "A")
    await user.send_text("a")
    await user.send_text("b")
    ids = [u["update_id"] for u in emu.pending_updates]
    assert ids[1] == ids[0] + 1 and ids[0] >= time_based_first_id() - 10


async def test_wait_for_bot_message_skips_consumed_and_sees_edits(
    emu: BotApiEmulator, bot: Bot
) -> None:
    await emu.user(1001, "Anna").send_text("hi")
    first = await bot.send_message(1001, "one")
    await bot.send_message(1001, "two")
    await bot.edit_message_text("one!", chat_id=1001, message_id=first.message_id)
    assert (await emu.wait_for_bot_message(1001))["text"] == "one"
    assert (await emu.wait_for_bot_message(1001))["text"] == "two"
    edit = await emu.wait_for_bot_message(1001, lambda m: "edit_date" in m)
    assert edit["text"] == "one!"
    with pytest.raises(TimeoutError, match=r"bot messages there: \['one!', 'two'\]"):
        await emu.wait_for_bot_message(1001, timeout=0.05)


async def test_wait_for_timeout_explains_what_happened(emu: BotApiEmulator, bot: Bot) -> None:
    await emu.user(1001, "Anna").send_text("hi")
    with pytest.raises(Exception, match="can't parse entities"):
        await bot.send_message(1001, "<b>", parse_mode="HTML")

    def bot_replied() -> bool:
        return bool(emu.bot_messages(1001))

    with pytest.raises(TimeoutError) as caught:
        await emu.wait_for(bot_replied, timeout=0.05)
    assert "bot_replied" in str(caught.value)
    assert "sendMessage -> 400 Bad Request: can't parse entities" in str(caught.value)


async def test_privacy_mode_hides_chatter_from_non_admin_bot() -> None:
    emu = BotApiEmulator(privacy_mode=True, first_update_id=1)
    anna = emu.user(1001, "Anna")
    group = emu.group(-100123, title="Team")
    await anna.send_text("just chatting", chat=group)
    await anna.send_text("@loopgram_bot are you there?", chat=group)
    await anna.send_text("/help@other_bot", chat=group)
    await anna.send_text("/help@loopgram_bot", chat=group)
    await anna.send_text("/start", chat=group)
    assert [u["message"]["text"] for u in emu.pending_updates] == ["/help@loopgram_bot", "/start"]
    assert len(emu.chat_messages(group.id)) == 5
    assert emu.bot_user["can_read_all_group_messages"] is False


async def test_blocked_user(emu: BotApiEmulator, bot: Bot) -> None:
    anna = emu.user(1001, "Anna")
    await anna.send_text("hi")
    anna.block()
    with pytest.raises(Exception, match="Forbidden: bot was blocked by the user"):
        await bot.send_message(1001, "x")
    anna.unblock()
    assert (await bot.send_message(1001, "x")).text == "x"
