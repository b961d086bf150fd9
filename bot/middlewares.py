"""Outer middlewares: drop re-delivered updates, then load who is talking and in which language."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.enums import ChatType
from aiogram.types import Chat, TelegramObject, Update, User
from sqlalchemy.exc import OperationalError

from loopgram import crud
from loopgram.db import Database
from loopgram.i18n import pick_language
from loopgram.models import Role, utcnow
from loopgram.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class ReceivedAtMiddleware(BaseMiddleware):
    """Notes when the update arrived (`received_at`, UTC, in microseconds) before anything can
    reorder it: a person's presses are ordered by it (callback queries carry no date, and
    update ids restart at a random value after a week without updates)."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        data["received_at"] = utcnow()
        return await handler(event, data)


class DedupMiddleware(BaseMiddleware):
    """Telegram re-delivers webhook updates after a restart; each update id runs once.

    This is an update's first database call: while the database is unreachable the update
    is held here and retried (for up to `hold` seconds), so that a press made during a short
    outage is stored once the database is back instead of being refused."""

    def __init__(self, db: Database, *, hold: float = 60.0) -> None:
        self.db = db
        self.hold = hold

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        if not await self._mark(event.update_id):
            log.info("update.duplicate update_id=%s", event.update_id)
            return None
        return await handler(event, data)

    async def _mark(self, update_id: int) -> bool:
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self.hold, 0.2
        while True:
            try:
                return await self.db.run_grouped(crud.mark_update_processed, update_id=update_id)
            except OperationalError as exc:  # unreachable (a constraint error is not this)
                if loop.time() + delay > deadline:
                    raise
                log.warning("update.db_unavailable update_id=%s error=%s", update_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


class UserContextMiddleware(BaseMiddleware):
    """Upsert the user, pick the language, enforce bans and the group allowlist."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        tg_user: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        in_group = chat is not None and chat.type in (ChatType.GROUP, ChatType.SUPERGROUP)
        if in_group and chat is not None and not self.settings.access.group_allowed(chat.id):
            log.info("update.chat_not_allowed chat_id=%s", chat.id)
            return None
        # Outside channels Telegram always names a message's sender (a stand-in user for an
        # anonymous admin): a message with none is forged, and nothing can be attributed to it.
        if isinstance(event, Update) and event.message is not None and tg_user is None:
            log.info("update.message_without_sender chat_id=%s", event.message.chat.id)
            return None
        if tg_user is None or tg_user.is_bot:
            data["lang"] = pick_language(None, self.settings.bot.default_language)
            data["user_record"] = None
            return await handler(event, data)
        lang = pick_language(tg_user.language_code, self.settings.bot.default_language)
        user = await self.db.run_grouped(
            crud.upsert_user,
            user_id=tg_user.id,
            language=lang,
            first_name=tg_user.first_name,
            username=tg_user.username,
            initial_role=self._role_from_env(tg_user.id),
        )
        if user.banned:
            log.info("update.banned_user user_id=%s", tg_user.id)
            return None
        data["lang"] = lang
        data["user_record"] = user
        return await handler(event, data)

    def _role_from_env(self, user_id: int) -> Role:
        if user_id in self.settings.access.admin_ids:
            return Role.admin
        if user_id in self.settings.access.moderator_ids:
            return Role.moderator
        return Role.user
