"""BM25-style sparse vectors for Russian and English, computed locally.

The collection's sparse vector is meant to be created with `modifier=IDF`: Qdrant then keeps
the document frequencies and multiplies in the IDF at query time, so only the term-frequency
half of BM25 is computed here:

- a document term weighs tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl)), with
  k1 = 1.2, b = 0.75, len = the document's term count (after stop words) and a fixed
  avgdl = 256 terms. A fixed average keeps vectors independent of the rest of the collection
  (nothing to re-encode as it grows); 256 is about the middle of our chunks: 300-800 estimated
  model tokens are ~170-480 words, of which stop words take roughly 40%.
- a query carries 1.0 for each distinct term, so the score is the sum of IDF * weight over
  the terms both share (BM25 with query term frequencies ignored).

Terms (`tokens`): NFKC, lower case, `ё` -> `е`, split on anything that is not a letter or a
digit, stop words dropped (short built-in lists), then a light stemmer: for Cyrillic words the
Snowball Russian algorithm (endings removed within RV; derivational -ость in R2), for Latin ones
Porter's 1980 algorithm (steps 1a-5b, no exception lists). Numbers and words with digits are
kept as they are; other scripts are kept unstemmed. A term's id is the first four bytes of its
BLAKE2b digest, big-endian, with the top bit cleared: a stable 31-bit number, the same in every
process and version, with no vocabulary file.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from functools import lru_cache

from loopgram.rag.types import SparseVector

__all__ = [
    "AVGDL",
    "K1",
    "B",
    "encode_document",
    "encode_query",
    "stem_english",
    "stem_russian",
    "term_id",
    "tokens",
]

K1 = 1.2
B = 0.75
AVGDL = 256.0

_TERMS = re.compile(r"[^\W_]+")
_CYRILLIC_WORD = re.compile(r"[а-я]+")
_LATIN_WORD = re.compile(r"[a-z]+")


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.replace("ё", "е").split())


STOP_WORDS_EN = _word_set(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    s t d ll m re ve don doesn didn isn aren wasn weren won wouldn shouldn couldn also
    """
)
STOP_WORDS_RU = _word_set(
    """
    а без более бы был была были было быть в вам вас весь во вот все всего всех вы где да даже
    для до его ее если есть еще же за здесь и из или им их к как ко когда кто ли либо мне
    может мы на над надо наш не него нее нет ни них но ну о об однако он она они оно от очень
    по под при с со так также такой там те тем то того тоже той только том ты у уже хотя чего
    чей чем что чтобы чье чья эта эти это этого этой этом этот я ее ей ему нам нас них себе
    себя свой своя свое свои её
    """
)


def term_id(term: str) -> int:
    """The stable 31-bit id of a term: BLAKE2b, first four bytes, big-endian, top bit cleared."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF


def tokens(text: str) -> list[str]:
    """The text's terms in order: lower case, stop words dropped, stemmed (see the module)."""
    text = unicodedata.normalize("NFKC", text).lower().replace("ё", "е")
    out: list[str] = []
    for word in _TERMS.findall(text):
        if word in STOP_WORDS_EN or word in STOP_WORDS_RU:
            continue
        out.append(_stem(word))
    return out


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    if _CYRILLIC_WORD.fullmatch(word):
        return stem_russian(word)
    if _LATIN_WORD.fullmatch(word):
        return stem_english(word)
    return word


def encode_document(text: str) -> SparseVector:
    """Term ids (ascending) with BM25 term-frequency weights; empty for a text without terms."""
    terms = tokens(text)
    if not terms:
        return SparseVector(indices=[], values=[])
    counts = Counter(term_id(term) for term in terms)
    norm = K1 * (1 - B + B * len(terms) / AVGDL)
    indices = sorted(counts)
    values = [counts[i] * (K1 + 1) / (counts[i] + norm) for i in indices]
    return SparseVector(indices=indices, values=values)


def encode_query(text: str) -> SparseVector:
    """The ids of the query's distinct terms (ascending), each weighing 1.0."""
    indices = sorted({term_id(term) for term in tokens(text)})
    return SparseVector(indices=indices, values=[1.0] * len(indices))


