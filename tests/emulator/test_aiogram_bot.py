"""A real aiogram Bot and Dispatcher against the emulator, over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest
from aiogram import Bot, Dispatcher, F
from aiogram.exceptions import TelegramBadRequest, TelegramNotFound, TelegramRetryAfter
from aiogram.filters import CommandStart
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from loopgram.emulator import BotApiEmulator

Polling = Callable[[Dispatcher], AbstractAsyncContextManager[None]]

KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[
        [
            InlineKeyboardButton(text="👍 Good", callback_data="rate:good"),
            InlineKeyboardButton(text="Docs", url="https://example.com/docs"),
        ]
    ]
)


def start_dispatcher() -> Dispatcher:
    dp = Dispatcher()

    @dp.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer(
            "<b>Привет</b>, 😀 <i>мир</i>!", parse_mode="HTML", reply_markup=KEYBOARD
        )

    @dp.callback_query(F.data == "rate:good")
    async def rated(query: CallbackQuery) -> None:
        await query.answer("Thanks!", show_alert=True)

    return dp


async def test_start_reaches_handler_and_reply_is_stored(
    emu: BotApiEmulator, polling: Polling
) -> None:
    anna = emu.user(1001, "Anna", language_code="ru", username="anna")
    async with polling(start_dispatcher()):
        sent = await anna.send_text("/start")
        assert sent["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
        reply = await emu.wait_for_bot_message(1001)
    assert reply["text"] == "Привет, 😀 мир!"
    assert reply["entities"] == [
        {"type": "bold", "offset": 0, "length": 6},
        {"type": "italic", "offset": 11, "length": 3},
    ]
    assert reply["from"]["username"] == "loopgram_bot"
    assert reply["chat"] == {
        "id": 1001,
        "username": "anna",
        "first_name": "Anna",
        "type": "private",
    }
    assert reply["reply_markup"]["inline_keyboard"][0] == [
        {"text": "👍 Good", "callback_data": "rate:good"},
        {"text": "Docs", "url": "https://example.com/docs"},
    ]
    history = emu.chat_messages(1001)
    assert [m["message_id"] for m in history] == [1, 2]
    assert [m["from"]["is_bot"] for m in history] == [False, True]
    assert emu.bot_messages(1001) == [history[1]]


async def test_callback_press_is_answered_once(
    emu: BotApiEmulator, bot: Bot, polling: Polling
) -> None:
    anna = emu.user(1001, "Anna")
    async with polling(start_dispatcher()):
        await anna.send_text("/start")
        reply = await emu.wait_for_bot_message(1001)
        query_id = await anna.press(reply, "👍 Good")
        await emu.wait_for(lambda: len(emu.callback_answers) == 1)
    answer = emu.callback_answers[0]
    assert answer["callback_query_id"] == query_id
    assert (answer["text"], answer["show_alert"], answer["data"]) == ("Thanks!", True, "rate:good")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query_id, text="again")


async def test_forged_callback_data_and_unknown_query(emu: BotApiEmulator, bot: Bot) -> None:
    anna = emu.user(1001, "Anna")
    await anna.send_text("hi")
    sent = await bot.send_message(1001, "pick", reply_markup=KEYBOARD)
    query_id = await anna.press(sent.message_id, "rate:evil")  # data no button carries
    assert emu.pending_updates[-1]["callback_query"]["data"] == "rate:evil"
    emu.advance_time(16 * 60)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query_id)
    with pytest.raises(TelegramBadRequest, match="query ID is invalid"):
        await bot.answer_callback_query("42")


async def test_invalid_html_is_refused(emu: BotApiEmulator, bot: Bot) -> None:
    await emu.user(1001, "Anna").send_text("hi")
    with pytest.raises(TelegramBadRequest) as caught:
        await bot.send_message(1001, "<b>unclosed", parse_mode="HTML")
    assert "can't parse entities" in caught.value.message
    assert caught.value.message == (
        "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\""
    )
    assert emu.bot_messages(1001) == []
    assert not emu.calls[-1].ok


async def test_edit_not_modified_and_history(emu: BotApiEmulator, bot: Bot) -> None:
    await emu.user(1001, "Anna").send_text("hi")
    sent = await bot.send_message(1001, "v1", reply_markup=KEYBOARD)
    edited = await bot.edit_message_text(
        "v2", chat_id=1001, message_id=sent.message_id, reply_markup=KEYBOARD
    )
    assert isinstance(edited, Message)
    assert edited.text == "v2" and edited.edit_date is not None
    with pytest.raises(TelegramBadRequest, match="message is not modified: specified new message"):
        await bot.edit_message_text(
            "v2", chat_id=1001, message_id=sent.message_id, reply_markup=KEYBOARD
        )
    # Like Telegram, editing the text without reply_markup removes the keyboard.
    await bot.edit_message_text("v2", chat_id=1001, message_id=sent.message_id)
    stored = emu.bot_messages(1001)[0]
    assert "reply_markup" not in stored
    assert [e["text"] for e in stored["edits"]] == ["v1", "v2"]
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=1001, message_id=999)
    with pytest.raises(TelegramBadRequest, match="message can't be edited"):
        await bot.edit_message_text("x", chat_id=1001, message_id=1)  # the user's message


async def test_drafts_are_recorded(emu: BotApiEmulator, bot: Bot) -> None:
    await emu.user(1001, "Anna").send_text("hi")
    group = emu.group(-100123, title="Team")
    for text in ("Thi", "Thinking <b>hard</b>"):
        assert (
            await bot.send_message_draft(chat_id=1001, draft_id=7, text=text, parse_mode="HTML")
            is True
        )
    [draft] = emu.drafts(1001)
    assert (draft["draft_id"], draft["text"], draft["active"]) == (7, "Thinking hard", True)
    assert draft["entities"] == [{"type": "bold", "offset": 9, "length": 4}]
    assert [h["text"] for h in draft["history"]] == ["Thi", "Thinking hard"]
    await bot.send_message(1001, "Thinking hard: done")
    assert emu.drafts(1001)[0]["active"] is False
    with pytest.raises(TelegramBadRequest, match="TEXTDRAFT_PEER_INVALID"):
        await bot.send_message_draft(chat_id=group.id, draft_id=1, text="x")
    with pytest.raises(TelegramBadRequest, match="draft_id"):
        await bot.send_message_draft(chat_id=1001, draft_id=0, text="x")


async def test_drafts_unsupported_answer_404(bot_for: Callable[[BotApiEmulator], Bot]) -> None:
    async with BotApiEmulator(drafts_supported=False) as emu:
        await emu.user(1001, "Anna").send_text("hi")
        with pytest.raises(TelegramNotFound, match="Not Found: method not found"):
            await bot_for(emu).send_message_draft(chat_id=1001, draft_id=1, text="x")
    assert emu.drafts(1001) == []


async def test_text_length_limits(emu: BotApiEmulator, bot: Bot) -> None:
    await emu.user(1001, "Anna").send_text("hi")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(1001, "a" * 4097)
    assert (await bot.send_message(1001, "a" * 4096)).text == "a" * 4096
    # 2048 emoji are 4096 UTF-16 units: the limit is counted in UTF-16.
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(1001, "😀" * 2049)
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(1001, "<b> </b>", parse_mode="HTML")


async def test_fail_next_retry_after(emu: BotApiEmulator, bot: Bot) -> None:
    await emu.user(1001, "Anna").send_text("hi")
    emu.fail_next("sendmessage", 429, "Too Many Requests: retry after 7", retry_after=7)
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(1001, "x")
    assert caught.value.retry_after == 7
    assert (await bot.send_message(1001, "x")).text == "x"
    assert [c.ok for c in emu.calls if c.method == "sendMessage"] == [False, True]


async def test_keyboard_and_chat_validation(emu: BotApiEmulator, bot: Bot) -> None:
    await emu.user(1001, "Anna").send_text("hi")
    too_long = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="x", callback_data="d" * 65)]]
    )
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(1001, "x", reply_markup=too_long)
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(5555, "x")
    emu.user(2002, "Bob")
    with pytest.raises(Exception, match="bot can't initiate conversation with a user"):
        await bot.send_message(2002, "x")


async def test_photo_document_and_download(emu: BotApiEmulator, bot: Bot) -> None:
    from aiogram.types import BufferedInputFile

    from loopgram.emulator.files import tiny_png

    anna = emu.user(1001, "Anna")
    incoming = await anna.send_document(b"%PDF-1.4 test", "report.pdf", "application/pdf")
    file = await bot.get_file(incoming["document"]["file_id"])
    assert file.file_path is not None
    downloaded = await bot.download_file(file.file_path)
    assert downloaded is not None and downloaded.read() == b"%PDF-1.4 test"
    photo = await bot.send_photo(
        1001, BufferedInputFile(tiny_png(), "p.png"), caption="<i>c</i>", parse_mode="HTML"
    )
    assert photo.photo is not None and (photo.photo[-1].width, photo.photo[-1].height) == (64, 48)
    assert photo.caption == "c"
    again = await bot.send_document(1001, incoming["document"]["file_id"], caption="same")
    assert again.document is not None and again.document.file_name == "report.pdf"
    with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
        await bot.send_photo(1001, BufferedInputFile(b"not an image", "p.png"))
