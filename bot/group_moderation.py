"""Group moderation in the bot: every text in a group that turned it on gets a verdict.

A message middleware (on new and edited messages) starts the verdict in the background and
lets the message go on to its handler (a question to the bot is still answered). The
verdict's action — a warning reply or a deletion — needs the bot to be an admin of the
group; when Telegram refuses, the refusal is logged and the review item stays for the
moderators.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Message, TelegramObject

from bot.middlewares import Handler
from loopgram.answering import Question
from loopgram.group_moderation import GroupModerator, ModerationOutcome
from loopgram.i18n import t
from loopgram.models import Chat

log = logging.getLogger(__name__)

GROUP_TYPES = (ChatType.GROUP, ChatType.SUPERGROUP)


async def on_edited_message(message: Message) -> None:
    """Nothing to do here: the middleware judged the edit. Polling and webhooks ask Telegram
    only for update types some handler takes, so without this one edits never arrive and a
    harmless message edited into spam would keep its first verdict."""


class GroupModerationMiddleware(BaseMiddleware):
    def __init__(self, moderator: GroupModerator, *, concurrency: int = 4) -> None:
        self.moderator = moderator
        self._limit = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if isinstance(event, Message) and self._candidate(event):
            chat = await self.moderator.chat_if_enabled(event.chat.id, event.chat.type)
            if chat is not None:
                task = asyncio.create_task(self._run(data["bot"], chat, event, data["lang"]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return await handler(event, data)

    @staticmethod
    def _candidate(message: Message) -> bool:
        text = message.text or message.caption or ""
        if (
            message.chat.type not in GROUP_TYPES
            or not text.strip()
            or text.startswith("/")
            or message.from_user is None
            or message.is_automatic_forward  # the linked channel's own post
        ):
            return False
        # A message sent as a chat names a fake bot sender: the group itself for its
        # anonymous admins (not judged), any other chat for a member posting as their
        # channel (judged like the member).
        sender_chat = message.sender_chat
        if sender_chat is not None:
            return sender_chat.id != message.chat.id
        return not message.from_user.is_bot

    async def drain(self) -> None:
        """Wait for verdicts in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self, bot: Bot, chat: Chat, message: Message, lang: str) -> None:
        assert message.from_user is not None
        question = Question(
            chat_id=message.chat.id,
            chat_type=message.chat.type,
            user_id=message.from_user.id,
            lang=lang,
            # Judged on its beginning: a text over MAX_INPUT_CHARS would be refused as too
            # long, and a message nobody judges would slip past moderation.
            text=(message.text or message.caption or "")[: self.moderator.input_limit],
            message_thread_id=message.message_thread_id if message.is_topic_message else None,
            request_message_id=message.message_id,
        )
        try:
            async with self._limit:
                outcome = await self.moderator.moderate(chat, question)
            await self._act(bot, message, outcome, lang)
        except Exception:  # a background task must log, never die silently
            log.exception("moderation.failed chat_id=%s message_id=%s", chat.id, message.message_id)

    async def _act(self, bot: Bot, message: Message, outcome: ModerationOutcome, lang: str) -> None:
        if outcome.verdict is None or outcome.action == "none":
            return
        label = t(lang, f"moderation-label-{outcome.verdict.label.value}")
        try:
            if outcome.action == "delete":
                await bot.delete_message(message.chat.id, message.message_id)
                await bot.send_message(
                    message.chat.id,
                    t(lang, "moderation-deleted", label=label),
                    message_thread_id=message.message_thread_id
                    if message.is_topic_message
                    else None,
                )
            else:
                await message.reply(t(lang, "moderation-warning", label=label))
        except TelegramAPIError as exc:
            log.warning(
                "moderation.action_refused chat_id=%s action=%s error=%s",
                message.chat.id,
                outcome.action,
                exc,
            )
