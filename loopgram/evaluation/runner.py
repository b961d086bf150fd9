"""Run an assistant over its evaluation set against a served model, then score it.

Each item is asked exactly as the bot would ask it (`Assistant.build_messages`, no history,
the item's options; the default label set for labeling), greedily (temperature 0) so a
run can be repeated. Moderation and labeling go through `complete_structured` with the
prompts' repair turn: an answer still invalid after it counts as wrong and as invalid.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from loopgram.assistants import Assistant, PromptContext, get_assistant
from loopgram.assistants.label import LabelResult, check_label_in, default_label_set
from loopgram.assistants.moderate import Verdict
from loopgram.assistants.structured import StructuredOutputError, complete_structured
from loopgram.embeddings import Embedder, get_embedder
from loopgram.errors import LoopgramError
from loopgram.evaluation.metrics import MAX_REWRITE_LENGTH, check_rewrite_length
from loopgram.evaluation.results import Answer, EvalResult, ItemRecord
from loopgram.evaluation.scoring import score
from loopgram.evaluation.sets import EVALUATED, EvalItem, EvalSet, load_set
from loopgram.llm import ChatMessage
from loopgram.settings import BotSettings

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (items done, items in all)

TEMPERATURE = 0.0
DEFAULT_LOW_CONFIDENCE = float(BotSettings.model_fields["low_confidence"].default)


class ChatCompleter(Protocol):
    """What the runner needs of a model: `LLMClient`, or the training gate's in-process one."""

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str | None = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
    ) -> str: ...


__all__ = ["ChatCompleter", "EvalResult", "ItemRecord", "Progress", "check_evaluated", "evaluate"]


def check_evaluated(assistant: str) -> None:
    """LoopgramError unless `assistant` has an evaluation set."""
    from loopgram.assistants import ASSISTANTS

    if assistant not in ASSISTANTS:
        raise LoopgramError(
            f"unknown assistant {assistant!r}: one of {', '.join(EVALUATED)} can be evaluated"
        )
    if assistant not in EVALUATED:
        raise LoopgramError(
            f"{assistant!r} has no evaluation set (free-form answers have no reference):"
            f" evaluate one of {', '.join(EVALUATED)}"
        )


def prompt_context(assistant: str) -> PromptContext:
    if assistant == "label":
        return PromptContext(labels=default_label_set().as_context())
    return PromptContext()


def _structured_schema(
    assistant: str, context: PromptContext
) -> tuple[type[BaseModel], Callable[[Any], None] | None]:
    if assistant == "moderate":
        return Verdict, None
    return LabelResult, check_label_in([name for name, _ in context.labels])


async def answer_item(
    helper: Assistant,
    item: EvalItem,
    *,
    llm: ChatCompleter,
    model: str,
    max_tokens: int | None,
) -> Answer:
    """The model's answer to one item, parsed and repaired once for structured assistants."""
    context = prompt_context(helper.name)
    messages = helper.build_messages(
        lang=item.lang, history=[], text=item.text, options=item.options, context=context
    )

    async def complete(conversation: Sequence[ChatMessage]) -> str:
        return await llm.complete(
            conversation,
            model=model,
            max_tokens=max_tokens or helper.max_tokens,
            temperature=TEMPERATURE,
        )

    if not helper.structured:
        return Answer(output=await complete(messages))
    schema, validate = _structured_schema(helper.name, context)
    options = helper.options(item.options)
    answer_lang = helper.answer_language(lang=item.lang, text=item.text, options=options)
    repair = str(helper._prompts(answer_lang)["repair"])
    try:
        result = await complete_structured(
            complete, messages, schema, repair_instruction=repair, validate=validate
        )
    except StructuredOutputError as exc:
        return Answer(output=str(exc.params.get("raw", "")), attempts=2, invalid=True)
    value = result.value
    if isinstance(value, Verdict):
        label, confidence = value.label.value, value.confidence
    elif isinstance(value, LabelResult):
        label, confidence = value.label, value.confidence
    else:  # pragma: no cover - _structured_schema only returns the two
        raise TypeError(f"unexpected answer type {type(value).__name__}")
    return Answer(output=result.raw, label=label, confidence=confidence, attempts=result.attempts)


async def evaluate(
    assistant: str,
    *,
    llm: ChatCompleter,
    model: str,
    eval_set: EvalSet | None = None,
    concurrency: int = 4,
    max_tokens: int | None = None,
    progress: Progress | None = None,
    adapter: str | None = None,
    embedder: Embedder | None = None,
    low_confidence: float = DEFAULT_LOW_CONFIDENCE,
    max_rewrite_length: float = MAX_REWRITE_LENGTH,
) -> EvalResult:
    """Ask `model` (the base model, or an adapter by its served name) every item of the
    set (default: the shipped set), `concurrency` at a time, and score the answers.

    `max_tokens` replaces the assistant's own answer cap; `max_rewrite_length` is the longest
    paraphrase (times its source) that still counts as ok. Model failures
    (ModelUnavailableError) end the run: a partial score would mislead."""
    check_evaluated(assistant)
    check_rewrite_length(max_rewrite_length)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    eval_set = eval_set if eval_set is not None else load_set(assistant)
    if eval_set.assistant != assistant:
        raise ValueError(f"the set is for {eval_set.assistant}, not {assistant}")
    helper = get_assistant(assistant)
    items = list(eval_set.items)
    started = time.monotonic()
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(item: EvalItem) -> Answer:
        nonlocal done
        async with gate:
            answer = await answer_item(helper, item, llm=llm, model=model, max_tokens=max_tokens)
        done += 1
        if progress is not None:
            progress(done, len(items))
        return answer

    if progress is not None:
        progress(0, len(items))
    tasks = [asyncio.create_task(one(item)) for item in items]
    try:
        answers = list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    used = embedder or get_embedder()
    records, metrics = await asyncio.to_thread(
        score,
        assistant,
        items,
        answers,
        embedder=used,
        low_confidence=low_confidence,
        max_rewrite_length=max_rewrite_length,
    )
    seconds = time.monotonic() - started
    log.info(
        "evaluation.done assistant=%s model=%s items=%s seconds=%.1f",
        assistant,
        model,
        len(items),
        seconds,
    )
    return EvalResult(
        assistant=assistant,
        model=model,
        adapter=adapter,
        metrics=metrics,
        items=records,
        embedder=used.name,
        seconds=seconds,
    )
