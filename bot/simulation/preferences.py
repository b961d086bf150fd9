"""The simulated people's hidden taste: what makes them like an answer, per assistant.

Only the simulation knows these rules. The bot and the training code see nothing but the
presses they cause, so any gain on held-out prompts has to come from the ratings.

Each rule is a score (higher is better: it decides between two versions after 🔄) and a
verdict (liked or not). Everyone dislikes an answer that ignores the source (too little of
its content kept), a verbatim copy, and chatter about the task ("Here is the rewritten
text: ..."). On top of that:
- paraphrase users want a concise rewrite: no longer than the original;
- summary users want a short bullet list: at least two bullet lines, at most 60% of the
  source's length.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_WORD = re.compile(r"[\w']+", re.UNICODE)
_BULLET = re.compile(r"^\s*(?:[-*•–]|\d+[.)])\s+\S", re.MULTILINE)
_CHATTER = re.compile(
    r"\b(here is|here's|rewritten|revised|rephrased|paraphrase[ds]?|original text|"
    r"summary of the text|i have|i've|i used|i made|вот |перефразирован|исходн)",
    re.IGNORECASE,
)
_STEM = 5
"""Words are compared by their first letters: crude, but it matches inflected Russian forms
("библиотека" / "библиотеки") as well as English ones."""


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def content_stems(text: str) -> set[str]:
    return {w[:_STEM] for w in words(text) if len(w) > 3}


def source_coverage(source: str, answer: str) -> float:
    """Share of the source's content words the answer keeps (by stem)."""
    wanted = content_stems(source)
    return len(wanted & content_stems(answer)) / len(wanted) if wanted else 0.0


def is_copy(source: str, answer: str) -> bool:
    return words(source) == words(answer)


def bullet_lines(text: str) -> int:
    return len(_BULLET.findall(text))


@dataclass(frozen=True)
class Judgement:
    liked: bool
    score: float
    why: str


def _fatal(source: str, answer: str, min_coverage: float) -> Judgement | None:
    """The faults that make any answer the worst choice, or None."""
    if not answer.strip():
        return Judgement(False, -10.0, "empty")
    coverage = source_coverage(source, answer)
    if coverage < min_coverage:
        return Judgement(False, -5.0 + coverage, "ignores the source")
    if is_copy(source, answer):
        return Judgement(False, -3.0, "a copy")
    return None


def _length_ratio(source: str, answer: str) -> float:
    return len(words(answer)) / max(1, len(words(source)))


_CHATTER_PENALTY = 0.5


def judge_paraphrase(source: str, answer: str) -> Judgement:
    """Shorter is better (between two versions the shorter one wins unless it is off the
    source or a copy); liked when no longer than the original and free of chatter."""
    fault = _fatal(source, answer, min_coverage=0.4)
    if fault is not None:
        return fault
    ratio = _length_ratio(source, answer)
    if _CHATTER.search(answer):
        return Judgement(False, -ratio - _CHATTER_PENALTY, "chatter")
    if ratio > 1.0:
        return Judgement(False, -ratio, "longer than the original")
    return Judgement(True, 1.0 - ratio, "concise")


def judge_summary(source: str, answer: str) -> Judgement:
    """Bullets and brevity; liked as a list of at least two bullets within 60% of the source."""
    fault = _fatal(source, answer, min_coverage=0.15)
    if fault is not None:
        return fault
    ratio = _length_ratio(source, answer)
    bullets = bullet_lines(answer)
    score = min(bullets, 4) / 4 - ratio
    if _CHATTER.search(answer):
        return Judgement(False, score - _CHATTER_PENALTY, "chatter")
    if bullets < 2:
        return Judgement(False, score, "not a bullet list")
    if ratio > 0.6:
        return Judgement(False, score, "too long")
    return Judgement(True, 1.0 + score, "short bullet list")


JUDGES: dict[str, Callable[[str, str], Judgement]] = {
    "paraphrase": judge_paraphrase,
    "summarize": judge_summary,
}


def judge(assistant: str, source: str, answer: str) -> Judgement:
    try:
        rule = JUDGES[assistant]
    except KeyError:
        raise ValueError(
            f"no simulated preference for the {assistant!r} assistant; choose from {sorted(JUDGES)}"
        ) from None
    return rule(source, answer)
