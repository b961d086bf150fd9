"""The shipped bilingual prompt set, split once into traffic and held-out prompts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

LANGUAGES = ("en", "ru")


@dataclass(frozen=True)
class Prompt:
    assistant: str
    lang: str
    text: str


@dataclass(frozen=True)
class PromptSet:
    train: list[Prompt]
    heldout: list[Prompt]


class PromptSetError(ValueError):
    pass


def load_prompt_set(
    *,
    assistants: list[str],
    languages: list[str],
    heldout_share: float = 0.25,
    seed: int = 0,
    path: Path | None = None,
) -> PromptSet:
    """Traffic and held-out prompts of `assistants` in `languages`; the same split for the same
    seed, and a held-out prompt is never sent as traffic."""
    if path is None:
        raw = resources.files("bot.simulation").joinpath("prompts.yaml").read_text("utf-8")
    else:
        raw = path.read_text(encoding="utf-8")
    data = yaml.safe_load(raw) or {}
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown:
        raise PromptSetError(f"unknown languages {unknown}; choose from {list(LANGUAGES)}")
    train: list[Prompt] = []
    heldout: list[Prompt] = []
    for assistant in assistants:
        by_lang = data.get(assistant)
        if not isinstance(by_lang, dict):
            raise PromptSetError(f"the prompt set has no prompts for {assistant!r}")
        for lang in languages:
            texts = [str(t).strip() for t in by_lang.get(lang) or [] if str(t).strip()]
            if len(texts) < 4:
                raise PromptSetError(f"too few {lang} prompts for {assistant!r}: {len(texts)}")
            random.Random(f"{seed}:{assistant}:{lang}").shuffle(texts)
            cut = max(1, round(len(texts) * heldout_share))
            heldout += [Prompt(assistant, lang, text) for text in texts[:cut]]
            train += [Prompt(assistant, lang, text) for text in texts[cut:]]
    return PromptSet(train=train, heldout=heldout)
