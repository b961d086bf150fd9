"""Retrieved chunks in the prompt: numbered, delimited, marked as data, within a budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from loopgram.llm import ChatMessage
from loopgram.rag.injection import sanitize_for_prompt
from loopgram.rag.types import Hit

PROMPTS = Path(__file__).with_name("prompts.yaml")
CONTEXT_CHARS = 3000  # the built-in model's context is small; a served model can take more


@cache
def _texts(lang: str) -> dict[str, Any]:
    data = yaml.safe_load(PROMPTS.read_text(encoding="utf-8"))
    return dict(data.get(lang) or data["en"])


def cite(hit: Hit) -> str:
    """`handbook.pdf, p. 3, Refunds` — how a source is named in the prompt and to users."""
    parts = [hit.document]
    if hit.page:
        parts.append(f"p. {hit.page}")
    if hit.section:
        parts.append(hit.section)
    return ", ".join(parts)


def fit(hits: Sequence[Hit], budget: int = CONTEXT_CHARS) -> list[Hit]:
    """The best hits whose text fits the budget (the last one may be cut, never skipped)."""
    kept: list[Hit] = []
    used = 0
    for hit in hits:
        room = budget - used
        if room < 200:
            break
        text = hit.text if len(hit.text) <= room else hit.text[:room].rsplit(" ", 1)[0] + " …"
        kept.append(replace(hit, text=text))
        used += len(text)
    return kept


def sources_block(hits: Sequence[Hit]) -> str:
    lines = ["<sources>"]
    for number, hit in enumerate(hits, start=1):
        title = sanitize_for_prompt(cite(hit)).replace('"', "'")
        status = ' status="archived"' if hit.archived else ""
        lines.append(f'<source id="{number}" title="{title}"{status}>')
        lines.append(sanitize_for_prompt(hit.text))
        lines.append("</source>")
    lines.append("</sources>")
    return "\n".join(lines)


def grounding_message(hits: Sequence[Hit], lang: str) -> ChatMessage:
    """The system message that carries the sources (or says there are none)."""
    texts = _texts(lang)
    if not hits:
        return {"role": "system", "content": str(texts["no_sources"]).strip()}
    return {
        "role": "system",
        "content": str(texts["rules"]).strip() + "\n\n" + sources_block(hits),
    }


def with_grounding(messages: list[ChatMessage], message: ChatMessage) -> list[ChatMessage]:
    """Put the grounding right after the assistant's system prompt (and its examples come
    after, so the model reads rules → sources → conversation)."""
    return [messages[0], message, *messages[1:]]
