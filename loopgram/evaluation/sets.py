"""The shipped evaluation sets: loading and validating `sets/<assistant>.yaml`.

A set is a list of items, each a text in English or Russian with what a good answer looks
like: the gold label (moderate, label), reference key points (summarize), or nothing beyond
the text and its options (paraphrase, scored against its own source). Items are checked
against the assistant they are for: options must be its options, labels its labels.

`load_set(name, limit=N)` keeps N items spread evenly over the labels (classification) and
the languages, so a short run still sees every label and both languages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loopgram.assistants import ASSISTANTS, text_language
from loopgram.assistants.label import default_label_set
from loopgram.assistants.moderate import ModerationLabel
from loopgram.errors import LoopgramError

SETS_DIR = Path(__file__).parent / "sets"
EVALUATED: tuple[str, ...] = ("paraphrase", "summarize", "moderate", "label")
CLASSIFIERS: tuple[str, ...] = ("moderate", "label")

T = TypeVar("T")


class EvalSetError(LoopgramError):
    """An evaluation set that is missing or does not validate."""


class EvalItem(BaseModel):
    """One case: the input text (in `lang`), the assistant's options, and the reference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64)
    lang: Literal["en", "ru"]
    text: str = Field(min_length=1)
    options: dict[str, str] = Field(default_factory=dict)
    label: str | None = None  # the gold label (moderate, label)
    key_points: tuple[str, ...] = ()  # what a summary must say (summarize)

    @model_validator(mode="after")
    def _language(self) -> EvalItem:
        found = text_language(self.text, default=self.lang)
        if found != self.lang:
            raise ValueError(f"item {self.id}: lang is {self.lang} but the text is {found}")
        return self


class EvalSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    assistant: Literal["paraphrase", "summarize", "moderate", "label"]
    description: str = ""
    items: tuple[EvalItem, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _fits_assistant(self) -> EvalSet:
        ids = [item.id for item in self.items]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate item ids: {', '.join(duplicates)}")
        labels = set(labels_of(self.assistant))
        assistant = ASSISTANTS[self.assistant]
        for item in self.items:
            for name, value in item.options.items():
                group = assistant.option_group(name)
                if group is None or value not in group.choices:
                    raise ValueError(f"item {item.id}: {name}={value!r} is not an option")
            if labels and item.label not in labels:
                raise ValueError(f"item {item.id}: label {item.label!r} is not one of {labels}")
            if not labels and item.label is not None:
                raise ValueError(f"item {item.id}: {self.assistant} items take no label")
            if self.assistant == "summarize":
                if not 3 <= len(item.key_points) <= 5:
                    raise ValueError(f"item {item.id}: a summary item needs 3-5 key points")
            elif item.key_points:
                raise ValueError(f"item {item.id}: only summarize items take key points")
        return self

    @property
    def labels(self) -> list[str]:
        return labels_of(self.assistant)

    def limited(self, limit: int | None) -> EvalSet:
        """At most `limit` items, spread over labels and, inside each label, over
        languages (all items when None)."""
        if limit is None or limit >= len(self.items):
            return self
        if limit < 1:
            raise EvalSetError("the item limit must be at least 1")
        if self.assistant in CLASSIFIERS:
            by_label: dict[str, list[EvalItem]] = {}
            for item in self.items:
                by_label.setdefault(item.label or "", []).append(item)
            mixed = [item for group in by_label.values() for item in spread(group, _lang)]
            ordered = spread(mixed, lambda item: item.label or "")
        else:
            ordered = spread(self.items, _lang)
        return self.model_copy(update={"items": tuple(ordered[:limit])})


def _lang(item: EvalItem) -> str:
    return item.lang


def labels_of(assistant: str) -> list[str]:
    """The labels a classifier's answers are scored against; empty for text assistants."""
    if assistant == "moderate":
        return [label.value for label in ModerationLabel]
    if assistant == "label":
        return default_label_set().names
    return []


def spread(items: Sequence[T], key: Callable[[T], str]) -> list[T]:
    """The items reordered so that every prefix holds each group (by `key`) in proportion,
    keeping the order inside a group: item i of a group of n sits at (i + 0.5) / n."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    ranked = [
        ((index + 0.5) / len(members), group, item)
        for group, members in enumerate(groups.values())
        for index, item in enumerate(members)
    ]
    ranked.sort(key=lambda entry: (entry[0], entry[1]))
    return [item for _, _, item in ranked]


def set_path(assistant: str) -> Path:
    return SETS_DIR / f"{assistant}.yaml"


def parse_set(text: str, *, source: str = "<set>") -> EvalSet:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EvalSetError(f"{source}: not valid YAML ({exc})") from exc
    try:
        return EvalSet.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "set"
        raise EvalSetError(f"{source}: {where}: {first['msg']}") from exc


def load_set(assistant: str, *, limit: int | None = None, path: Path | None = None) -> EvalSet:
    """The shipped set of `assistant` (or the set at `path`), at most `limit` items."""
    if path is None:
        if assistant not in EVALUATED:
            raise EvalSetError(
                f"no evaluation set for {assistant!r}: sets exist for {', '.join(EVALUATED)}"
            )
        path = set_path(assistant)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalSetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    loaded = parse_set(text, source=str(path))
    if loaded.assistant != assistant:
        raise EvalSetError(f"{path} is a set for {loaded.assistant}, not {assistant}")
    return loaded.limited(limit)