# --- Russian: the Snowball algorithm ---------------------------------------------------------

_RU_VOWELS = frozenset("аеиоуыэюя")


def _by_length(endings: str) -> tuple[str, ...]:
    return tuple(sorted(endings.split(), key=len, reverse=True))


# Endings of group 1 must follow а or я (which stays); group 2 endings need nothing before.
_RU_GERUND_1 = _by_length("в вши вшись")
_RU_GERUND_2 = _by_length("ив ивши ившись ыв ывши ывшись")
_RU_ADJECTIVE = _by_length(
    "ее ие ые ое ими ыми ей ий ый ой ем им ым ом его ого ему ому их ых ую юю ая яя ою ею"
)
_RU_PARTICIPLE_1 = _by_length("ем нн вш ющ щ")
_RU_PARTICIPLE_2 = _by_length("ивш ывш ующ")
_RU_REFLEXIVE = _by_length("ся сь")
_RU_VERB_1 = _by_length("ла на ете йте ли й л ем н ло но ет ют ны ть ешь нно")
_RU_VERB_2 = _by_length(
    "ила ыла ена ейте уйте ите или ыли ей уй ил ыл им ым ен ило ыло ено ят ует уют ит ыт ены "
    "ить ыть ишь ую ю"
)
_RU_NOUN = _by_length(
    "а ев ов ие ье е иями ями ами еи ии и ией ей ой ий й иям ям ием ем ам ом о у ах иях ях ы ь "
    "ию ью ю ия ья я"
)
_RU_SUPERLATIVE = _by_length("ейш ейше")
_RU_DERIVATIONAL = _by_length("ост ость")


def _ru_regions(word: str) -> tuple[int, int]:
    """RV (after the first vowel) and R2 (R1 of R1; R1 is after the first non-vowel that
    follows a vowel) as start indexes; len(word) when a region is empty."""
    size = len(word)
    rv = next((i + 1 for i, c in enumerate(word) if c in _RU_VOWELS), size)
    r1 = next(
        (i + 1 for i in range(1, size) if word[i] not in _RU_VOWELS and word[i - 1] in _RU_VOWELS),
        size,
    )
    r2 = next(
        (
            i + 1
            for i in range(r1 + 1, size)
            if word[i] not in _RU_VOWELS and word[i - 1] in _RU_VOWELS
        ),
        size,
    )
    return rv, r2


def _ru_strip(word: str, rv: int, group1: tuple[str, ...], group2: tuple[str, ...] = ()) -> str:
    """The word without its longest ending (within RV) from the groups, or unchanged.

    As in Snowball's `among`: only the longest ending is tried; a group-1 ending is removed
    only after а or я (itself in RV), otherwise nothing is.
    """
    for ending in sorted((*group1, *group2), key=len, reverse=True):
        start = len(word) - len(ending)
        if start < rv or not word.endswith(ending):
            continue
        if ending in group2:
            return word[:start]
        return word[:start] if start - 1 >= rv and word[start - 1] in "ая" else word
    return word


def stem_russian(word: str) -> str:
    """Snowball Russian stem of a lower-case word (ё already replaced by е)."""
    rv, r2 = _ru_regions(word)
    if rv >= len(word):
        return word
    stripped = _ru_strip(word, rv, _RU_GERUND_1, _RU_GERUND_2)
    if stripped == word:
        word = _ru_strip(word, rv, (), _RU_REFLEXIVE)
        stripped = _ru_strip(word, rv, (), _RU_ADJECTIVE)
        if stripped != word:
            stripped = _ru_strip(stripped, rv, _RU_PARTICIPLE_1, _RU_PARTICIPLE_2)
        else:
            stripped = _ru_strip(word, rv, _RU_VERB_1, _RU_VERB_2)
            if stripped == word:
                stripped = _ru_strip(word, rv, (), _RU_NOUN)
    word = stripped
    if word.endswith("и") and len(word) - 1 >= rv:
        word = word[:-1]
    for ending in _RU_DERIVATIONAL:
        if word.endswith(ending) and len(word) - len(ending) >= r2:
            word = word[: -len(ending)]
            break
    if word.endswith("нн") and len(word) - 2 >= rv:
        return word[:-1]
    for ending in _RU_SUPERLATIVE:
        if word.endswith(ending) and len(word) - len(ending) >= rv:
            word = word[: -len(ending)]
            return word[:-1] if word.endswith("нн") and len(word) - 2 >= rv else word
    if word.endswith("ь") and len(word) - 1 >= rv:
        return word[:-1]
    return word


