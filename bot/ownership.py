"""Buttons on an answer act only for the person who asked, in the chat it was asked in."""

from __future__ import annotations

import logging

from aiogram.types import CallbackQuery

from loopgram import crud
from loopgram.db import Database
from loopgram.i18n import t
from loopgram.models import Interaction

log = logging.getLogger(__name__)


async def owned_interaction(
    query: CallbackQuery, iid: int, lang: str, db: Database
) -> Interaction | None:
    """The interaction behind a button, or None after telling the presser why not."""
    interaction = await db.run(crud.get_interaction, interaction_id=iid)
    if interaction is None:
        await query.answer(t(lang, "feedback-unknown"), show_alert=True)
        return None
    if (
        interaction.user_id != query.from_user.id
        or query.message is None
        or query.message.chat.id != interaction.chat_id
    ):
        log.warning("feedback.foreign_press interaction_id=%s user_id=%s", iid, query.from_user.id)
        await query.answer(t(lang, "feedback-not-yours"), show_alert=True)
        return None
    return interaction
