"""The domain assistants a chat can pick, and how their prompts are built.

Each assistant has a system prompt per language. The domain issue gives paraphrase,
summarization, moderation and labeling their own input handling and output formats; this
module keeps what every assistant shares: the prompt layout with conversation history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loopgram.i18n import t
from loopgram.llm import ChatMessage

DEFAULT_ASSISTANT = "chat"


@dataclass(frozen=True)
class Assistant:
    name: str
    emoji: str
    uses_history: bool = True

    def title(self, lang: str) -> str:
        return t(lang, f"assistant-{self.name}-title")

    def description(self, lang: str) -> str:
        return t(lang, f"assistant-{self.name}-description")

    def system_prompt(self, lang: str) -> str:
        # The prompt names the reply language explicitly: small models drift to English.
        return t(lang, f"assistant-{self.name}-system")

    def build_messages(
        self, *, lang: str, history: Sequence[tuple[str, str]], text: str
    ) -> list[ChatMessage]:
        messages: list[ChatMessage] = [{"role": "system", "content": self.system_prompt(lang)}]
        if self.uses_history:
            for prompt, answer in history:
                messages.append({"role": "user", "content": prompt})
                messages.append({"role": "assistant", "content": answer})
        messages.append({"role": "user", "content": text})
        return messages


ASSISTANTS: dict[str, Assistant] = {
    a.name: a
    for a in (
        Assistant("chat", "💬"),
        Assistant("paraphrase", "✍️", uses_history=False),
        Assistant("summarize", "📝", uses_history=False),
        Assistant("moderate", "🛡", uses_history=False),
        Assistant("label", "🏷", uses_history=False),
    )
}


def get_assistant(name: str | None) -> Assistant:
    return ASSISTANTS.get(name or DEFAULT_ASSISTANT, ASSISTANTS[DEFAULT_ASSISTANT])
