"""Option buttons under an answer: another style or format, a translation, a meaning check.

An option press answers the same text again with that option (a new answer, not a 🔄
sibling: the instruction changed, so the two are not a preference pair) and remembers the
choice for the chat's next texts. The 🔍 check compares the rewrite with the original.
"""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot, Router
from aiogram.types import CallbackQuery

from bot.callbacks import MeaningCb, OptionCb
from bot.ownership import owned_interaction
from bot.responding import Responder
from loopgram import crud
from loopgram.answering import Question
from loopgram.assistants import ASSISTANTS
from loopgram.assistants.checks import meaning_check
from loopgram.db import Database
from loopgram.embeddings import get_embedder
from loopgram.errors import LoopgramError
from loopgram.i18n import t
from loopgram.models import InteractionStatus
from loopgram.settings import Settings

log = logging.getLogger(__name__)
router = Router(name=__name__)


@router.callback_query(OptionCb.filter())
async def on_option(
    query: CallbackQuery,
    callback_data: OptionCb,
    bot: Bot,
    lang: str,
    db: Database,
    responder: Responder,
    settings: Settings,
) -> None:
    interaction = await owned_interaction(query, callback_data.iid, lang, db)
    if interaction is None or query.message is None:
        return
    assistant = ASSISTANTS.get(interaction.assistant)
    group = assistant.option_group(callback_data.group) if assistant else None
    if assistant is None or group is None or callback_data.value not in group.choices:
        log.warning("option.invalid data=%r user_id=%s", query.data, query.from_user.id)
        await query.answer(t(lang, "callback-invalid"), show_alert=True)
        return
    if interaction.status != InteractionStatus.ok:
        await query.answer(t(lang, "feedback-unknown"), show_alert=True)
        return
    await query.answer(t(lang, f"option-{group.name}-{callback_data.value}"))
    chat = query.message.chat
    await db.run(
        crud.set_chat_option,
        chat_id=chat.id,
        chat_type=chat.type,
        assistant=assistant.name,
        group=group.name,
        value=callback_data.value,
    )
    question = Question(
        chat_id=interaction.chat_id,
        chat_type=chat.type,
        user_id=query.from_user.id,
        lang=lang,
        text=interaction.prompt,
        message_thread_id=interaction.message_thread_id,
        request_message_id=interaction.request_message_id,
        assistant=assistant.name,
        options={**(interaction.options or {}), group.name: callback_data.value},
        from_document=len(interaction.prompt) > settings.bot.max_input_chars,
    )
    await responder.respond(bot, question)


@router.callback_query(MeaningCb.filter())
async def on_meaning_check(
    query: CallbackQuery, callback_data: MeaningCb, lang: str, db: Database, settings: Settings
) -> None:
    interaction = await owned_interaction(query, callback_data.iid, lang, db)
    if interaction is None:
        return
    if interaction.assistant != "paraphrase" or interaction.status != InteractionStatus.ok:
        await query.answer(t(lang, "callback-invalid"), show_alert=True)
        return
    try:
        embedder = get_embedder(settings.embedding.embedding_model)
        check = await asyncio.to_thread(
            meaning_check, embedder, interaction.prompt, interaction.answer
        )
    except LoopgramError as exc:
        await query.answer(t(lang, exc.key), show_alert=True)
        return
    text = t(lang, f"meaning-{check.verdict}", similarity=f"{check.similarity:.2f}")
    if check.missing_numbers:
        text += "\n" + t(lang, "meaning-missing-numbers", numbers=", ".join(check.missing_numbers))
    await query.answer(text, show_alert=True)
