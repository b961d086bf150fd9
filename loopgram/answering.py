"""Answering one message: pick the assistant, build the prompt with history, call the model,
store the interaction. Telegram-free: the bot streams the deltas to the user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from sqlmodel import Session

from loopgram import crud, labeling, metrics, review
from loopgram.assistants import Assistant, PromptContext, get_assistant
from loopgram.assistants.label import LabelResult, check_label_in
from loopgram.assistants.long_text import LongTextSummarizer, Progress
from loopgram.assistants.moderate import Verdict
from loopgram.assistants.structured import InvalidOutput, complete_structured, parse_structured
from loopgram.best_of_n import BestOfN, BestOfNPlan, BestOfNResult, add_interaction_with_candidates
from loopgram.db import Database
from loopgram.errors import InputTooLongError, ModelNotServedError
from loopgram.llm import ChatMessage, LLMClient
from loopgram.logging_setup import bind_log_context
from loopgram.models import Interaction, InteractionStatus, utcnow
from loopgram.privacy import end_user_id, forgotten_since
from loopgram.rag import prompt as rag_prompt
from loopgram.rag.types import Retrieval
from loopgram.routing import AdapterRouter, Route
from loopgram.settings import BotSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    # Set by 🔄 and option buttons: answer with this assistant and these options instead of
    # the chat's current choice (the user is asking about an earlier answer).
    assistant: str | None = None
    options: dict[str, str] | None = None
    from_document: bool = False


@dataclass
class PreparedAnswer:
    question: Question
    assistant: Assistant
    messages: list[ChatMessage]
    model: str
    adapter: str | None
    options: dict[str, str] = field(default_factory=dict)
    context: PromptContext = field(default_factory=PromptContext)
    label_set_id: int | None = None
    retrieved: list[str] = field(default_factory=list)  # chunk ids the answer is grounded on
    knowledge_down: bool = False
    best_of_n: BestOfNPlan | None = None  # set when this answer is picked from n candidates
    started: float = field(default_factory=time.monotonic)
    # Wall-clock time of the question: a /forget after it means the answer is not stored.
    asked_at: datetime = field(default_factory=utcnow)

    @property
    def answer_lang(self) -> str:
        return self.assistant.answer_language(
            lang=self.question.lang, text=self.question.text, options=self.options
        )


class ExampleSource(Protocol):
    """Adds few-shot examples picked for this item (labeling: nearest confirmed labels)."""

    async def attach(self, prepared: PreparedAnswer) -> PreparedAnswer: ...


class KnowledgeSource(Protocol):
    """The knowledge base as answering sees it (loopgram.rag.retrieve.AsyncRetriever)."""

    async def retrieve(self, query: str, *, assistant: str, chat_id: int) -> Retrieval: ...


def add_answer_unless_forgotten(
    *,
    session: Session,
    interaction: Interaction,
    asked_at: datetime,
    best_of_n: BestOfNResult | None,
) -> Interaction | None:
    """Store an answer (with its best-of-n candidates), unless its asker's data was
    forgotten since the question was asked: checked in the storing transaction itself."""
    if forgotten_since(session=session, user_id=interaction.user_id, since=asked_at):
        return None
    if best_of_n is not None:
        return add_interaction_with_candidates(
            session=session, interaction=interaction, result=best_of_n
        )
    return crud.add_interaction(session=session, interaction=interaction)


class AnswerService:
    def __init__(
        self,
        *,
        db: Database,
        llm: LLMClient,
        settings: BotSettings,
        router: AdapterRouter | None = None,
        examples: ExampleSource | None = None,
        knowledge: KnowledgeSource | None = None,
        best_of_n: BestOfN | None = None,
        end_user_key: bytes = b"",
    ) -> None:
        self.db = db
        self.llm = llm
        self.settings = settings
        self.end_user_key = end_user_key  # see end_user
        self.router = router or AdapterRouter(base_model=llm.default_model, canary_share=0.0)
        self.examples = examples
        self.knowledge = knowledge
        self.best_of_n = best_of_n

    async def prepare(self, question: Question) -> PreparedAnswer:
        prepared = await self.db.run_grouped(self._prepare, question=question)
        if prepared.assistant.name == "label" and self.examples is not None:
            prepared = await self.examples.attach(prepared)
        if prepared.assistant.uses_knowledge and self.knowledge is not None:
            await self._ground(prepared, self.knowledge)
        return prepared

    async def _ground(self, prepared: PreparedAnswer, knowledge: KnowledgeSource) -> None:
        q = prepared.question
        retrieval = await knowledge.retrieve(
            q.text.strip(), assistant=prepared.assistant.name, chat_id=q.chat_id
        )
        prepared.knowledge_down = not retrieval.available
        if not retrieval.searched:
            return
        hits = rag_prompt.fit(retrieval.hits)
        grounding = rag_prompt.grounding_message(hits, prepared.answer_lang)
        prepared.messages = rag_prompt.with_grounding(prepared.messages, grounding)
        prepared.retrieved = [hit.chunk_id for hit in hits]

    def input_limit(self, assistant: Assistant, *, from_document: bool) -> int:
        """Long documents are for summaries only (read in parts); the rest must fit."""
        if assistant.name == "summarize":
            return self.settings.max_document_chars
        if from_document:
            return max(self.settings.max_input_chars, self.settings.summary_part_chars)
        return self.settings.max_input_chars

    def _prepare(self, *, session: Session, question: Question) -> PreparedAnswer:
        chat = crud.get_or_create_chat(
            session=session, chat_id=question.chat_id, chat_type=question.chat_type
        )
        assistant = get_assistant(question.assistant or chat.assistant)
        text = question.text.strip()
        limit = self.input_limit(assistant, from_document=question.from_document)
        if len(text) > limit:
            raise InputTooLongError("input too long", length=len(text), limit=limit)
        options = assistant.options(
            {**(chat.assistant_options or {}).get(assistant.name, {}), **(question.options or {})}
        )
        history = crud.recent_turns(
            session=session,
            chat_id=question.chat_id,
            message_thread_id=question.message_thread_id,
            since=chat.history_reset_at,
            limit=self.settings.history_turns if assistant.uses_history else 0,
            before_id=question.parent_interaction_id,
            assistant=assistant.name,
        )
        context = PromptContext()
        label_set_id = None
        if assistant.name == "label":
            label_set, spec = labeling.chat_label_set(session=session, chat=chat)
            label_set_id = label_set.id if label_set else None
            context = PromptContext(labels=spec.as_context())
        messages = assistant.build_messages(
            lang=question.lang, history=history, text=text, options=options, context=context
        )
        route = self.router.route(
            session=session, assistant=assistant.name, user_id=question.user_id
        )
        plan = None
        if self.best_of_n is not None:
            plan = self.best_of_n.plan(
                session=session, assistant=assistant.name, structured=assistant.structured
            )
        return PreparedAnswer(
            question,
            assistant,
            messages,
            route.model,
            route.adapter,
            options=options,
            context=context,
            label_set_id=label_set_id,
            best_of_n=plan,
        )

    def end_user(self, prepared: PreparedAnswer) -> str:
        """The asker's pseudonym for the model server (OpenAI's `user` field)."""
        return end_user_id(self.end_user_key, prepared.question.user_id)

    async def stream(self, prepared: PreparedAnswer) -> AsyncGenerator[str, None]:
        """The answer's deltas; re-routed once if its adapter is gone before the first one."""
        for attempt in (1, 2):
            started = False
            try:
                async for delta in self.llm.stream_chat(
                    prepared.messages,
                    model=prepared.model,
                    max_tokens=prepared.assistant.max_tokens,
                    user=self.end_user(prepared),
                ):
                    started = True
                    yield delta
                return
            except ModelNotServedError:
                if started or attempt == 2 or not await self._reroute(prepared):
                    raise

    async def _rerouted(self, prepared: PreparedAnswer, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` (which reads `prepared.model`), once more after a re-route if the model
        server no longer serves the adapter the answer was routed to."""
        try:
            return await call()
        except ModelNotServedError:
            if not await self._reroute(prepared):
                raise
            return await call()

    async def _reroute(self, prepared: PreparedAnswer) -> bool:
        """The adapter this answer was routed to is not served any more: a canary rolled back
        or an adapter unloaded between the (cached) routing and the request. Route again from
        a fresh read of the registry; if that still names the missing adapter, answer with the
        base model rather than not at all. False when there is nowhere else to go."""
        if prepared.adapter is None:
            return False
        self.router.invalidate()
        route = await self.db.run(
            self.router.route,
            assistant=prepared.assistant.name,
            user_id=prepared.question.user_id,
        )
        if route.model == prepared.model:
            route = Route(self.router.base_model, None)
        log.warning("answer.rerouted missing=%s to=%s", prepared.model, route.model)
        metrics.ANSWER_REROUTES.labels(assistant=prepared.assistant.name).inc()
        prepared.model, prepared.adapter = route.model, route.adapter
        return True

    async def answer_best_of_n(
        self, prepared: PreparedAnswer, acceptable: Callable[[str], bool]
    ) -> BestOfNResult:
        """The answer picked from `prepared.best_of_n.n` candidates (see loopgram.best_of_n);
        `acceptable` rules candidates out (e.g. one that leaks the instructions)."""
        service, plan = self.best_of_n, prepared.best_of_n
        assert service is not None and plan is not None
        return await self._rerouted(
            prepared,
            lambda: service.run(
                plan,
                messages=prepared.messages,
                model=prepared.model,
                max_tokens=prepared.assistant.max_tokens,
                assistant=prepared.assistant.name,
                acceptable=acceptable,
                user=self.end_user(prepared),
            ),
        )

    async def complete(self, prepared: PreparedAnswer, messages: Sequence[ChatMessage]) -> str:
        return await self._rerouted(
            prepared,
            lambda: self.llm.complete(
                messages,
                model=prepared.model,
                max_tokens=prepared.assistant.max_tokens,
                user=self.end_user(prepared),
            ),
        )

    def needs_condensing(self, prepared: PreparedAnswer) -> bool:
        return prepared.assistant.name == "summarize" and (
            len(prepared.question.text) > self.settings.summary_part_chars
        )

    async def condense(self, prepared: PreparedAnswer, progress: Progress | None = None) -> None:
        """Read a long text in parts (map), so the final prompt (reduce) fits the model."""
        summarizer = LongTextSummarizer(
            prepared.assistant,
            complete=lambda messages: self._rerouted(
                prepared,
                lambda: self.llm.complete(
                    messages, model=prepared.model, user=self.end_user(prepared)
                ),
            ),
            budget_chars=self.settings.summary_part_chars,
        )
        messages, plan = await summarizer.final_messages(
            prepared.question.text.strip(),
            lang=prepared.answer_lang,
            options=prepared.options,
            progress=progress,
        )
        prepared.messages = messages
        log.info(
            "summary.condensed parts=%s levels=%s calls=%s chars=%s",
            plan.parts,
            plan.levels,
            plan.calls,
            len(prepared.question.text),
        )

    async def answer_structured(self, prepared: PreparedAnswer) -> tuple[str, BaseModel]:
        """The canonical JSON answer and its parsed value; StructuredOutputError after one
        failed repair turn."""
        schema: type[BaseModel]
        validate: Callable[[Any], None] | None = None
        if prepared.assistant.name == "moderate":
            schema = Verdict
        else:
            schema = LabelResult
            validate = check_label_in([name for name, _ in prepared.context.labels])
        repair = str(prepared.assistant._prompts(prepared.answer_lang)["repair"])
        result = await complete_structured(
            lambda messages: self.complete(prepared, messages),
            prepared.messages,
            schema,
            repair_instruction=repair,
            validate=validate,
        )
        value = result.value
        canonical = value.canonical() if isinstance(value, Verdict | LabelResult) else result.raw
        return canonical, value

    async def store(
        self,
        prepared: PreparedAnswer,
        *,
        answer: str,
        status: InteractionStatus = InteractionStatus.ok,
        error: str | None = None,
        message_ids: list[int] | None = None,
        best_of_n: BestOfNResult | None = None,
    ) -> Interaction:
        """Store the answer; with `best_of_n` (an answered one), its candidates and pair in
        the same transaction. Not stored (the interaction returned has no id) when the asker
        has said /forget since the question was asked."""
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
            options=prepared.options,
            label_set_id=prepared.label_set_id,
            retrieved_chunk_ids=prepared.retrieved,
        )
        stored = await self.db.run_grouped(
            add_answer_unless_forgotten,
            interaction=interaction,
            asked_at=prepared.asked_at,
            best_of_n=best_of_n if status == InteractionStatus.ok else None,
        )
        if stored is None:
            # The person said /forget while this was being answered: it is sent (they asked)
            # but not kept. The caller sees an unstored interaction (no id).
            log.info(
                "interaction.not_stored_forgotten chat_id=%s assistant=%s status=%s",
                q.chat_id,
                prepared.assistant.name,
                status.value,
            )
            return interaction
        bind_log_context(interaction_id=stored.id)  # the rest of this answer's log lines
        metrics.ANSWERS.labels(assistant=prepared.assistant.name, status=status.value).inc()
        metrics.ANSWER_SECONDS.labels(assistant=prepared.assistant.name).observe(
            (stored.latency_ms or 0) / 1000
        )
        log.info(
            "interaction.stored interaction_id=%s chat_id=%s assistant=%s status=%s latency_ms=%s",
            stored.id,
            q.chat_id,
            prepared.assistant.name,
            status.value,
            stored.latency_ms,
        )
        return stored

    async def after_answer(self, interaction: Interaction) -> None:
        """A label the model is unsure of goes to the human review queue."""
        if interaction.assistant != "label" or interaction.id is None:
            return
        try:
            result = parse_structured(interaction.answer, LabelResult)
        except InvalidOutput:
            return
        if result.confidence < self.settings.low_confidence:
            await self.db.run(
                review.flag,
                interaction_id=interaction.id,
                reason=review.LOW_CONFIDENCE,
                note=f"{result.label} {result.confidence:.2f}",
            )

    async def attach_messages(self, interaction: Interaction, message_ids: list[int]) -> None:
        interaction.telegram_message_ids = message_ids
        interaction.telegram_message_id = message_ids[-1] if message_ids else None
        if interaction.id is None:  # never stored: nothing to point at the messages
            return
        await self.db.run_grouped(
            crud.set_interaction_messages, interaction_id=interaction.id, message_ids=message_ids
        )

    @staticmethod
    def question_for_regenerate(
        original: Interaction, *, user_id: int, lang: str, chat_type: str
    ) -> Question:
        """The same prompt again, as a sibling of the original answer (🔄), or afresh when
        the original failed (retry)."""
        root = original.parent_interaction_id or original.id
        return Question(
            assistant=original.assistant,
            options=dict(original.options or {}),
            chat_id=original.chat_id,
            chat_type=chat_type,
            user_id=user_id,
            lang=lang,
            text=original.prompt,
            message_thread_id=original.message_thread_id,
            request_message_id=original.request_message_id,
            parent_interaction_id=root if original.status == InteractionStatus.ok else None,
        )
