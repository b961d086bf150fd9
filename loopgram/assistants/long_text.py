"""Summaries of texts beyond the model's context: map-reduce, hierarchical when needed.

Map: the text is cut at paragraph (then sentence) boundaries into parts that fit the
budget; each part becomes a short list of key points. Reduce: the notes, in order, are
summarized in the format the user chose. When the notes themselves exceed the budget they
are condensed again, level by level, so any length ends in one prompt that fits.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from loopgram.assistants.base import Assistant
from loopgram.llm import ChatMessage

log = logging.getLogger(__name__)

_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCES = re.compile(r"(?<=[.!?…])\s+")

Complete = Callable[[Sequence[ChatMessage]], Awaitable[str]]
Progress = Callable[[int, int], Awaitable[None]]

MAX_LEVELS = 4  # each level shrinks the notes several times; 4 covers any accepted size


def split_text(text: str, max_chars: int) -> list[str]:
    """Parts of at most `max_chars`, cut between paragraphs, else sentences, else words."""
    if max_chars < 50:
        raise ValueError("max_chars must be at least 50")
    pieces: list[str] = []
    for paragraph in _PARAGRAPHS.split(text.strip()):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= max_chars:
            pieces.append(paragraph)
            continue
        for sentence in _SENTENCES.split(paragraph):
            pieces.extend(_hard_cut(sentence, max_chars))
    parts: list[str] = []
    current = ""
    for piece in pieces:
        joined = f"{current}\n\n{piece}" if current else piece
        if len(joined) <= max_chars:
            current = joined
        else:
            parts.append(current)
            current = piece
    if current:
        parts.append(current)
    return parts


def _hard_cut(text: str, max_chars: int) -> list[str]:
    """Cut at the last white space (any kind) that keeps a piece within `max_chars`; only a
    single word longer than that is cut inside."""
    out: list[str] = []
    while len(text) > max_chars:
        window = text[: max_chars + 1]
        cut = max((window.rfind(ws) for ws in (" ", "\n", "\t", "\u00a0")), default=-1)
        cut = cut if cut > 0 else max_chars
        out.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        out.append(text)
    return out


@dataclass(frozen=True)
class LongTextPlan:
    parts: int
    levels: int
    calls: int


@dataclass
class _Counter:
    total: int
    progress: Progress | None
    done: int = 0

    async def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            await self.progress(self.done, self.total)


@dataclass
class LongTextSummarizer:
    """Turns a long text into the final (reduce) prompt; the caller streams its answer."""

    assistant: Assistant
    complete: Complete
    budget_chars: int
    concurrency: int = 4

    def needs_condensing(self, text: str) -> bool:
        return len(text) > self.budget_chars

    async def final_messages(
        self,
        text: str,
        *,
        lang: str,
        options: Mapping[str, str],
        progress: Progress | None = None,
    ) -> tuple[list[ChatMessage], LongTextPlan]:
        prompts = self.assistant._prompts(lang)
        values = self.assistant.options(options)
        fills = {
            name: prompts.get("options", {}).get(name, {}).get(value, "")
            for name, value in values.items()
        }
        parts = split_text(text, self.budget_chars)
        counter = _Counter(total=len(parts), progress=progress)
        limit = asyncio.Semaphore(self.concurrency)

        async def note(index: int, part: str, count: int) -> str:
            system = str(prompts["part"]).format(index=index, total=count)
            async with limit:
                result = await self.complete(
                    [{"role": "system", "content": system}, {"role": "user", "content": part}]
                )
            await counter.step()
            return result.strip()

        notes, levels, calls = parts, 0, 0
        while True:
            levels += 1
            notes = list(
                await asyncio.gather(
                    *(note(i, p, len(notes)) for i, p in enumerate(notes, start=1))
                )
            )
            calls += len(notes)
            combined = "\n\n".join(notes)
            if len(combined) <= self.budget_chars:
                break
            if levels >= MAX_LEVELS:
                log.warning("summary.notes_truncated chars=%s", len(combined))
                break
            notes = split_text(combined, self.budget_chars)
            counter.total += len(notes)
        system = str(prompts["combine"]).format(**fills).strip()
        messages: list[ChatMessage] = [
            {"role": "system", "content": system},
            {"role": "user", "content": combined[: self.budget_chars]},
        ]
        return messages, LongTextPlan(parts=len(parts), levels=levels, calls=calls)
