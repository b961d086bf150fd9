"""Errors become a message the user can read; nothing is swallowed without a log line."""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.filters import ExceptionTypeFilter
from aiogram.types import ErrorEvent

from loopgram.errors import LoopgramError
from loopgram.i18n import pick_language, t

log = logging.getLogger(__name__)
router = Router(name=__name__)


def _lang(event: ErrorEvent, lang: str | None) -> str:
    if lang:
        return lang
    update = event.update
    user = None
    if update.message and update.message.from_user:
        user = update.message.from_user
    elif update.callback_query:
        user = update.callback_query.from_user
    return pick_language(user.language_code if user else None)


async def _tell(event: ErrorEvent, text: str) -> None:
    update = event.update
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(text, show_alert=True)
        elif update.message is not None:
            await update.message.reply(text)
    except Exception as exc:  # the chat may be gone; the error is logged either way
        log.warning("error.notify_failed update_id=%s error=%s", update.update_id, exc)


@router.error(ExceptionTypeFilter(LoopgramError))
async def on_domain_error(event: ErrorEvent, lang: str | None = None) -> None:
    error = event.exception
    assert isinstance(error, LoopgramError)
    log.info("update.domain_error update_id=%s key=%s", event.update.update_id, error.key)
    await _tell(event, t(_lang(event, lang), error.key, **error.params))


@router.error()
async def on_unexpected_error(event: ErrorEvent, lang: str | None = None) -> None:
    log.error(
        "update.failed update_id=%s error=%r",
        event.update.update_id,
        event.exception,
        exc_info=event.exception,
    )
    await _tell(event, t(_lang(event, lang), "error-generic"))
