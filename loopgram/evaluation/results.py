"""What an evaluation run produces: per-item records and the set's metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DIGITS = 4  # metrics are rounded to this many decimals in JSON


@dataclass(frozen=True)
class Answer:
    """The model's answer to one item. Structured assistants add the parsed label and
    confidence; `invalid` means no valid answer even after the repair turn, `attempts` is 2
    when the repair turn was needed."""

    output: str
    label: str | None = None
    confidence: float | None = None
    attempts: int = 1
    invalid: bool = False

    @property
    def repaired(self) -> bool:
        return self.attempts > 1 and not self.invalid


@dataclass(frozen=True)
class ItemRecord:
    """One item of the set: what was asked, what came back, what was expected, and whether
    the answer counts as right (`details` holds the scores behind that verdict)."""

    id: str
    lang: str
    input: str
    output: str
    expected: str | list[str] | None
    ok: bool
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "lang": self.lang,
            "input": self.input,
            "output": self.output,
            "expected": self.expected,
            "ok": self.ok,
            "details": self.details,
        }


@dataclass(frozen=True)
class EvalResult:
    assistant: str
    model: str
    adapter: str | None
    metrics: dict[str, float]
    items: list[ItemRecord]
    embedder: str = ""
    seconds: float = 0.0

    def rounded_metrics(self) -> dict[str, float]:
        return {name: round(value, DIGITS) for name, value in self.metrics.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "assistant": self.assistant,
            "model": self.model,
            "adapter": self.adapter,
            "metrics": self.rounded_metrics(),
            "embedder": self.embedder,
            "seconds": round(self.seconds, 2),
            "items": [item.as_dict() for item in self.items],
        }
