"""Review inside Telegram: moderators' buttons on review cards, corrections, /review,
/report for users, and the admins' /stats and role commands (/grant, /revoke, /ban, /unban).

Every press re-reads the presser's role from the database — never the chat it was pressed
in: a forwarded card or forged callback data from a plain user changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import BufferedInputFile, CallbackQuery, Message, ReplyParameters
from aiogram.types import User as TgUser
from sqlmodel import Session

from bot.callbacks import ReviewAction, ReviewCb
from bot.filters import AddressedToBot
from bot.permissions import is_admin, is_moderator
from bot.review_cards import card_keyboard, card_text, decided_text
from bot.stats_satisfaction import calibration_png, satisfaction_lines
from loopgram import crud, metrics, review, review_stats, roles, satisfaction
from loopgram.assistants import get_assistant
from loopgram.db import Database
from loopgram.errors import LoopgramError
from loopgram.i18n import t
from loopgram.models import Interaction, ReviewStatus, Role, User
from loopgram.review import Decision, Outcome, ReviewResult
from loopgram.review_chart import render_thumbs_up_chart
from loopgram.settings import Settings

log = logging.getLogger(__name__)
router = Router(name=__name__)

RESULT_KEYS = {
    ReviewResult.decided: "review-done",
    ReviewResult.recorded: "review-recorded",
    ReviewResult.duplicate: "review-duplicate",
    ReviewResult.taken: "review-taken",
    ReviewResult.closed: "review-closed",
    ReviewResult.gone: "review-gone",
}


class ReviewForm(StatesGroup):
    correction = State()


def _name(user: TgUser) -> str:
    return f"@{user.username}" if user.username else user.full_name


# --- buttons on a card ------------------------------------------------------------------------


@router.callback_query(ReviewCb.filter())
async def on_review_button(
    query: CallbackQuery,
    callback_data: ReviewCb,
    bot: Bot,
    lang: str,
    db: Database,
    settings: Settings,
    user_record: User | None,
    state: FSMContext,
) -> None:
    if not is_moderator(user_record):
        log.warning("review.not_moderator user_id=%s data=%r", query.from_user.id, query.data)
        await query.answer(t(lang, "review-not-moderator"), show_alert=True)
        return
    moderator = query.from_user.id
    item_id = callback_data.item
    action = callback_data.action
    if action == ReviewAction.skip:
        await db.run(review.release, item_id=item_id, moderator_id=moderator, skip=True)
        await query.answer(t(lang, "review-skipped"))
        if query.message is not None and query.message.chat.type == ChatType.PRIVATE:
            await send_next(bot, query.message.chat.id, moderator, lang, db, settings)
        return
    if action == ReviewAction.correct:
        outcome = await db.run(
            review.claim,
            item_id=item_id,
            moderator_id=moderator,
            seconds=settings.review.review_claim_seconds,
        )
        if outcome.result != ReviewResult.recorded:
            await _tell(query, outcome, lang)
            return
        await state.set_state(ReviewForm.correction)
        await state.update_data(item=item_id)
        await query.answer(t(lang, "review-correct-ask"))
        found = await db.run(review.card, item_id=item_id)
        hint = (
            t(lang, "review-correct-labels", labels=", ".join(found.labels))
            if found and found.labels
            else ""
        )
        if query.message is not None:
            await bot.send_message(
                query.message.chat.id,
                t(lang, "review-correct-prompt", id=item_id, name=_name(query.from_user))
                + (f"\n{hint}" if hint else ""),
                message_thread_id=getattr(query.message, "message_thread_id", None),
            )
        return
    decision = Decision.approve if action == ReviewAction.approve else Decision.reject
    outcome = await db.run(
        review.decide,
        item_id=item_id,
        moderator_id=moderator,
        decision=decision,
        overlap=settings.review.review_overlap,
    )
    await _tell(query, outcome, lang)
    await after_decision(bot, outcome, lang, db, settings, by=_name(query.from_user))


async def _tell(query: CallbackQuery, outcome: Outcome, lang: str) -> None:
    alert = outcome.result not in (ReviewResult.decided, ReviewResult.recorded)
    await query.answer(t(lang, RESULT_KEYS[outcome.result]), show_alert=alert)
    if outcome.result == ReviewResult.gone and query.message is not None:
        # The answer (and with it the item) was deleted: close this card with a note.
        with suppress(TelegramAPIError):
            await query.bot.edit_message_text(  # type: ignore[union-attr]
                t(lang, "review-card-closed-gone"),
                chat_id=query.message.chat.id,
                message_id=query.message.message_id,
            )


# --- the correction, as the moderator's next message ------------------------------------------


@router.message(StateFilter(ReviewForm.correction), Command("cancel"))
async def on_cancel_correction(
    message: Message, lang: str, db: Database, state: FSMContext
) -> None:
    data = await state.get_data()
    await state.clear()
    if message.from_user is not None and isinstance(data.get("item"), int):
        await db.run(review.release, item_id=data["item"], moderator_id=message.from_user.id)
    await message.reply(t(lang, "review-correct-cancelled"))


@router.message(StateFilter(ReviewForm.correction), F.text, ~F.text.startswith("/"))
async def on_correction(
    message: Message,
    bot: Bot,
    lang: str,
    db: Database,
    settings: Settings,
    user_record: User | None,
    state: FSMContext,
) -> None:
    data = await state.get_data()
    item_id = data.get("item")
    if not is_moderator(user_record) or message.from_user is None or not isinstance(item_id, int):
        await state.clear()
        await message.reply(t(lang, "review-not-moderator"))
        return
    try:
        outcome = await db.run(
            review.decide,
            item_id=item_id,
            moderator_id=message.from_user.id,
            decision=Decision.correct,
            correction=message.text or "",
            max_correction_chars=settings.review.max_correction_chars,
            correction_weight=settings.review.correction_weight,
            overlap=settings.review.review_overlap,
        )
    except LoopgramError as exc:  # empty, too long, or not a label of the set: try again
        await message.reply(t(lang, exc.key, **exc.params))
        return
    await state.clear()
    await message.reply(t(lang, RESULT_KEYS[outcome.result]))
    await after_decision(bot, outcome, lang, db, settings, by=_name(message.from_user))


# --- after a decision: the card, the person who asked -----------------------------------------


async def after_decision(
    bot: Bot, outcome: Outcome, lang: str, db: Database, settings: Settings, *, by: str
) -> None:
    item = outcome.item
    if item is None or item.id is None:
        return
    if outcome.result in (ReviewResult.decided, ReviewResult.gone, ReviewResult.closed):
        await _close_card(bot, item.id, lang, db, by=by)
    if (
        outcome.result == ReviewResult.decided
        and item.status == ReviewStatus.corrected
        and settings.review.review_notify_user
    ):
        await _notify_user(bot, item.interaction_id, item.correction or "", db)


async def _close_card(bot: Bot, item_id: int, lang: str, db: Database, *, by: str) -> None:
    found = await db.run(review.card, item_id=item_id)
    if found is None or found.item.card_chat_id is None or found.item.card_message_id is None:
        return
    text = decided_text(found, lang, by=by) if found.interaction else card_text(found, lang)
    with suppress(TelegramAPIError):  # too old to edit: the decision stands anyway
        await bot.edit_message_text(
            text[:4096], chat_id=found.item.card_chat_id, message_id=found.item.card_message_id
        )


def _asker(*, session: Session, interaction_id: int) -> tuple[Interaction, str] | None:
    interaction = session.get(Interaction, interaction_id)
    if interaction is None:
        return None
    user = session.get(User, interaction.user_id)
    return interaction, user.language if user else "en"


async def _notify_user(bot: Bot, interaction_id: int, correction: str, db: Database) -> None:
    found = await db.run(_asker, interaction_id=interaction_id)
    if found is None:
        return
    interaction, lang = found
    shown = get_assistant(interaction.assistant).render(correction, lang=lang)
    reply = (
        ReplyParameters(message_id=interaction.request_message_id, allow_sending_without_reply=True)
        if interaction.request_message_id
        else None
    )
    try:
        await bot.send_message(
            interaction.chat_id,
            t(lang, "review-corrected-for-user", text=shown)[:4096],
            reply_parameters=reply,
            message_thread_id=interaction.message_thread_id,
        )
    except TelegramAPIError as exc:  # the user blocked the bot or left: the pair is stored
        log.info("review.notify_failed interaction_id=%s error=%s", interaction_id, exc)


# --- /review, /report -------------------------------------------------------------------------


@router.message(Command("review"), AddressedToBot())
async def on_review(
    message: Message,
    bot: Bot,
    lang: str,
    db: Database,
    settings: Settings,
    user_record: User | None,
) -> None:
    if not is_moderator(user_record) or message.from_user is None:
        await message.reply(t(lang, "review-not-moderator"))
        return
    await send_next(bot, message.chat.id, message.from_user.id, lang, db, settings)


async def send_next(
    bot: Bot, chat_id: int, moderator_id: int, lang: str, db: Database, settings: Settings
) -> None:
    item = await db.run(
        review.next_for, moderator_id=moderator_id, seconds=settings.review.review_claim_seconds
    )
    if item is None or item.id is None:
        await bot.send_message(chat_id, t(lang, "review-empty"))
        return
    found = await db.run(review.card, item_id=item.id)
    if found is None:
        await bot.send_message(chat_id, t(lang, "review-empty"))
        return
    await bot.send_message(
        chat_id, card_text(found, lang)[:4096], reply_markup=card_keyboard(item.id, lang)
    )


@router.message(Command("report"), AddressedToBot())
async def on_report(message: Message, lang: str, db: Database) -> None:
    """A reply to one of the bot's answers with /report sends it to the moderators."""
    replied = message.reply_to_message
    if replied is None or message.from_user is None:
        await message.reply(t(lang, "review-report-usage"))
        return
    interaction = await db.run(
        crud.interaction_by_message, chat_id=message.chat.id, message_id=replied.message_id
    )
    if interaction is None or interaction.id is None:
        await message.reply(t(lang, "review-report-usage"))
        return
    reason = (message.text or "").partition(" ")[2].strip()[:300]
    await db.run(
        review.flag,
        interaction_id=interaction.id,
        reason=review.REPORT,
        note=f"reported by {message.from_user.id}" + (f": {reason}" if reason else ""),
    )
    await message.reply(t(lang, "review-reported"))


