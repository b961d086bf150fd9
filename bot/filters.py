"""Filters: when a group message is meant for the bot."""

from __future__ import annotations

import re
from typing import Any

from aiogram import Bot
from aiogram.enums import ChatType
from aiogram.filters import BaseFilter
from aiogram.types import Message


class AddressedToBot(BaseFilter):
    """Private chats always; groups only when the bot is mentioned, replied to, or sent a
    /command@bot_username."""

    async def __call__(self, message: Message, bot: Bot) -> bool | dict[str, Any]:
        if message.chat.type == ChatType.PRIVATE:
            return True
        me = await bot.me()
        reply = message.reply_to_message
        if reply is not None and reply.from_user is not None and reply.from_user.id == me.id:
            return True
        text = message.text or message.caption or ""
        mention = f"@{me.username}".lower() if me.username else None
        for entity in message.entities or message.caption_entities or []:
            if entity.type == "mention" and entity.extract_from(text).lower() == mention:
                return True
            if entity.type == "text_mention" and entity.user and entity.user.id == me.id:
                return True
            if (  # /command@this_bot in a group is meant for this bot
                entity.type == "bot_command"
                and mention is not None
                and entity.extract_from(text).lower().endswith(mention)
            ):
                return True
        return False


def strip_mention(text: str, username: str | None) -> str:
    if not username:
        return text.strip()
    return re.sub(rf"@{re.escape(username)}\b", "", text, flags=re.IGNORECASE).strip()
