"""Paraphrase: rewrite a text in another style or language, keeping its meaning."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from loopgram.assistants.base import Assistant, OptionGroup, text_language

STYLE = OptionGroup("style", ("neutral", "formal", "friendly", "concise", "simpler"), "neutral")
# "same" keeps the language of the original; "en"/"ru" translate into it.
TARGET = OptionGroup("target", ("same", "en", "ru"), "same")


@dataclass(frozen=True)
class ParaphraseAssistant(Assistant):
    def answer_language(self, *, lang: str, text: str, options: Mapping[str, str]) -> str:
        target = options.get("target", "same")
        return target if target in ("en", "ru") else text_language(text, default=lang)


def paraphrase() -> ParaphraseAssistant:
    return ParaphraseAssistant("paraphrase", "✍️", option_groups=(STYLE, TARGET))
