"""How a review item looks in Telegram: the card text and its buttons."""

from __future__ import annotations

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.callbacks import ReviewAction, ReviewCb
from loopgram.i18n import t
from loopgram.review import Card

PROMPT_CHARS = 900
ANSWER_CHARS = 1800


def _cut(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def card_text(card: Card, lang: str) -> str:
    item, interaction = card.item, card.interaction
    lines = [
        t(
            lang,
            "review-card-title",
            id=item.id or 0,
            assistant=item.assistant or "?",
            reason=t(lang, f"review-reason-{item.reason}"),
        )
    ]
    if interaction is None:
        lines.append(t(lang, "review-card-gone"))
        return "\n".join(lines)
    lines.append(t(lang, "review-card-prompt", text=_cut(interaction.prompt, PROMPT_CHARS)))
    answer = interaction.answer or t(lang, "review-card-no-answer")
    lines.append(t(lang, "review-card-answer", text=_cut(answer, ANSWER_CHARS)))
    if card.user_reason or card.user_comment:
        lines.append(
            t(
                lang,
                "review-card-user",
                reason=t(lang, f"reason-{card.user_reason}") if card.user_reason else "—",
                comment=_cut(card.user_comment or "—", 400),
            )
        )
    if item.note:
        lines.append(t(lang, "review-card-note", note=item.note))
    if interaction.adapter:
        lines.append(t(lang, "review-card-adapter", adapter=interaction.adapter))
    if card.sources:
        lines.append(t(lang, "review-card-sources", sources=", ".join(card.sources)))
    if card.labels:
        lines.append(t(lang, "review-card-labels", labels=", ".join(card.labels)))
    return "\n".join(lines)


def decided_text(card: Card, lang: str, *, by: str) -> str:
    item = card.item
    status = t(lang, f"review-status-{item.status}")
    text = card_text(card, lang) + "\n\n" + t(lang, "review-card-decided", status=status, by=by)
    if item.correction:
        text += "\n" + t(lang, "review-card-correction", text=_cut(item.correction, 1000))
    return text


def card_keyboard(item_id: int, lang: str) -> InlineKeyboardMarkup:
    def button(action: ReviewAction, key: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(
            text=t(lang, key), callback_data=ReviewCb(item=item_id, action=action).pack()
        )

    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                button(ReviewAction.approve, "review-button-approve"),
                button(ReviewAction.reject, "review-button-reject"),
            ],
            [
                button(ReviewAction.correct, "review-button-correct"),
                button(ReviewAction.skip, "review-button-skip"),
            ],
        ]
    )
