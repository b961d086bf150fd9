"""Moderation of every message in groups that turned it on.

Each message gets a structured verdict, stored as an interaction of the moderation
assistant (so moderators' corrections train its adapter). The bot acts alone only when
the chat configured an action and the verdict is harmful with confidence at or above the
chat's threshold; harmful or unsure verdicts — and messages the model could not judge —
go to the moderators' review queue instead of being decided by the model alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from loopgram import crud, review
from loopgram.answering import AnswerService, Question
from loopgram.assistants.moderate import Verdict
from loopgram.assistants.structured import StructuredOutputError
from loopgram.errors import ModelUnavailableError
from loopgram.models import Chat, InteractionStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModerationOutcome:
    interaction_id: int | None
    verdict: Verdict | None  # None: the model could not give a valid verdict
    action: str  # what the bot does alone: none / warn / delete
    flagged: bool


def decide_action(chat: Chat, verdict: Verdict) -> str:
    if (
        verdict.harmful
        and verdict.confidence >= chat.moderation_threshold
        and chat.moderation_action in ("warn", "delete")
    ):
        return chat.moderation_action
    return "none"


def needs_review(verdict: Verdict, *, low_confidence: float) -> bool:
    return verdict.harmful or verdict.confidence < low_confidence


class GroupModerator:
    def __init__(self, answers: AnswerService) -> None:
        self.answers = answers

    @property
    def input_limit(self) -> int:
        """The longest text a verdict is asked for (MAX_INPUT_CHARS)."""
        return self.answers.settings.max_input_chars

    async def chat_if_enabled(self, chat_id: int, chat_type: str) -> Chat | None:
        chat = await self.answers.db.run(
            crud.get_or_create_chat, chat_id=chat_id, chat_type=chat_type
        )
        return chat if chat.moderation_enabled else None

    async def moderate(self, chat: Chat, question: Question) -> ModerationOutcome:
        prepared = await self.answers.prepare(replace(question, assistant="moderate"))
        try:
            answer, value = await self.answers.answer_structured(prepared)
        except (ModelUnavailableError, StructuredOutputError) as exc:
            # Nobody judged this message: keep it, and let a moderator look at it.
            failed = await self.answers.store(
                prepared,
                answer=str(exc.params.get("raw", "")),
                status=InteractionStatus.failed,
                error=str(exc),
            )
            await self._flag(failed.id, note=f"no verdict: {exc.key}")
            return ModerationOutcome(failed.id, None, "none", failed.id is not None)
        assert isinstance(value, Verdict)
        interaction = await self.answers.store(prepared, answer=answer)
        action = decide_action(chat, value)
        flagged = needs_review(value, low_confidence=self.answers.settings.low_confidence)
        if flagged:
            note = f"{value.label.value} {value.confidence:.2f}; bot action: {action}"
            await self._flag(interaction.id, note=note)
        log.info(
            "moderation.verdict interaction_id=%s chat_id=%s label=%s confidence=%.2f action=%s",
            interaction.id,
            chat.id,
            value.label.value,
            value.confidence,
            action,
        )
        return ModerationOutcome(interaction.id, value, action, flagged)

    async def _flag(self, interaction_id: int | None, *, note: str) -> None:
        if interaction_id is not None:
            await self.answers.db.run(
                review.flag, interaction_id=interaction_id, reason=review.MODERATION, note=note
            )
