"""Inline keyboards."""

from __future__ import annotations

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.callbacks import (
    AssistantCb,
    MeaningCb,
    OptionCb,
    RateAction,
    RateCb,
    ReasonCb,
    SourcesCb,
)
from loopgram.assistants import ASSISTANTS, Assistant
from loopgram.feedback import REASONS
from loopgram.i18n import t
from loopgram.models import Interaction, InteractionStatus

Rows = list[list[InlineKeyboardButton]]

# Which option rows an answer shows, per assistant: (group, choices per row).
OPTION_ROWS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "paraphrase": [
        ("style", ("formal", "friendly", "concise", "simpler")),
    ],
    "summarize": [
        ("format", ("line", "short", "bullets")),
        ("format", ("detailed", "facts")),
    ],
}


def _rating_row(iid: int, selected: int | None) -> list[InlineKeyboardButton]:
    up = "👍✓" if selected == 1 else "👍"
    down = "👎✓" if selected == -1 else "👎"
    return [
        InlineKeyboardButton(text=up, callback_data=RateCb(action=RateAction.up, iid=iid).pack()),
        InlineKeyboardButton(
            text=down, callback_data=RateCb(action=RateAction.down, iid=iid).pack()
        ),
        InlineKeyboardButton(
            text="🔄", callback_data=RateCb(action=RateAction.regenerate, iid=iid).pack()
        ),
    ]


def rating_keyboard(iid: int, *, selected: int | None = None) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[_rating_row(iid, selected)])


def _option_button(
    iid: int, group: str, value: str, current: str, lang: str
) -> InlineKeyboardButton:
    mark = "✓ " if value == current else ""
    return InlineKeyboardButton(
        text=mark + t(lang, f"option-{group}-{value}"),
        callback_data=OptionCb(iid=iid, group=group, value=value).pack(),
    )


def _option_rows(assistant: Assistant, interaction: Interaction, lang: str) -> Rows:
    iid = interaction.id or 0
    options = assistant.options(interaction.options)
    rows: Rows = [
        [_option_button(iid, group, value, options.get(group, ""), lang) for value in values]
        for group, values in OPTION_ROWS.get(assistant.name, [])
    ]
    if assistant.name == "paraphrase":
        rows.append(
            [
                _option_button(iid, "target", "en", options.get("target", ""), lang),
                _option_button(iid, "target", "ru", options.get("target", ""), lang),
                InlineKeyboardButton(
                    text=t(lang, "button-meaning-check"),
                    callback_data=MeaningCb(iid=iid).pack(),
                ),
            ]
        )
    return rows


def answer_keyboard(
    interaction: Interaction, lang: str, *, selected: int | None = None
) -> InlineKeyboardMarkup:
    """👍 👎 🔄 (📚 when the answer cites the knowledge base), plus the assistant's option
    buttons (style, format, translation...)."""
    rows: Rows = [_rating_row(interaction.id or 0, selected)]
    if interaction.retrieved_chunk_ids:
        rows[0].append(
            InlineKeyboardButton(text="📚", callback_data=SourcesCb(iid=interaction.id or 0).pack())
        )
    assistant = ASSISTANTS.get(interaction.assistant)
    if assistant is not None and interaction.status == InteractionStatus.ok:
        rows.extend(_option_rows(assistant, interaction, lang))
    return InlineKeyboardMarkup(inline_keyboard=rows)


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


def assistant_keyboard(
    lang: str, current: str, disabled: list[str] | None = None
) -> InlineKeyboardMarkup:
    rows = []
    for assistant in ASSISTANTS.values():
        if assistant.name in (disabled or []):
            continue
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