# --- English: Porter's algorithm -------------------------------------------------------------


def _consonant(word: str, i: int) -> bool:
    c = word[i]
    if c in "aeiou":
        return False
    if c == "y":
        return i == 0 or not _consonant(word, i - 1)
    return True


def _measure(stem: str) -> int:
    """m in [C](VC)^m[V]."""
    m, previous_vowel = 0, False
    for i in range(len(stem)):
        vowel = not _consonant(stem, i)
        if previous_vowel and not vowel:
            m += 1
        previous_vowel = vowel
    return m


def _has_vowel(stem: str) -> bool:
    return any(not _consonant(stem, i) for i in range(len(stem)))


def _double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _consonant(word, len(word) - 1)


def _cvc(word: str) -> bool:
    """Ends consonant-vowel-consonant, the last not w, x or y (as in hop, not in hoop)."""
    return (
        len(word) >= 3
        and _consonant(word, len(word) - 3)
        and not _consonant(word, len(word) - 2)
        and _consonant(word, len(word) - 1)
        and word[-1] not in "wxy"
    )


_EN_STEP2 = (
    ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
    ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"),
    ("ization", "ize"), ("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"),
    ("fulness", "ful"), ("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"),
    ("logi", "log"),
)  # fmt: skip
_EN_STEP3 = (
    ("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"),
    ("ful", ""), ("ness", ""),
)  # fmt: skip
_EN_STEP4 = _by_length(
    "al ance ence er ic able ible ant ement ment ent ion ou ism ate iti ous ive ize"
)


def _replace_suffix(word: str, rules: tuple[tuple[str, str], ...], min_measure: int) -> str:
    """The longest matching suffix replaced when the stem's measure allows it (else no change)."""
    for suffix, replacement in sorted(rules, key=lambda rule: len(rule[0]), reverse=True):
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            return stem + replacement if _measure(stem) > min_measure else word
    return word


def stem_english(word: str) -> str:
    """Porter (1980) stem of a lower-case ASCII word; words under three letters stay."""
    if len(word) < 3:
        return word
    # Step 1a: plurals.
    if word.endswith("sses") or word.endswith("ies"):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    # Step 1b: -eed, -ed, -ing.
    if word.endswith("eed"):
        if _measure(word[:-3]) > 0:
            word = word[:-1]
    else:
        for suffix in ("ed", "ing"):
            if word.endswith(suffix) and _has_vowel(word[: -len(suffix)]):
                word = word[: -len(suffix)]
                if word.endswith(("at", "bl", "iz")):
                    word += "e"
                elif _double_consonant(word) and word[-1] not in "lsz":
                    word = word[:-1]
                elif _measure(word) == 1 and _cvc(word):
                    word += "e"
                break
    # Step 1c: y -> i after a vowel in the stem.
    if word.endswith("y") and _has_vowel(word[:-1]):
        word = word[:-1] + "i"
    word = _replace_suffix(word, _EN_STEP2, 0)
    word = _replace_suffix(word, _EN_STEP3, 0)
    # Step 4: drop a suffix when the stem's measure is over 1 (-ion only after s or t).
    for suffix in _EN_STEP4:
        if word.endswith(suffix):
            stem = word[: -len(suffix)]
            if _measure(stem) > 1 and (suffix != "ion" or stem.endswith(("s", "t"))):
                word = stem
            break
    # Step 5: a final -e, a final double l.
    if word.endswith("e"):
        stem = word[:-1]
        measure = _measure(stem)
        if measure > 1 or (measure == 1 and not _cvc(stem)):
            word = stem
    if word.endswith("ll") and _measure(word) > 1:
        word = word[:-1]
    return word
