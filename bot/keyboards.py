"""Inline keyboards."""

from __future__ import annotations

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.callbacks import AssistantCb, RateAction, RateCb, ReasonCb
from loopgram.assistants import ASSISTANTS
from loopgram.feedback import REASONS
from loopgram.i18n import t


def rating_keyboard(iid: int, *, selected: int | None = None) -> InlineKeyboardMarkup:
    up = "👍✓" if selected == 1 else "👍"
    down = "👎✓" if selected == -1 else "👎"
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=up, callback_data=RateCb(action=RateAction.up, iid=iid).pack()
                ),
                InlineKeyboardButton(
                    text=down, callback_data=RateCb(action=RateAction.down, iid=iid).pack()
                ),
                InlineKeyboardButton(
                    text="🔄", callback_data=RateCb(action=RateAction.regenerate, iid=iid).pack()
                ),
            ]
        ]
    )


def reason_keyboard(iid: int, lang: str) -> InlineKeyboardMarkup:
    buttons = [
        InlineKeyboardButton(
            text=t(lang, f"reason-{reason}"), callback_data=ReasonCb(iid=iid, reason=reason).pack()
        )
        for reason in REASONS
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    return InlineKeyboardMarkup(inline_keyboard=rows)


def retry_keyboard(iid: int, lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=t(lang, "button-retry"),
                    callback_data=RateCb(action=RateAction.retry, iid=iid).pack(),
                )
            ]
        ]
    )


def assistant_keyboard(lang: str, current: str) -> InlineKeyboardMarkup:
    rows = []
    for assistant in ASSISTANTS.values():
        mark = " ✓" if assistant.name == current else ""
        rows.append(
            [
                InlineKeyboardButton(
                    text=f"{assistant.emoji} {assistant.title(lang)}{mark}",
                    callback_data=AssistantCb(name=assistant.name).pack(),
                )
            ]
        )
    return InlineKeyboardMarkup(inline_keyboard=rows)