# --- roles ------------------------------------------------------------------------------------

ROLE_COMMANDS = ("grant", "revoke", "ban", "unban")


@router.message(Command(*ROLE_COMMANDS), AddressedToBot())
async def on_role_command(
    message: Message, command: CommandObject, lang: str, db: Database, user_record: User | None
) -> None:
    if not is_admin(user_record) or message.from_user is None:
        await message.reply(t(lang, "admin-only"))
        return
    args = (command.args or "").split()
    name = command.command.lower()
    replied = message.reply_to_message
    target_ref = (
        str(replied.from_user.id)
        if replied is not None and replied.from_user is not None and not replied.from_user.is_bot
        else (args.pop(0) if args else "")
    )
    role_arg = args[0].lower() if args else ""
    if not target_ref or (name == "grant" and role_arg not in ("moderator", "admin")):
        await message.reply(t(lang, "role-usage"))
        return
    target = await db.run(roles.find_user, ref=target_ref)
    if target is None:
        await message.reply(t(lang, "role-unknown-user", ref=target_ref))
        return
    actor = message.from_user.id
    if name in ("grant", "revoke"):
        role = Role(role_arg) if name == "grant" else Role.user
        await db.run(roles.set_role, actor_id=actor, user_id=target.id, role=role)
        await message.reply(t(lang, "role-set", user=target_ref, role=role.value))
    else:
        banned = name == "ban"
        await db.run(roles.set_banned, actor_id=actor, user_id=target.id, banned=banned)
        await message.reply(t(lang, "user-banned" if banned else "user-unbanned", user=target_ref))


