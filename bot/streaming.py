"""Streaming an answer into Telegram while the model writes it.

Private chats get `sendMessageDraft` (Bot API 9.3+) where the server supports it; elsewhere
one message is sent and edited, at most once per `interval` per chat. Intermediate updates
are optional requests (bot/rate_limit.py): when the chat or the bot has no free slot they
are skipped and a later, longer preview goes instead; the final message(s) wait for their
slot, and the session middleware retries them on 429. The answer always ends as final
message(s) split under Telegram's limit and rendered as HTML, with the keyboard on the last
part.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aiogram import Bot
from aiogram.enums import ChatType, ParseMode
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramNotFound,
    TelegramRetryAfter,
)
from aiogram.types import InlineKeyboardMarkup, ReplyParameters

from bot.rate_limit import RateLimited, optional_requests
from loopgram.telegram_text import TELEGRAM_LIMIT, render_parts, split_markdown, truncate_u16

log = logging.getLogger(__name__)

_MAX_SEND_ATTEMPTS = 4


@dataclass
class DraftSupport:
    """Shared per bot: once the server refuses drafts, stop trying."""

    available: bool = True


class AnswerStreamer:
    def __init__(
        self,
        bot: Bot,
        *,
        chat_id: int,
        chat_type: str,
        message_thread_id: int | None,
        reply_to: int | None,
        interval: float,
        drafts: DraftSupport,
        draft_id: int,
    ) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.thread_id = message_thread_id
        self.reply_to = reply_to
        self.interval = interval
        self.drafts = drafts
        self.draft_id = draft_id or 1
        self.use_draft = chat_type == ChatType.PRIVATE and drafts.available
        self.stream_message_id: int | None = None
        self._next_update = 0.0
        self._shown = ""
        self.updates = 0

    async def push(self, text: str) -> None:
        """Show the text so far, unless an update went out less than `interval` ago."""
        now = time.monotonic()
        if now < self._next_update or not text.strip():
            return
        preview = _preview(text)
        if preview == self._shown:
            return
        self._next_update = now + self.interval
        try:
            with optional_requests():
                if self.use_draft:
                    await self._draft(preview)
                elif self.stream_message_id is None:
                    message = await self.bot.send_message(
                        self.chat_id,
                        preview,
                        message_thread_id=self.thread_id,
                        reply_parameters=self._reply_parameters(),
                    )
                    self.stream_message_id = message.message_id
                else:
                    await self.bot.edit_message_text(
                        preview, chat_id=self.chat_id, message_id=self.stream_message_id
                    )
            self._shown = preview
            self.updates += 1
        except RateLimited as exc:
            # No free slot: skip this preview; a later one carries more text.
            self._next_update = time.monotonic() + exc.wait
        except TelegramRetryAfter as exc:
            # Intermediate updates are optional: skip them until Telegram lets us again.
            self._next_update = time.monotonic() + exc.retry_after
            log.info("stream.retry_after chat_id=%s seconds=%s", self.chat_id, exc.retry_after)
        except TelegramBadRequest as exc:
            if message_gone(exc):
                # Deleted mid-answer (people may delete the bot's messages in private chats):
                # the next preview starts a new message, and the answer still arrives.
                log.info("stream.message_deleted chat_id=%s", self.chat_id)
                self.stream_message_id = None
                self._next_update = 0.0
            elif "not modified" not in exc.message:
                log.warning("stream.update_failed chat_id=%s error=%s", self.chat_id, exc.message)

    async def _draft(self, preview: str) -> None:
        try:
            await self.bot.send_message_draft(
                chat_id=self.chat_id,
                draft_id=self.draft_id,
                text=preview,
                message_thread_id=self.thread_id,
            )
        except (TelegramNotFound, TelegramBadRequest) as exc:
            if isinstance(exc, TelegramBadRequest) and "TEXTDRAFT" not in exc.message.upper():
                raise
            log.info("stream.drafts_unavailable error=%s; falling back to edits", exc.message)
            self.drafts.available = False
            self.use_draft = False
            self._next_update = 0.0
            await self.push(preview)

    async def notice(self, text: str) -> None:
        """A line shown where the answer will appear (the place in the model's queue): a
        draft, or the message that the answer then replaces."""
        try:
            if self.use_draft:
                await self.bot.send_message_draft(
                    chat_id=self.chat_id,
                    draft_id=self.draft_id,
                    text=text,
                    message_thread_id=self.thread_id,
                )
            elif self.stream_message_id is None:
                self.stream_message_id = await self.send_plain(text, None)
            self._shown = text
        except TelegramAPIError as exc:  # a courtesy: the answer still comes
            log.info("stream.notice_failed chat_id=%s error=%s", self.chat_id, exc)

    def _reply_parameters(self) -> ReplyParameters | None:
        if self.reply_to is None:
            return None
        return ReplyParameters(message_id=self.reply_to, allow_sending_without_reply=True)

    async def finish(self, text: str, keyboard: InlineKeyboardMarkup | None) -> list[int]:
        """Deliver the whole answer; returns the ids of the messages that carry it."""
        sources = split_markdown(text) or [text or "…"]
        parts = render_parts(text) or ["…"]
        ids: list[int] = []
        for index, (html_part, source) in enumerate(zip(parts, sources, strict=False)):
            markup = keyboard if index == len(parts) - 1 else None
            if index == 0 and self.stream_message_id is not None:
                if await self._edit_final(self.stream_message_id, html_part, source, markup):
                    ids.append(self.stream_message_id)
                else:  # the streamed message was deleted: the answer comes anew
                    self.stream_message_id = None
                    ids.append(await self._send_final(html_part, source, markup, first=True))
            else:
                ids.append(await self._send_final(html_part, source, markup, first=index == 0))
        return ids

    async def send_plain(self, text: str, keyboard: InlineKeyboardMarkup | None) -> int:
        """A non-answer message (an apology, a notice) in the same place as the answer."""
        if self.stream_message_id is not None:
            if await self._edit_final(self.stream_message_id, text, text, keyboard, html=False):
                return self.stream_message_id
            self.stream_message_id = None
        return await self._send_final(text, text, keyboard, first=True, html=False)

    async def _send_final(
        self,
        html_text: str,
        source: str,
        markup: InlineKeyboardMarkup | None,
        *,
        first: bool,
        html: bool = True,
    ) -> int:
        reply = self._reply_parameters() if first else None
        for _ in range(_MAX_SEND_ATTEMPTS):
            try:
                message = await self.bot.send_message(
                    self.chat_id,
                    html_text if html else source,
                    parse_mode=ParseMode.HTML if html else None,
                    reply_markup=markup,
                    message_thread_id=self.thread_id,
                    reply_parameters=reply,
                )
                return message.message_id
            except TelegramBadRequest as exc:
                if not html or "parse entities" not in exc.message:
                    raise
                # Our renderer should never produce this; plain text is the safe fallback.
                log.error("stream.html_rejected error=%s", exc.message)
                html = False
        raise RuntimeError("could not deliver the answer after retries")

    async def _edit_final(
        self,
        message_id: int,
        html_text: str,
        source: str,
        markup: InlineKeyboardMarkup | None,
        *,
        html: bool = True,
    ) -> bool:
        """True once the message shows the text; False when the message is gone."""
        for _ in range(_MAX_SEND_ATTEMPTS):
            try:
                await self.bot.edit_message_text(
                    html_text if html else source,
                    chat_id=self.chat_id,
                    message_id=message_id,
                    parse_mode=ParseMode.HTML if html else None,
                    reply_markup=markup,
                )
                return True
            except TelegramBadRequest as exc:
                if "not modified" in exc.message:
                    return True
                if message_gone(exc):
                    log.info("stream.message_deleted chat_id=%s", self.chat_id)
                    return False
                if html and "parse entities" in exc.message:
                    log.error("stream.html_rejected error=%s", exc.message)
                    html = False
                    continue
                raise
        raise RuntimeError("could not deliver the answer after retries")


def message_gone(exc: TelegramBadRequest) -> bool:
    """Telegram's answer to an edit of a message that was deleted (or never was)."""
    text = exc.message.lower()
    return "message to edit not found" in text or "message_id_invalid" in text


def _preview(text: str) -> str:
    """What a partial answer looks like while it streams: plain text under the limit."""
    text = text.strip()
    cut = truncate_u16(text, TELEGRAM_LIMIT - 2)
    return text if cut == text else cut + " …"
