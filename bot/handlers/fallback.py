"""What the bot cannot handle gets a polite word in the user's language, never silence."""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot, F, Router
from aiogram.types import CallbackQuery, Message

from bot.filters import AddressedToBot
from bot.handlers.chat import question_from
from bot.label_files import is_table, label_table
from bot.responding import Responder
from loopgram import crud
from loopgram.answering import AnswerService
from loopgram.documents import document_kind, extract_text
from loopgram.errors import LoopgramError
from loopgram.i18n import t
from loopgram.settings import Settings

log = logging.getLogger(__name__)
router = Router(name=__name__)


@router.message(F.text.startswith("/"), AddressedToBot())
async def on_unknown_command(message: Message, lang: str) -> None:
    await message.reply(t(lang, "unknown-command"))


@router.message(F.document, AddressedToBot())
async def on_document(
    message: Message,
    bot: Bot,
    lang: str,
    responder: Responder,
    answers: AnswerService,
    settings: Settings,
) -> None:
    """A file's text is the question (with its caption, if any, before it); a table sent
    to the labeling assistant has each of its rows labeled."""
    document = message.document
    assert document is not None
    chat = await answers.db.run(
        crud.get_or_create_chat, chat_id=message.chat.id, chat_type=message.chat.type
    )
    as_table = chat.assistant == "label" and is_table(document.file_name)
    if not as_table and document_kind(document.file_name, document.mime_type) is None:
        await message.reply(t(lang, "file-unsupported"))
        return
    limit = settings.bot.max_file_bytes
    if document.file_size is not None and document.file_size > limit:
        await message.reply(t(lang, "file-too-big", limit_kb=limit // 1000))
        return
    buffer = await bot.download(document)
    raw = buffer.read() if buffer is not None else b""
    if as_table:
        await label_table(message, bot, raw, lang=lang, answers=answers, settings=settings)
        return
    try:
        extracted = await asyncio.to_thread(
            extract_text,
            raw,
            file_name=document.file_name,
            mime_type=document.mime_type,
            max_chars=settings.bot.max_document_chars,
        )
    except LoopgramError as exc:
        await message.reply(t(lang, exc.key, **exc.params))
        return
    if extracted.truncated:
        limit = settings.bot.max_document_chars
        await message.reply(t(lang, "error-input-too-long", length=f"> {limit}", limit=limit))
        return
    caption = (message.caption or "").strip()
    text = f"{caption}\n\n{extracted.text}" if caption else extracted.text
    await responder.respond(bot, question_from(message, text, lang, from_document=True))


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
