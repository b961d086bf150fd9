"""Labeling: classify an item against a label set an admin defines, with a confidence.

The label must be one of the set (checked after parsing; a label outside the set is
invalid output, repaired once or refused — never stored as a silent wrong label).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from loopgram.assistants.base import PROMPTS_DIR, Assistant, Example, PromptContext
from loopgram.assistants.structured import InvalidOutput, parse_structured
from loopgram.errors import LoopgramError
from loopgram.i18n import t

LABEL_NAME = re.compile(r"^[\w][\w\- ]{0,31}$", re.UNICODE)
MAX_LABELS = 50
DEFAULT_LABEL_SET_FILE = PROMPTS_DIR / "label_set_default.yaml"


@dataclass(frozen=True)
class LabelProblem:
    """What is wrong with a label set as a locale key and its parameters, so each reader
    gets it in their language; `where` is the key framing it (which label, the set's name)."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)
    where: str | None = None
    where_params: dict[str, Any] = field(default_factory=dict)

    def render(self, lang: str) -> str:
        text = t(lang, self.key, **self.params)
        return t(lang, self.where, problem=text, **self.where_params) if self.where else text


class LabelSetError(LoopgramError):
    """`labels-invalid` with `problem` as its `{ $detail }`; str() is the English detail
    (for logs and the CLI)."""

    key = "labels-invalid"

    def __init__(
        self, message: str = "", *, problem: LabelProblem | None = None, **params: Any
    ) -> None:
        super().__init__(message or (problem.render("en") if problem else ""), **params)
        self.problem = problem

    def detail(self, lang: str) -> str:
        return self.problem.render(lang) if self.problem else str(self)


class LabelDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = Field(default="", max_length=300)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip().lower()
        if not LABEL_NAME.match(value):
            # A custom type (not a ValueError) so `_problem` can name it in any language.
            raise PydanticCustomError(
                "label_name", "a label is 1-32 letters, digits, spaces, '-' or '_'"
            )
        return value


class LabelSetSpec(BaseModel):
    """A named set of labels, as an admin writes it (`/labels` or a YAML file)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="custom", min_length=1, max_length=64)
    labels: list[LabelDef] = Field(min_length=2, max_length=MAX_LABELS)

    @model_validator(mode="after")
    def _unique(self) -> LabelSetSpec:
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names):
            raise PydanticCustomError("label_names_unique", "label names must be unique")
        return self

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]

    def as_context(self) -> tuple[tuple[str, str], ...]:
        return tuple((label.name, label.description) for label in self.labels)


def parse_label_list(text: str) -> LabelSetSpec:
    """`/labels spam, question, praise: a thank-you` — comma or newline separated, with an
    optional `: description` after each name."""
    labels = []
    for piece in re.split(r"[,\n;]", text):
        name, _, description = piece.partition(":")
        if name.strip():
            labels.append({"name": name.strip(), "description": description.strip()})
    return _validated({"name": "custom", "labels": labels})


def parse_label_yaml(data: bytes | str) -> LabelSetSpec:
    """A YAML file: `name: ...` and `labels:` as a list of names or of {name, description}."""
    try:
        # BaseLoader keeps every scalar a string: labels "yes", "no", "on" or "1" stay text.
        raw = yaml.load(data, Loader=yaml.BaseLoader)  # noqa: S506 (BaseLoader builds no objects)
    except yaml.YAMLError as exc:
        raise LabelSetError("not valid YAML", key="labels-invalid-yaml") from exc
    if isinstance(raw, list):
        raw = {"labels": raw}
    if not isinstance(raw, dict) or "labels" not in raw:
        raise LabelSetError("no labels list", key="labels-invalid-yaml")
    labels = raw.get("labels")
    if isinstance(labels, dict):  # {name: description}
        labels = [{"name": k, "description": v or ""} for k, v in labels.items()]
    if isinstance(labels, list):
        labels = [{"name": item} if isinstance(item, str) else item for item in labels]
    return _validated({"name": str(raw.get("name") or "custom"), "labels": labels})


def _validated(data: object) -> LabelSetSpec:
    try:
        return LabelSetSpec.model_validate(data)
    except ValidationError as exc:
        raise LabelSetError(problem=_problem(exc.errors()[0]), max=MAX_LABELS) from exc


# pydantic error type -> the locale key saying it in words a person can act on.
_PROBLEM_KEYS = {
    "extra_forbidden": "labels-problem-unknown-field",
    "missing": "labels-problem-missing",
    "string_too_long": "labels-problem-too-long",
    "string_too_short": "labels-problem-empty",
    "list_type": "labels-problem-not-list",
    "label_name": "labels-problem-bad-name",
    "label_names_unique": "labels-problem-duplicate",
}


def _problem(error: Any) -> LabelProblem:
    """One pydantic error as a localizable problem, naming the label at fault."""
    loc = list(error["loc"])
    kind = str(error["type"])
    ctx = error.get("ctx") or {}
    name = str(loc[-1]) if loc and isinstance(loc[-1], str) else "labels"
    if loc == ["labels"] and kind == "too_short":
        return LabelProblem("labels-problem-too-few", {"min": ctx.get("min_length", 2)})
    if loc == ["labels"] and kind == "too_long":
        return LabelProblem("labels-problem-too-many", {"max": MAX_LABELS})
    params: dict[str, Any] = {"field": name}
    if "max_length" in ctx:
        params["max_length"] = ctx["max_length"]
    key = _PROBLEM_KEYS.get(kind)
    if key is None:
        # Another pydantic error: its own (English) message, inside the localized frame.
        message = str(error["msg"]).removeprefix("Value error, ")
        key, params = "labels-problem-other", {"message": message}
    if len(loc) >= 2 and loc[0] == "labels" and isinstance(loc[1], int):
        value = error.get("input")
        if name == "name" and isinstance(value, str):
            where = {"number": loc[1] + 1, "value": value}
            return LabelProblem(key, params, "labels-problem-in-named-label", where)
        return LabelProblem(key, params, "labels-problem-in-label", {"number": loc[1] + 1})
    if loc == ["name"]:
        return LabelProblem(key, params, "labels-problem-in-set-name")
    return LabelProblem(key, params)


@cache
def default_label_set() -> LabelSetSpec:
    return parse_label_yaml(DEFAULT_LABEL_SET_FILE.read_text(encoding="utf-8"))


class LabelResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=32)
    confidence: float = Field(ge=0.0, le=1.0, strict=True)  # a number, not "0.9" or true
    reason: str = Field(default="", max_length=300)

    @field_validator("label")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        return value.strip()

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False)


def check_label_in(labels: list[str]) -> Callable[[LabelResult], None]:
    """A validator for complete_structured: the label must belong to the set."""

    def validate(result: LabelResult) -> None:
        if result.label not in labels:
            raise InvalidOutput(f"label {result.label!r} is not one of: {', '.join(labels)}")

    return validate


def example_answer(label: str) -> str:
    """How a confirmed example is shown to the model: the JSON it should write."""
    return LabelResult(label=label, confidence=1.0).canonical()


@dataclass(frozen=True)
class LabelAssistant(Assistant):
    def prompt_fills(self, context: PromptContext) -> dict[str, str]:
        labels = context.labels or default_label_set().as_context()
        lines = [f"- {name}: {desc}" if desc else f"- {name}" for name, desc in labels]
        return {"labels": "\n".join(lines)}

    def examples(self, lang: str, context: PromptContext) -> list[Example]:
        """Picked neighbours when there are any; the shipped examples only fit the default
        set (their labels would mislead the model under another set)."""
        if context.examples:
            return list(context.examples)
        if not context.labels or context.labels == default_label_set().as_context():
            return self.shipped_examples(lang)
        return []

    def render(self, answer: str, *, lang: str) -> str:
        try:
            result = parse_structured(answer, LabelResult)
        except ValueError:
            return answer
        return render_label(result, lang)


def render_label(result: LabelResult, lang: str) -> str:
    text = t(lang, "label-result", label=result.label, confidence=f"{result.confidence:.0%}")
    return f"{text}\n{result.reason}" if result.reason else text


def label() -> LabelAssistant:
    return LabelAssistant("label", "🏷", structured=True, max_tokens=224)


def load_label_file(path: Path) -> LabelSetSpec:
    return parse_label_yaml(path.read_bytes())
