"""Moderation: a structured verdict on a text — label, confidence, reason, suggested action."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopgram.assistants.base import Assistant
from loopgram.assistants.structured import parse_structured
from loopgram.i18n import t


class ModerationLabel(StrEnum):
    ok = "ok"
    spam = "spam"
    abuse = "abuse"
    threat = "threat"
    adult = "adult"
    other = "other"


class ModerationAction(StrEnum):
    none = "none"
    warn = "warn"
    delete = "delete"
    review = "review"


HARMFUL = frozenset(label for label in ModerationLabel if label is not ModerationLabel.ok)


class Verdict(BaseModel):
    """The JSON a moderation answer must be; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    label: ModerationLabel
    confidence: float = Field(ge=0.0, le=1.0, strict=True)  # a number, not "0.9" or true
    reason: str = Field(min_length=1, max_length=300)

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the reason is empty")
        return value

    action: ModerationAction = ModerationAction.none

    @property
    def harmful(self) -> bool:
        return self.label in HARMFUL

    def canonical(self) -> str:
        """The stored answer (and training target): compact JSON with fixed key order."""
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False)


@dataclass(frozen=True)
class ModerateAssistant(Assistant):
    def render(self, answer: str, *, lang: str) -> str:
        try:
            verdict = parse_structured(answer, Verdict)
        except ValueError:
            return answer
        return render_verdict(verdict, lang)


def render_verdict(verdict: Verdict, lang: str) -> str:
    icon = "✅" if verdict.label is ModerationLabel.ok else "⛔"
    return t(
        lang,
        "moderation-verdict",
        icon=icon,
        label=t(lang, f"moderation-label-{verdict.label.value}"),
        confidence=f"{verdict.confidence:.0%}",
        reason=verdict.reason,
        action=t(lang, f"moderation-action-{verdict.action.value}"),
    )


def moderate() -> ModerateAssistant:
    return ModerateAssistant("moderate", "🛡", structured=True, max_tokens=256)
