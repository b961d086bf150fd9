"""The domain assistants a chat can pick.

Each assistant is a small module: its prompts (`prompts/<name>.yaml`: system prompt per
language, option texts, few-shot examples), its options, and — for moderation and
labeling — a strict output schema. Every assistant has its own adapter slot in the
learning loop: the adapter registry and the router key everything by assistant name.
"""

from __future__ import annotations

from loopgram.assistants.base import (
    Assistant,
    Example,
    OptionGroup,
    PromptContext,
    text_language,
)
from loopgram.assistants.label import label
from loopgram.assistants.moderate import moderate
from loopgram.assistants.paraphrase import paraphrase
from loopgram.assistants.summarize import summarize

DEFAULT_ASSISTANT = "chat"

ASSISTANTS: dict[str, Assistant] = {
    a.name: a
    for a in (
        Assistant("chat", "💬", uses_history=True, uses_knowledge=True),
        paraphrase(),
        summarize(),
        moderate(),
        label(),
    )
}


def get_assistant(name: str | None) -> Assistant:
    return ASSISTANTS.get(name or DEFAULT_ASSISTANT, ASSISTANTS[DEFAULT_ASSISTANT])


__all__ = [
    "ASSISTANTS",
    "DEFAULT_ASSISTANT",
    "Assistant",
    "Example",
    "OptionGroup",
    "PromptContext",
    "get_assistant",
    "text_language",
]
