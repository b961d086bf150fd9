"""The rerank stage: what the similarity score cannot know about a chunk.

No cross-encoder ships in a package here (see ../shared/MODELS.md), so the stage is a
documented scorer over the calibrated cosine (`loopgram.rag.retrieve`), not a second model.
It knows one thing the embedding does not: whether the chunk's document says of itself that
it is archived or superseded. An archived policy and the current one say nearly the same
words with other numbers, so their cosines tie (measured: the current version ranked above
the archived one for only 70% of the distractor questions of the shipped set, whatever the
ranking). Documents that declare themselves archived — in their title, their file name or an
opening sentence such as "This policy was replaced by ..." / "Архивный документ ..." — lose
`ARCHIVED_PENALTY` of score, which is larger than the cosine gap between two versions of the
same text and smaller than the gap to an unrelated chunk, so an archived document is still
found when it is the only one that answers.

The flag is decided once per document at ingest (`is_superseded`) and stored in each chunk's
payload (`archived`); the prompt marks such sources as archived.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Final

from loopgram.rag.types import Hit

ARCHIVED_PENALTY: Final = 0.03
HEAD_CHARS: Final = 800  # how much of a document's opening is read for a self-declaration

# In a file name: a word of its own ("refund-policy-2023-archived.md", "otpusk-arhiv.docx").
_NAME_WORDS: Final = re.compile(
    r"(?<![^\W_])(archived?|superseded|obsolete|deprecated|outdated|"
    r"arhiv\w*|архив\w*|устарел\w*|устаревш\w*)(?![^\W_])",
    re.IGNORECASE,
)
# In a title: an adjective, or the noun in brackets ("Refund Policy (ARCHIVED)", "(АРХИВ)");
# a bare "archive" is often a verb or a topic ("How to archive mail").
_TITLE_WORDS: Final = re.compile(
    r"(?<!\w)(archived|superseded|obsolete|deprecated|outdated|"
    r"архивн\w*|устарел\w*|устаревш\w*|недействующ\w*)(?!\w)"
    r"|[(\[]\s*(?:archive|архив)\s*[)\]]",
    re.IGNORECASE,
)
# In the opening text: a sentence about this document, not a mention of another one
# ("It replaces the 2023 policy, which is kept in the archive" is the current version).
_SELF_DECLARED: Final = re.compile(
    r"\barchived (?:document|version|policy|page|copy)\b"
    r"|\b(?:was|has been|is|been) (?:replaced|superseded) by\b"
    r"|\bno longer (?:valid|in effect|in force|applies|applicable|maintained)\b"
    r"|\bархивн\w* (?:документ|верси\w*|редакци\w*|копи\w*)"
    r"|(?<!\w)(?:заменён|заменен|заменена|заменено)\w*\s"
    r"|утратил\w* силу|больше не действу\w*|не действует с\b",
    re.IGNORECASE,
)
_HEADING: Final = re.compile(r"^\s*(?:#{1,6}\s+)?(.+?)\s*$")


def is_superseded(name: str, text: str) -> bool:
    """True when the document declares itself archived or superseded: in its file name, its
    first line (the title) or its opening `HEAD_CHARS` characters."""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", name)
    if _NAME_WORDS.search(stem):
        return True
    head = text.lstrip()[:HEAD_CHARS]
    first_line = head.split("\n", 1)[0]
    title = _HEADING.match(first_line)
    if title is not None and _TITLE_WORDS.search(title.group(1)):
        return True
    return _SELF_DECLARED.search(head) is not None


def rerank(hits: Iterable[Hit], *, penalty: float = ARCHIVED_PENALTY) -> list[Hit]:
    """`hits` rescored (`Hit.score` and `scores["rerank"]`: the score minus `penalty` for an
    archived document's chunk) and sorted best first; ties keep their order."""
    rescored = []
    for hit in hits:
        score = hit.score - (penalty if hit.archived else 0.0)
        rescored.append(replace(hit, score=score, scores={**hit.scores, "rerank": score}))
    rescored.sort(key=lambda h: h.score, reverse=True)
    return rescored
