"""Summarization: one line, a short summary, bullets, a detailed summary or key facts.

Texts beyond the model's context are summarized in parts first (see `long_text`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from loopgram.assistants.base import Assistant, OptionGroup, text_language

FORMAT = OptionGroup("format", ("short", "line", "bullets", "detailed", "facts"), "short")


@dataclass(frozen=True)
class SummarizeAssistant(Assistant):
    def answer_language(self, *, lang: str, text: str, options: Mapping[str, str]) -> str:
        return text_language(text, default=lang)


def summarize() -> SummarizeAssistant:
    return SummarizeAssistant("summarize", "📝", option_groups=(FORMAT,))
