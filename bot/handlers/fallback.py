"""What the bot cannot handle gets a polite word in the user's language, never silence."""

from __future__ import annotations

import logging

from aiogram import Bot, F, Router
from aiogram.types import CallbackQuery, Message

from bot.filters import AddressedToBot
from bot.handlers.chat import question_from
from bot.responding import Responder
from loopgram.i18n import t

log = logging.getLogger(__name__)
router = Router(name=__name__)

TEXT_FILE_TYPES = {"text/plain", "text/markdown", "text/x-markdown"}
TEXT_FILE_SUFFIXES = (".txt", ".md", ".markdown")
MAX_TEXT_FILE_BYTES = 1_000_000


@router.message(F.text.startswith("/"), AddressedToBot())
async def on_unknown_command(message: Message, lang: str) -> None:
    await message.reply(t(lang, "unknown-command"))


@router.message(F.document, AddressedToBot())
async def on_document(message: Message, bot: Bot, lang: str, responder: Responder) -> None:
    """A plain-text file is read as the question (with its caption as the instruction)."""
    document = message.document
    assert document is not None
    name = (document.file_name or "").lower()
    if document.mime_type not in TEXT_FILE_TYPES and not name.endswith(TEXT_FILE_SUFFIXES):
        await message.reply(t(lang, "file-unsupported"))
        return
    if document.file_size is not None and document.file_size > MAX_TEXT_FILE_BYTES:
        await message.reply(t(lang, "file-too-big", limit_kb=MAX_TEXT_FILE_BYTES // 1000))
        return
    buffer = await bot.download(document)
    raw = buffer.read() if buffer is not None else b""
    try:
        content = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        await message.reply(t(lang, "file-not-utf8"))
        return
    if not content:
        await message.reply(t(lang, "file-empty"))
        return
    caption = (message.caption or "").strip()
    text = f"{caption}\n\n{content}" if caption else content
    await responder.respond(bot, question_from(message, text, lang))


@router.message(AddressedToBot())
async def on_other_content(message: Message, lang: str) -> None:
    log.info(
        "message.unsupported content_type=%s chat_id=%s", message.content_type, message.chat.id
    )
    await message.reply(t(lang, "only-text"))


@router.callback_query()
async def on_unknown_button(query: CallbackQuery, lang: str) -> None:
    """Forged, stale or garbage callback data: tell the presser, change nothing."""
    log.info("callback.unknown data=%r user_id=%s", (query.data or "")[:64], query.from_user.id)
    await query.answer(t(lang, "callback-invalid"), show_alert=True)
