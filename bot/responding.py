"""Answer a question in a chat: typing, stream, final message with buttons, store it."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from contextlib import aclosing
from dataclasses import dataclass, field

from aiogram import Bot
from aiogram.enums import ChatAction
from aiogram.exceptions import TelegramAPIError
from aiogram.types import ReplyParameters
from aiogram.utils.chat_action import ChatActionSender

from bot.keyboards import answer_keyboard, retry_keyboard
from bot.ordering import ChatOrder
from bot.streaming import AnswerStreamer, DraftSupport
from bot.throttling import ModelQueue, UserThrottle
from loopgram.answering import AnswerService, Question
from loopgram.assistants.structured import StructuredOutputError
from loopgram.best_of_n import BestOfNResult
from loopgram.errors import ModelUnavailableError
from loopgram.i18n import t
from loopgram.models import InteractionStatus
from loopgram.security.leak_guard import AnswerWithheldError, LeakGuard

log = logging.getLogger(__name__)


@dataclass
class ChatLocks:
    """One answer at a time per chat, so answers arrive in the order questions were asked."""

    _locks: weakref.WeakValueDictionary[int, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary
    )

    def get(self, chat_id: int) -> asyncio.Lock:
        lock = self._locks.get(chat_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[chat_id] = lock
        return lock


@dataclass
class Responder:
    answers: AnswerService
    stream_interval: float
    drafts: DraftSupport = field(default_factory=DraftSupport)
    locks: ChatLocks = field(default_factory=ChatLocks)
    throttle: UserThrottle | None = None
    queue: ModelQueue = field(default_factory=lambda: ModelQueue(0))
    order: ChatOrder | None = None
    _draft_seq: int = 0

    async def respond(self, bot: Bot, question: Question) -> int | None:
        """Answer and return the stored interaction id (None when the model failed or the
        user asked too often)."""
        if self.order is not None:  # earlier questions of the chat first (and in its history)
            await self.order.wait_turn(question.chat_id, question.request_message_id)
        if self.throttle is not None:  # after the turn: a person's first questions count first
            wait = await self.throttle.check(bot.id, question.user_id)
            if wait > 0:
                await self._refuse(bot, question, wait)
                return None
        prepared = await self.answers.prepare(question)
        self._draft_seq += 1
        streamer = AnswerStreamer(
            bot,
            chat_id=question.chat_id,
            chat_type=question.chat_type,
            message_thread_id=question.message_thread_id,
            reply_to=question.request_message_id,
            interval=self.stream_interval,
            drafts=self.drafts,
            draft_id=self._draft_seq,
        )
        lang = question.lang
        async with self.locks.get(question.chat_id):
            text = ""
            picked: BestOfNResult | None = None
            try:
                async with (
                    self.queue.turn(_QueueNotice(streamer, lang)),
                    ChatActionSender(
                        bot=bot,
                        chat_id=question.chat_id,
                        message_thread_id=question.message_thread_id,
                        action=ChatAction.TYPING,
                    ),
                ):
                    if self.answers.needs_condensing(prepared):
                        await self.answers.condense(prepared, _ProgressMessage(streamer, lang))
                    guard = LeakGuard.for_messages(prepared.messages)
                    if prepared.assistant.structured:
                        text, _ = await self.answers.answer_structured(prepared)
                    elif prepared.best_of_n is not None:
                        # Nothing streams: a draft of a candidate that then loses would show.
                        await streamer.notice(t(lang, "best-of-n-progress", n=prepared.best_of_n.n))
                        picked = await self.answers.answer_best_of_n(
                            prepared, lambda candidate: not guard.leaks(candidate)
                        )
                        text = picked.text
                    else:
                        async with aclosing(self.answers.stream(prepared)) as deltas:
                            async for delta in deltas:
                                text += delta
                                if guard.leaks_so_far(text):
                                    break  # closing the stream stops the generation
                                await streamer.push(text)
                if not text.strip():
                    raise ModelUnavailableError("empty answer", key="error-model-empty")
                if guard.leaks(text):
                    raise AnswerWithheldError("the answer repeated the bot's instructions")
            except (ModelUnavailableError, StructuredOutputError, AnswerWithheldError) as exc:
                failed = await self.answers.store(
                    prepared,
                    answer=text or str(exc.params.get("raw", "")),
                    status=InteractionStatus.failed,
                    error=str(exc),
                )
                # Unstored (forgotten meanwhile): nothing for a button to point at.
                retry = retry_keyboard(failed.id, lang) if failed.id is not None else None
                message_id = await streamer.send_plain(t(lang, exc.key), retry)
                await self.answers.attach_messages(failed, [message_id])
                return None
            interaction = await self.answers.store(prepared, answer=text, best_of_n=picked)
            shown = prepared.assistant.render(text, lang=lang)
            if prepared.knowledge_down:
                shown += "\n\n" + t(lang, "kb-unavailable-note")
            # Unstored (forgotten meanwhile): the answer is sent without buttons to rate it.
            keyboard = answer_keyboard(interaction, lang) if interaction.id is not None else None
            ids = await streamer.finish(shown, keyboard)
            await self.answers.attach_messages(interaction, ids)
            await self.answers.after_answer(interaction)
            log.info(
                "answer.sent interaction_id=%s chat_id=%s parts=%s stream_updates=%s",
                interaction.id,
                question.chat_id,
                len(ids),
                streamer.updates,
            )
            return interaction.id

    async def _refuse(self, bot: Bot, question: Question, wait: float) -> None:
        log.info(
            "answer.throttled user_id=%s chat_id=%s wait=%.1f",
            question.user_id,
            question.chat_id,
            wait,
        )
        assert self.throttle is not None
        if not self.throttle.should_tell(question.user_id, wait):
            return
        reply = None
        if question.request_message_id is not None:
            reply = ReplyParameters(
                message_id=question.request_message_id, allow_sending_without_reply=True
            )
        try:
            await bot.send_message(
                question.chat_id,
                t(question.lang, "limits-user-throttled", seconds=max(1, round(wait))),
                message_thread_id=question.message_thread_id,
                reply_parameters=reply,
            )
        except TelegramAPIError as exc:
            log.info("answer.throttle_notice_failed chat_id=%s error=%s", question.chat_id, exc)


@dataclass
class _QueueNotice:
    """'⏳ You are #3 in line', shown where the answer will appear."""

    streamer: AnswerStreamer
    lang: str

    async def __call__(self, position: int) -> None:
        await self.streamer.notice(t(self.lang, "limits-queue-position", position=position))


@dataclass
class _ProgressMessage:
    """'Reading part 3 of 7…' in the message that the answer will then replace."""

    streamer: AnswerStreamer
    lang: str
    min_interval: float = 2.0
    _last: float = 0.0

    async def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self.min_interval:
            return
        self._last = now
        text = t(self.lang, "summary-progress", done=done, total=total)
        try:
            self.streamer.stream_message_id = await self.streamer.send_plain(text, None)
        except TelegramAPIError as exc:  # progress is a courtesy; the answer still comes
            log.info("summary.progress_failed error=%s", exc)
