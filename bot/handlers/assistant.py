"""/assistant and the direct switches (/chat, /paraphrase, /summarize, /moderate, /label)."""

from __future__ import annotations

from contextlib import suppress

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message

from bot.callbacks import AssistantCb
from bot.filters import AddressedToBot
from bot.keyboards import assistant_keyboard
from loopgram import crud
from loopgram.assistants import ASSISTANTS
from loopgram.db import Database
from loopgram.i18n import t

router = Router(name=__name__)


@router.message(Command("assistant"), AddressedToBot())
async def on_assistant_menu(message: Message, lang: str, db: Database) -> None:
    chat = await db.run(
        crud.get_or_create_chat, chat_id=message.chat.id, chat_type=message.chat.type
    )
    await message.answer(
        t(lang, "assistant-pick"),
        reply_markup=assistant_keyboard(lang, chat.assistant, chat.disabled_assistants),
    )


@router.message(Command(*ASSISTANTS.keys()), AddressedToBot())
async def on_assistant_command(
    message: Message, command: CommandObject, lang: str, db: Database
) -> None:
    name = command.command.lower()
    chat = await db.run(
        crud.get_or_create_chat, chat_id=message.chat.id, chat_type=message.chat.type
    )
    if name in chat.disabled_assistants:
        await message.answer(t(lang, "assistant-disabled", title=ASSISTANTS[name].title(lang)))
        return
    await db.run(
        crud.set_chat_assistant,
        chat_id=message.chat.id,
        chat_type=message.chat.type,
        assistant=name,
    )
    assistant = ASSISTANTS[name]
    await message.answer(
        t(lang, "assistant-switched", title=assistant.title(lang))
        + "\n"
        + assistant.description(lang)
    )


@router.callback_query(AssistantCb.filter(), F.message)
async def on_assistant_pick(
    query: CallbackQuery, callback_data: AssistantCb, lang: str, db: Database, bot: Bot
) -> None:
    assistant = ASSISTANTS.get(callback_data.name)
    if assistant is None or query.message is None:
        await query.answer(t(lang, "callback-invalid"), show_alert=True)
        return
    chat = query.message.chat
    record = await db.run(crud.get_or_create_chat, chat_id=chat.id, chat_type=chat.type)
    if assistant.name in record.disabled_assistants:
        await query.answer(
            t(lang, "assistant-disabled", title=assistant.title(lang)), show_alert=True
        )
        return
    await db.run(
        crud.set_chat_assistant, chat_id=chat.id, chat_type=chat.type, assistant=assistant.name
    )
    title = assistant.title(lang)
    await query.answer(t(lang, "assistant-switched", title=title))
    with suppress(TelegramBadRequest):  # the menu may be too old to edit; the switch holds
        await bot.edit_message_text(
            t(lang, "assistant-switched", title=title) + "\n" + assistant.description(lang),
            chat_id=chat.id,
            message_id=query.message.message_id,
            reply_markup=assistant_keyboard(lang, assistant.name, record.disabled_assistants),
        )
