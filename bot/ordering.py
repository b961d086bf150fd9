"""Answers in a chat go out in the order its messages arrived.

Updates are handled concurrently, and the middlewares before a handler (dedup, the user
upsert) wait on database threads, so the second of two quick questions can reach the
responder first. :class:`ChatOrder` is the first outer middleware: it notes each message
(chat, message id) as the update arrives, before anything can reorder them, and forgets it
when the update has been handled; an answer waits until the earlier messages of its chat
have been handled (their answers sent and stored, so its prompt sees them too).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class ChatOrder(BaseMiddleware):
    def __init__(self, max_wait: float = 600.0) -> None:
        self.max_wait = max_wait
        self._pending: dict[int, list[int]] = {}
        self._changed: dict[int, asyncio.Condition] = {}

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        message = event.message if isinstance(event, Update) else None
        if message is None:
            return await handler(event, data)
        chat_id, message_id = message.chat.id, message.message_id
        bisect.insort(self._pending.setdefault(chat_id, []), message_id)
        try:
            return await handler(event, data)
        finally:
            await self._done(chat_id, message_id)

    async def wait_turn(self, chat_id: int, message_id: int | None) -> None:
        """Return once no earlier message of the chat is still being handled."""
        if message_id is None or not self._earlier(chat_id, message_id):
            return
        condition = self._changed.setdefault(chat_id, asyncio.Condition())
        try:
            async with condition:
                await asyncio.wait_for(
                    condition.wait_for(lambda: not self._earlier(chat_id, message_id)),
                    timeout=self.max_wait,
                )
        except TimeoutError:  # never hold an answer forever behind a stuck update
            log.warning("order.gave_up chat_id=%s message_id=%s", chat_id, message_id)

    def _earlier(self, chat_id: int, message_id: int) -> bool:
        pending = self._pending.get(chat_id)
        return bool(pending) and pending[0] < message_id  # type: ignore[index]

    async def _done(self, chat_id: int, message_id: int) -> None:
        pending = self._pending.get(chat_id, [])
        index = bisect.bisect_left(pending, message_id)
        if index < len(pending) and pending[index] == message_id:
            del pending[index]
        if not pending:
            self._pending.pop(chat_id, None)
        condition = self._changed.get(chat_id)
        if condition is not None:
            async with condition:
                condition.notify_all()
            if chat_id not in self._pending:
                self._changed.pop(chat_id, None)
