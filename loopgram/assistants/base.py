"""What every assistant shares: prompt files, options, and the message layout.

An assistant's prompts live in `prompts/<name>.yaml`: a system prompt per language (with
`{placeholders}` that options fill in), option texts, and a few short examples that show
the model the expected output (few-shot). Prompts are written in the language the model
should answer in, and they name that language explicitly, because small models drift to
English otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from loopgram.i18n import t
from loopgram.llm import ChatMessage

PROMPTS_DIR = Path(__file__).parent / "prompts"
PROMPT_LANGUAGES = ("en", "ru")

_CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
_LATIN = re.compile(r"[a-z]", re.IGNORECASE)


def text_language(text: str, default: str = "en") -> str:
    """`ru` when Cyrillic letters dominate the text, `en` when Latin ones do."""
    cyrillic = len(_CYRILLIC.findall(text))
    latin = len(_LATIN.findall(text))
    if cyrillic == latin == 0:
        return default if default in PROMPT_LANGUAGES else "en"
    return "ru" if cyrillic >= latin else "en"


@dataclass(frozen=True)
class OptionGroup:
    """A set of mutually exclusive choices (a row of buttons), e.g. a paraphrase's style."""

    name: str
    choices: tuple[str, ...]
    default: str

    def pick(self, value: str | None) -> str:
        return value if value in self.choices else self.default


@cache
def load_prompts(name: str) -> dict[str, Any]:
    path = PROMPTS_DIR / f"{name}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    return data


@dataclass(frozen=True)
class Example:
    user: str
    assistant: str


@dataclass(frozen=True)
class PromptContext:
    """Per-request material beyond the text: a label set, examples picked for this item."""

    labels: tuple[tuple[str, str], ...] = ()  # (name, description)
    examples: tuple[Example, ...] = ()


@dataclass(frozen=True)
class Assistant:
    """A text-in, text-out assistant with a system prompt, options and few-shot examples.

    Subclasses change how the user's text is framed (`user_content`), what language the
    answer is in (`answer_language`), and, for structured answers, how the reply is parsed.
    """

    name: str
    emoji: str
    uses_history: bool = False
    uses_knowledge: bool = False  # answers grounded in the knowledge base (with citations)
    option_groups: tuple[OptionGroup, ...] = ()
    structured: bool = False
    max_tokens: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    # --- texts a user sees (locale files) ---
    def title(self, lang: str) -> str:
        return t(lang, f"assistant-{self.name}-title")

    def description(self, lang: str) -> str:
        return t(lang, f"assistant-{self.name}-description")

    # --- options ---
    def options(self, chosen: Mapping[str, str] | None) -> dict[str, str]:
        """Every option group's value: the chosen one when valid, else the default."""
        chosen = chosen or {}
        return {group.name: group.pick(chosen.get(group.name)) for group in self.option_groups}

    def option_group(self, name: str) -> OptionGroup | None:
        return next((g for g in self.option_groups if g.name == name), None)

    # --- prompt ---
    def answer_language(self, *, lang: str, text: str, options: Mapping[str, str]) -> str:
        """The language the answer must be in; by default the user's interface language."""
        return lang if lang in PROMPT_LANGUAGES else "en"

    def _prompts(self, lang: str) -> dict[str, Any]:
        data = load_prompts(self.name)
        return dict(data.get(lang) or data["en"])

    def system_prompt(
        self,
        lang: str,
        options: Mapping[str, str] | None = None,
        context: PromptContext | None = None,
    ) -> str:
        prompts = self._prompts(lang)
        values = self.options(options)
        texts = prompts.get("options", {})
        fills = {name: texts.get(name, {}).get(value, "") for name, value in values.items()}
        fills.update(self.prompt_fills(context or PromptContext()))
        return str(prompts["system"]).format(**fills).strip()

    def prompt_fills(self, context: PromptContext) -> dict[str, str]:
        """Extra `{placeholders}` of the system prompt that come from the request context."""
        return {}

    def shipped_examples(self, lang: str) -> list[Example]:
        raw = self._prompts(lang).get("examples") or []
        return [Example(str(e["user"]), str(e["assistant"]).strip()) for e in raw]

    def examples(self, lang: str, context: PromptContext) -> list[Example]:
        """Few-shot examples: the ones picked for this request, else the shipped ones."""
        return list(context.examples) or self.shipped_examples(lang)

    def user_content(self, text: str, *, lang: str, options: Mapping[str, str]) -> str:
        return text

    def build_messages(
        self,
        *,
        lang: str,
        history: Sequence[tuple[str, str]],
        text: str,
        options: Mapping[str, str] | None = None,
        context: PromptContext | None = None,
    ) -> list[ChatMessage]:
        values = self.options(options)
        context = context or PromptContext()
        answer_lang = self.answer_language(lang=lang, text=text, options=values)
        messages: list[ChatMessage] = [
            {"role": "system", "content": self.system_prompt(answer_lang, values, context)}
        ]
        for example in self.examples(answer_lang, context):
            messages.append({"role": "user", "content": example.user})
            messages.append({"role": "assistant", "content": example.assistant})
        if self.uses_history:
            for prompt, answer in history:
                messages.append({"role": "user", "content": prompt})
                messages.append({"role": "assistant", "content": answer})
        messages.append(
            {"role": "user", "content": self.user_content(text, lang=answer_lang, options=values)}
        )
        return messages

    # --- answers ---
    def render(self, answer: str, *, lang: str) -> str:
        """What the user sees of a stored answer (structured assistants format their JSON)."""
        return answer
