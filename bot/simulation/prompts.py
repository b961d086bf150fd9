"""The shipped bilingual prompt set: traffic and held-out prompts (one split of prompts.yaml),
and canary prompts (canary_prompts.yaml), which each round's canary draws from its own slice
of, so a candidate is judged live on prompts no adapter has trained on."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
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
    canary: list[Prompt] = field(default_factory=list)

    def canary_pool(self, round_number: int, rounds: int) -> list[Prompt]:
        """What round `round_number` (1-based) of `rounds` sends while a candidate is on
        canary. Per assistant and language, each round takes its own share of the canary
        prompts (every `rounds`-th, from the round's offset), so no earlier round's traffic
        asked them; with fewer prompts than rounds, rounds take them in turn. An assistant and
        language without canary prompts falls back to its traffic prompts."""
        offset = (round_number - 1) % max(1, rounds)
        pool: list[Prompt] = []
        for key in dict.fromkeys((p.assistant, p.lang) for p in self.train):
            group = [p for p in self.canary if (p.assistant, p.lang) == key]
            if not group:
                pool += [p for p in self.train if (p.assistant, p.lang) == key]
            elif len(group) >= rounds:
                pool += group[offset::rounds]
            else:
                pool.append(group[offset % len(group)])
        return pool


class PromptSetError(ValueError):
    pass


def load_prompt_set(
    *,
    assistants: list[str],
    languages: list[str],
    heldout_share: float = 0.25,
    seed: int = 0,
    path: Path | None = None,
    canary_path: Path | None = None,
) -> PromptSet:
    """Traffic and held-out prompts of `assistants` in `languages`; the same split for the same
    seed, and a held-out prompt is never sent as traffic. Canary prompts come from
    `canary_path`, or from the shipped canary_prompts.yaml with the shipped prompts.yaml; a
    canary prompt that is also a traffic or held-out prompt is an error."""
    data = _read(path, "prompts.yaml")
    canary_data = _read(canary_path, "canary_prompts.yaml") if canary_path or not path else {}
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown:
        raise PromptSetError(f"unknown languages {unknown}; choose from {list(LANGUAGES)}")
    train: list[Prompt] = []
    heldout: list[Prompt] = []
    canary: list[Prompt] = []
    for assistant in assistants:
        by_lang = data.get(assistant)
        if not isinstance(by_lang, dict):
            raise PromptSetError(f"the prompt set has no prompts for {assistant!r}")
        for lang in languages:
            texts = _texts(by_lang, lang)
            if len(texts) < 4:
                raise PromptSetError(f"too few {lang} prompts for {assistant!r}: {len(texts)}")
            random.Random(f"{seed}:{assistant}:{lang}").shuffle(texts)
            cut = max(1, round(len(texts) * heldout_share))
            heldout += [Prompt(assistant, lang, text) for text in texts[:cut]]
            train += [Prompt(assistant, lang, text) for text in texts[cut:]]
            fresh = _texts(canary_data.get(assistant), lang)
            reused = set(fresh) & set(texts)
            if reused:
                raise PromptSetError(
                    f"{len(reused)} {lang} canary prompts for {assistant!r} are also traffic or "
                    f"held-out prompts, e.g. {sorted(reused)[0]!r}"
                )
            random.Random(f"{seed}:{assistant}:{lang}:canary").shuffle(fresh)
            canary += [Prompt(assistant, lang, text) for text in fresh]
    return PromptSet(train=train, heldout=heldout, canary=canary)


def _read(path: Path | None, shipped: str) -> dict[str, object]:
    try:
        if path is None:
            raw = resources.files("bot.simulation").joinpath(shipped).read_text("utf-8")
        else:
            raw = path.read_text(encoding="utf-8")
        data = yaml.safe_load(raw) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PromptSetError(f"cannot read the prompt set {path or shipped}: {exc}") from exc
    if not isinstance(data, dict):
        raise PromptSetError(f"the prompt set {path or shipped} must map assistants to languages")
    return data


def _texts(by_lang: object, lang: str) -> list[str]:
    """The non-empty texts of `lang` in one assistant's mapping (nothing if it has none)."""
    if not isinstance(by_lang, dict):
        return []
    return [str(t).strip() for t in by_lang.get(lang) or [] if str(t).strip()]