# --- /stats -----------------------------------------------------------------------------------


def _duration(seconds: float | None, lang: str) -> str:
    if seconds is None:
        return "—"
    if seconds < 3600:
        return t(lang, "duration-minutes", n=round(seconds / 60))
    return t(lang, "duration-hours", n=f"{seconds / 3600:.1f}")


@router.message(Command("stats"), AddressedToBot())
async def on_stats(
    message: Message,
    bot: Bot,
    lang: str,
    db: Database,
    settings: Settings,
    user_record: User | None,
) -> None:
    """The review queue, moderators' decisions and agreement, the satisfaction estimate per
    assistant and adapter, the 👍 rate over the last 30 days as a chart and the estimate's
    calibration as another."""
    if not is_admin(user_record):
        await message.reply(t(lang, "admin-only"))
        return
    queue = await db.run(review_stats.queue_stats)
    agreement = await db.run(review_stats.agreement)
    series = await db.run(review_stats.thumbs_up_series)
    estimates = await db.run(satisfaction.estimate_all)
    metrics.publish_satisfaction(estimates)
    lines = [
        t(
            lang,
            "stats-queue",
            pending=queue.pending,
            claimed=queue.claimed,
            oldest=_duration(queue.oldest_pending_seconds, lang),
            decided=queue.decided_last_7_days,
            median=_duration(queue.review_seconds_median, lang),
            p90=_duration(queue.review_seconds_p90, lang),
        )
    ]
    for moderator, counts in sorted(queue.decisions_by_moderator.items()):
        agree = agreement.get(moderator)
        lines.append(
            t(
                lang,
                "stats-moderator",
                id=str(moderator),
                approve=counts.get("approve", 0),
                reject=counts.get("reject", 0),
                correct=counts.get("correct", 0),
                kappa=f"{agree.kappa:.2f} ({agree.shared_items})" if agree else "—",
            )
        )
    lines += satisfaction_lines(
        estimates, lang, check_seconds=settings.reward.satisfaction_check_seconds
    )
    await message.reply("\n".join(lines))
    thread = message.message_thread_id if message.is_topic_message else None
    png = await asyncio.to_thread(
        render_thumbs_up_chart, series, title=t(lang, "stats-chart-plot-title")
    )
    await bot.send_photo(
        message.chat.id,
        BufferedInputFile(png, filename="thumbs-up.png"),
        caption=t(lang, "stats-chart-title"),
        message_thread_id=thread,
    )
    calibration = await asyncio.to_thread(calibration_png, estimates, lang)
    if calibration is not None:
        await bot.send_photo(
            message.chat.id,
            BufferedInputFile(calibration, filename="calibration.png"),
            caption=t(lang, "stats-calibration-title"),
            message_thread_id=thread,
        )
