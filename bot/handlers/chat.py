"""Any text addressed to the bot is a question for the chat's assistant."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.types import Message

from bot.filters import AddressedToBot, strip_mention
from bot.responding import Responder
from loopgram.answering import Question
from loopgram.i18n import t

router = Router(name=__name__)


@router.message(F.text, ~F.text.startswith("/"), AddressedToBot())
async def on_text(message: Message, bot: Bot, lang: str, responder: Responder) -> None:
    me = await bot.me()
    text = strip_mention(message.text or "", me.username)
    if not text:
        await message.reply(t(lang, "empty-message"))
        return
    await responder.respond(bot, question_from(message, text, lang))


def question_from(
    message: Message, text: str, lang: str, *, from_document: bool = False
) -> Question:
    """The question a message asks (text, or a file's content), where it was asked."""
    assert message.from_user is not None
    return Question(
        chat_id=message.chat.id,
        chat_type=message.chat.type,
        user_id=message.from_user.id,
        lang=lang,
        text=text,
        message_thread_id=message.message_thread_id if message.is_topic_message else None,
        request_message_id=message.message_id,
        from_document=from_document,
    )
