"""/forget (delete my data, after a Yes/No) and /export_me (my data as a JSON file).

Both work in a private chat only: an export posted in a group would show one person's data
to everyone there. The logic lives in `loopgram.privacy`; this router asks, checks and sends.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from contextlib import suppress
from pathlib import Path

from aiogram import Bot, Router
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.types import (
    CallbackQuery,
    FSInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

from bot.callbacks import ForgetCb
from bot.filters import AddressedToBot
from loopgram import privacy
from loopgram.db import Database
from loopgram.i18n import t
from loopgram.settings import Settings

log = logging.getLogger(__name__)
router = Router(name=__name__)

# A module attribute, so a test can lower it to see the "too big" path.
DOCUMENT_LIMIT = privacy.TELEGRAM_DOCUMENT_LIMIT


def _key(settings: Settings) -> bytes:
    return privacy.confirmation_key(settings.telegram.key_secret)


async def _private_only(message: Message, lang: str) -> bool:
    if message.chat.type == ChatType.PRIVATE and message.from_user is not None:
        return True
    await message.reply(t(lang, "privacy-private-only"))
    return False


@router.message(Command("forget"), AddressedToBot())
async def on_forget(message: Message, lang: str, settings: Settings) -> None:
    if not await _private_only(message, lang):
        return
    assert message.from_user is not None
    uid, issued = message.from_user.id, int(time.time())
    sig = privacy.confirmation_signature(_key(settings), uid, issued)
    buttons = [
        InlineKeyboardButton(
            text=t(lang, "forget-button-yes"),
            callback_data=ForgetCb(yes=True, uid=uid, ts=issued, sig=sig).pack(),
        ),
        InlineKeyboardButton(
            text=t(lang, "forget-button-no"),
            callback_data=ForgetCb(yes=False, uid=uid, ts=issued, sig=sig).pack(),
        ),
    ]
    await message.answer(
        t(lang, "forget-confirm"), reply_markup=InlineKeyboardMarkup(inline_keyboard=[buttons])
    )


@router.callback_query(ForgetCb.filter())
async def on_forget_answer(
    query: CallbackQuery,
    callback_data: ForgetCb,
    lang: str,
    db: Database,
    settings: Settings,
    state: FSMContext,
    bot: Bot,
) -> None:
    uid = query.from_user.id
    genuine = (
        callback_data.uid == uid
        and query.message is not None
        and query.message.chat.id == uid  # the question was asked in their private chat
        and privacy.confirmation_genuine(_key(settings), uid, callback_data.ts, callback_data.sig)
    )
    if not genuine:
        log.warning("privacy.forged_confirm user_id=%s claimed_uid=%s", uid, callback_data.uid)
        await query.answer(t(lang, "forget-not-yours"), show_alert=True)
        return
    if not privacy.confirmation_fresh(callback_data.ts, time.time()):
        await query.answer(t(lang, "forget-expired"), show_alert=True)
        await _close(query, t(lang, "forget-expired"))
        return
    if not callback_data.yes:
        await query.answer()
        await _close(query, t(lang, "forget-cancelled"))
        return
    await query.answer()
    report = await db.run(privacy.forget_user, user_id=uid)
    await state.clear()  # a half-finished comment or correction pointed at deleted rows
    await _close(
        query,
        t(
            lang,
            "forget-done",
            interactions=report.interactions,
            ratings=report.ratings,
            kept=report.pairs_anonymised,
        ),
    )
    # Review cards about the deleted answers: closed now rather than on a moderator's press.
    card_lang = settings.bot.default_language or "en"
    for chat_id, message_id in report.review_cards:
        with suppress(TelegramAPIError):
            await bot.edit_message_text(
                t(card_lang, "review-card-closed-gone"), chat_id=chat_id, message_id=message_id
            )


async def _close(query: CallbackQuery, text: str) -> None:
    """Replace the question (and its buttons) with the outcome."""
    if query.message is None:
        return
    with suppress(TelegramAPIError):
        await query.bot.edit_message_text(  # type: ignore[union-attr]
            text, chat_id=query.message.chat.id, message_id=query.message.message_id
        )


@router.message(Command("export_me"), AddressedToBot())
async def on_export_me(message: Message, lang: str, db: Database) -> None:
    if not await _private_only(message, lang):
        return
    assert message.from_user is not None
    uid = message.from_user.id
    with tempfile.TemporaryDirectory(prefix="loopgram-export-") as folder:
        path = Path(folder) / f"loopgram-my-data-{uid}.json"
        result = await db.run(privacy.export_user_to_file, user_id=uid, path=path)
        sendable = await asyncio.to_thread(privacy.fit_for_telegram, path, DOCUMENT_LIMIT)
        if sendable is None:
            await message.answer(
                t(
                    lang,
                    "export-too-big",
                    size=_megabytes(result.size),
                    limit=_megabytes(DOCUMENT_LIMIT),
                )
            )
            return
        caption = t(
            lang,
            "export-caption",
            interactions=result.interactions,
            ratings=result.ratings,
            comments=result.comments,
        )
        if sendable != path:
            caption += "\n" + t(lang, "export-compressed")
        # FSInputFile streams the file from disk: a large export is never held in memory.
        await message.answer_document(
            FSInputFile(sendable, filename=sendable.name), caption=caption
        )


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f}"
