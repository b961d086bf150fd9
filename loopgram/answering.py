"""Answering one message: pick the assistant, build the prompt with history, call the model,
store the interaction. Telegram-free: the bot streams the deltas to the user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlmodel import Session

from loopgram import crud
from loopgram.assistants import Assistant, get_assistant
from loopgram.db import Database
from loopgram.errors import InputTooLongError
from loopgram.llm import ChatMessage, LLMClient
from loopgram.models import Interaction, InteractionStatus
from loopgram.routing import AdapterRouter
from loopgram.settings import BotSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Question:
    chat_id: int
    chat_type: str
    user_id: int
    lang: str
    text: str
    message_thread_id: int | None = None
    request_message_id: int | None = None
    parent_interaction_id: int | None = None


@dataclass
class PreparedAnswer:
    question: Question
    assistant: Assistant
    messages: list[ChatMessage]
    model: str
    adapter: str | None
    started: float = field(default_factory=time.monotonic)


class AnswerService:
    def __init__(
        self,
        *,
        db: Database,
        llm: LLMClient,
        settings: BotSettings,
        router: AdapterRouter | None = None,
    ) -> None:
        self.db = db
        self.llm = llm
        self.settings = settings
        self.router = router or AdapterRouter(base_model=llm.default_model, canary_share=0.0)

    async def prepare(self, question: Question) -> PreparedAnswer:
        text = question.text.strip()
        if len(text) > self.settings.max_input_chars:
            raise InputTooLongError(
                "input too long", length=len(text), limit=self.settings.max_input_chars
            )
        return await self.db.run(self._prepare, question=question)

    def _prepare(self, *, session: Session, question: Question) -> PreparedAnswer:
        chat = crud.get_or_create_chat(
            session=session, chat_id=question.chat_id, chat_type=question.chat_type
        )
        assistant = get_assistant(chat.assistant)
        history = crud.recent_turns(
            session=session,
            chat_id=question.chat_id,
            message_thread_id=question.message_thread_id,
            since=chat.history_reset_at,
            limit=self.settings.history_turns,
            before_id=question.parent_interaction_id,
        )
        messages = assistant.build_messages(lang=question.lang, history=history, text=question.text)
        route = self.router.route(
            session=session, assistant=assistant.name, user_id=question.user_id
        )
        return PreparedAnswer(question, assistant, messages, route.model, route.adapter)

    def stream(self, prepared: PreparedAnswer) -> AsyncIterator[str]:
        return self.llm.stream_chat(prepared.messages, model=prepared.model)

    async def store(
        self,
        prepared: PreparedAnswer,
        *,
        answer: str,
        status: InteractionStatus = InteractionStatus.ok,
        error: str | None = None,
        message_ids: list[int] | None = None,
    ) -> Interaction:
        q = prepared.question
        interaction = Interaction(
            chat_id=q.chat_id,
            user_id=q.user_id,
            message_thread_id=q.message_thread_id,
            assistant=prepared.assistant.name,
            prompt=q.text,
            prompt_messages=prepared.messages,
            answer=answer,
            model=prepared.model,
            adapter=prepared.adapter,
            latency_ms=int((time.monotonic() - prepared.started) * 1000),
            status=status,
            error=error[:500] if error else None,
            telegram_message_ids=message_ids or [],
            telegram_message_id=message_ids[-1] if message_ids else None,
            request_message_id=q.request_message_id,
            parent_interaction_id=q.parent_interaction_id,
        )
        stored = await self.db.run(crud.add_interaction, interaction=interaction)
        log.info(
            "interaction.stored interaction_id=%s chat_id=%s assistant=%s status=%s latency_ms=%s",
            stored.id,
            q.chat_id,
            prepared.assistant.name,
            status.value,
            stored.latency_ms,
        )
        return stored

    async def attach_messages(self, interaction: Interaction, message_ids: list[int]) -> None:
        interaction.telegram_message_ids = message_ids
        interaction.telegram_message_id = message_ids[-1] if message_ids else None
        await self.db.run(crud.update_interaction, interaction=interaction)

    @staticmethod
    def question_for_regenerate(
        original: Interaction, *, user_id: int, lang: str, chat_type: str
    ) -> Question:
        """The same prompt again, as a sibling of the original answer (🔄), or afresh when
        the original failed (retry)."""
        root = original.parent_interaction_id or original.id
        return Question(
            chat_id=original.chat_id,
            chat_type=chat_type,
            user_id=user_id,
            lang=lang,
            text=original.prompt,
            message_thread_id=original.message_thread_id,
            request_message_id=original.request_message_id,
            parent_interaction_id=root if original.status == InteractionStatus.ok else None,
        )
