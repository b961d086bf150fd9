"""Posts new review items to the moderators' chat (MODERATOR_CHAT_ID), one card each.

Items enter the queue in several places (the worker on 👎, the bot on moderation verdicts
and unsure labels, /report); a small loop in the bot process posts the ones without a card.
Several bot replicas are safe: an item is reserved with a conditional UPDATE before posting.
Without MODERATOR_CHAT_ID nothing is posted; moderators take items with /review instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError

from bot.review_cards import card_keyboard, card_text
from loopgram import review
from loopgram.db import Database
from loopgram.settings import Settings

log = logging.getLogger(__name__)


class ReviewPoster:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    @property
    def chat_id(self) -> int | None:
        return self.settings.access.moderator_chat_id

    @property
    def lang(self) -> str:
        return self.settings.bot.default_language or "en"

    def start(self, bot: Bot, interval: float = 3.0) -> None:
        if self.chat_id is None or self._task is not None:
            return

        async def loop() -> None:
            while True:
                try:
                    await self.post_pending(bot)
                except Exception:  # a bad round must not end the loop
                    log.exception("review.post_round_failed")
                await asyncio.sleep(interval)

        self._task = asyncio.create_task(loop(), name="review-poster")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def post_pending(self, bot: Bot) -> int:
        chat_id = self.chat_id
        if chat_id is None:
            return 0
        posted = 0
        for item_id in await self.db.run(review.unposted):
            if not await self.db.run(review.reserve_card, item_id=item_id, chat_id=chat_id):
                continue  # another replica is posting it
            found = await self.db.run(review.card, item_id=item_id)
            if found is None:
                continue
            topic = self.settings.review.moderator_topics.get(found.item.assistant)
            try:
                message = await bot.send_message(
                    chat_id,
                    card_text(found, self.lang),
                    reply_markup=card_keyboard(item_id, self.lang),
                    message_thread_id=topic,
                )
            except TelegramAPIError as exc:
                await self.db.run(review.set_card, item_id=item_id, message_id=None)
                log.warning("review.post_failed item_id=%s error=%s", item_id, exc)
                break  # Telegram refuses now; the next round tries again
            await self.db.run(review.set_card, item_id=item_id, message_id=message.message_id)
            posted += 1
        return posted
