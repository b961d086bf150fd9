"""/start, /help, /reset."""

from __future__ import annotations

from aiogram import Router
from aiogram.enums import ParseMode
from aiogram.filters import Command, CommandStart
from aiogram.types import Message

from bot.filters import AddressedToBot
from loopgram import crud
from loopgram.db import Database
from loopgram.i18n import t

router = Router(name=__name__)


@router.message(CommandStart(), AddressedToBot())
async def on_start(message: Message, lang: str) -> None:
    name = message.from_user.first_name if message.from_user else ""
    await message.answer(t(lang, "start-greeting", name=name))


@router.message(Command("help"), AddressedToBot())
async def on_help(message: Message, lang: str) -> None:
    await message.answer(t(lang, "help-text"), parse_mode=ParseMode.HTML)


@router.message(Command("reset"), AddressedToBot())
async def on_reset(message: Message, lang: str, db: Database) -> None:
    await db.run(crud.reset_history, chat_id=message.chat.id, chat_type=message.chat.type)
    await message.answer(t(lang, "reset-done"))
