"""👍 👎 🔄 presses, the reason for a 👎, an optional comment, retries, and native reactions.

Callback data is untrusted: every press re-reads the interaction and checks that the
person pressing asked the question, in this chat.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from datetime import datetime

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    Message,
    MessageReactionUpdated,
    Update,
)

from bot.callbacks import RateAction, RateCb, ReasonCb
from bot.feedback_sink import FeedbackSink
from bot.filters import AddressedToBot, strip_mention
from bot.keyboards import answer_keyboard, reason_keyboard
from bot.ownership import owned_interaction
from bot.responding import Responder
from loopgram import crud, metrics
from loopgram.answering import AnswerService
from loopgram.db import Database
from loopgram.feedback import REASONS, Feedback
from loopgram.i18n import t
from loopgram.logging_setup import bind_log_context
from loopgram.models import InteractionStatus, utcnow
from loopgram.settings import Settings

log = logging.getLogger(__name__)
router = Router(name=__name__)

THUMBS_UP = {"👍", "❤", "❤️", "🔥", "👏"}
THUMBS_DOWN = {"👎", "💩", "🤮"}


class CommentForm(StatesGroup):
    waiting = State()


async def _set_markup(bot: Bot, query: CallbackQuery, markup: InlineKeyboardMarkup) -> None:
    if query.message is None:
        return
    with suppress(TelegramBadRequest):  # "not modified" or too old: the rating is stored anyway
        await bot.edit_message_reply_markup(
            chat_id=query.message.chat.id, message_id=query.message.message_id, reply_markup=markup
        )


@router.callback_query(RateCb.filter())
async def on_rate(
    query: CallbackQuery,
    callback_data: RateCb,
    bot: Bot,
    lang: str,
    db: Database,
    feedback_sink: FeedbackSink,
    responder: Responder,
    answers: AnswerService,
    event_update: Update,
    received_at: datetime | None = None,
) -> None:
    pressed_at = received_at or utcnow()  # before the reads below can reorder two presses
    interaction = await owned_interaction(query, callback_data.iid, lang, db)
    if interaction is None or interaction.id is None:
        return
    action = callback_data.action
    if action in (RateAction.regenerate, RateAction.retry):
        await query.answer(t(lang, "regenerating"))
        if action == RateAction.retry and query.message is not None:
            with suppress(TelegramBadRequest):
                await bot.edit_message_reply_markup(
                    chat_id=query.message.chat.id, message_id=query.message.message_id
                )
        question = answers.question_for_regenerate(
            interaction,
            user_id=query.from_user.id,
            lang=lang,
            chat_type=query.message.chat.type if query.message else "private",
        )
        await responder.respond(bot, question)
        return
    if interaction.status != InteractionStatus.ok:
        await query.answer(t(lang, "feedback-unknown"), show_alert=True)
        return
    value = 1 if action == RateAction.up else -1
    await _acknowledge(query, t(lang, "feedback-thanks" if value > 0 else "feedback-why"))
    bind_log_context(interaction_id=interaction.id)
    metrics.RATING_PRESSES.labels(value=metrics.rating_label(value), source="button").inc()
    await feedback_sink.submit(
        Feedback(
            interaction_id=interaction.id,
            user_id=query.from_user.id,
            value=value,
            update_id=event_update.update_id,
            pressed_at=pressed_at,
        )
    )
    if value > 0:
        await _set_markup(bot, query, answer_keyboard(interaction, lang, selected=1))
    else:
        await _set_markup(bot, query, reason_keyboard(interaction.id, lang))


async def _acknowledge(query: CallbackQuery, text: str) -> None:
    """Answer the press, but never lose the rating because the answer failed: after a long
    outage Telegram refuses answers to presses older than its window ("query is too old")."""
    try:
        await query.answer(text)
    except TelegramBadRequest as exc:
        log.warning("feedback.late_callback_answer error=%s", exc)


@router.callback_query(ReasonCb.filter())
async def on_reason(
    query: CallbackQuery,
    callback_data: ReasonCb,
    bot: Bot,
    lang: str,
    db: Database,
    feedback_sink: FeedbackSink,
    state: FSMContext,
    event_update: Update,
    received_at: datetime | None = None,
) -> None:
    pressed_at = received_at or utcnow()
    if callback_data.reason not in REASONS:
        await query.answer(t(lang, "callback-invalid"), show_alert=True)
        return
    interaction = await owned_interaction(query, callback_data.iid, lang, db)
    if interaction is None or interaction.id is None:
        return
    await _acknowledge(query, t(lang, "feedback-reason-saved"))
    await feedback_sink.submit(
        Feedback(
            interaction_id=interaction.id,
            user_id=query.from_user.id,
            value=-1,
            reason=callback_data.reason,
            update_id=event_update.update_id,
            pressed_at=pressed_at,
        )
    )
    await _set_markup(bot, query, answer_keyboard(interaction, lang, selected=-1))
    await state.set_state(CommentForm.waiting)
    await state.update_data(iid=interaction.id)
    if query.message is not None:
        await bot.send_message(
            query.message.chat.id,
            t(lang, "feedback-ask-comment"),
            message_thread_id=getattr(query.message, "message_thread_id", None),
        )


@router.message(StateFilter(CommentForm.waiting), Command("skip"))
async def on_skip_comment(message: Message, lang: str, state: FSMContext) -> None:
    await state.clear()
    await message.answer(t(lang, "feedback-comment-skipped"))


@router.message(StateFilter(CommentForm.waiting), F.text, ~F.text.startswith("/"), AddressedToBot())
async def on_comment(
    message: Message,
    bot: Bot,
    lang: str,
    state: FSMContext,
    settings: Settings,
    feedback_sink: FeedbackSink,
    event_update: Update,
    received_at: datetime | None = None,
) -> None:
    pressed_at = received_at or utcnow()
    # In a group the comment mentions the bot to reach it: the mention is not the comment.
    me = await bot.me()
    text = strip_mention(message.text or "", me.username)
    if not text:
        await message.reply(t(lang, "empty-message"))
        return
    limit = settings.bot.max_comment_chars
    if len(text) > limit:
        await message.reply(t(lang, "feedback-comment-too-long", limit=limit))
        return
    data = await state.get_data()
    await state.clear()
    iid = data.get("iid")
    if not isinstance(iid, int) or message.from_user is None:
        return
    await feedback_sink.submit(
        Feedback(
            interaction_id=iid,
            user_id=message.from_user.id,
            value=-1,
            comment=text,
            update_id=event_update.update_id,
            pressed_at=pressed_at,
        )
    )
    await message.reply(t(lang, "feedback-comment-saved"))


@router.message_reaction()
async def on_reaction(
    reaction: MessageReactionUpdated,
    db: Database,
    feedback_sink: FeedbackSink,
    event_update: Update,
    received_at: datetime | None = None,
) -> None:
    """Telegram's own 👍/👎 reactions on an answer count as ratings."""
    # The bot's clock, as for the buttons (the reaction's own date is in whole seconds).
    pressed_at = received_at or utcnow()
    if reaction.user is None:
        return
    emojis = {getattr(r, "emoji", None) for r in reaction.new_reaction}
    if emojis & THUMBS_UP:
        value = 1
    elif emojis & THUMBS_DOWN:
        value = -1
    else:
        return
    interaction = await db.run(
        crud.interaction_by_message, chat_id=reaction.chat.id, message_id=reaction.message_id
    )
    if interaction is None or interaction.id is None or interaction.user_id != reaction.user.id:
        return
    bind_log_context(interaction_id=interaction.id)
    metrics.RATING_PRESSES.labels(value=metrics.rating_label(value), source="reaction").inc()
    await feedback_sink.submit(
        Feedback(
            interaction_id=interaction.id,
            user_id=reaction.user.id,
            value=value,
            source="reaction",
            update_id=event_update.update_id,
            pressed_at=pressed_at,
        )
    )
