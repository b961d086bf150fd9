"""Links and the entities the server detects by itself in any message text.

Telegram adds ``url``, ``email``, ``mention``, ``bot_command``, ``hashtag`` and ``cashtag``
entities to every message, including the bot's own, so bots see them in returned Messages and
in user messages. The patterns are a practical subset of the server's rules.
"""

from __future__ import annotations

import re
from typing import Any

from .utf16 import utf16_len

Entity = dict[str, Any]

_SCHEMES = ("http://", "https://", "tg://", "ftp://", "ton://", "tonsite://")
_DOMAIN = re.compile(r"^[\w\-]+(\.[\w\-]+)+(:\d+)?([/?#].*)?$")
_TLDS = (
    "com|org|net|ru|io|me|dev|app|ai|co|uk|de|fr|info|edu|gov|tv|xyz|site|online|tech|"
    "page|link|ua|by|kz|eu|us|in|jp|cn|es|it|nl|pl|br|ca|au|ch|se|no|fi|рф"
)
_DETECTORS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "email",
        re.compile(
            r"(?<![\w.+\-@])[\w.+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}(?![\w\-])"
        ),
    ),
    ("url", re.compile(r"(?<![\w@/])(?:https?|tg|ftp)://[^\s<>\"«»]+", re.IGNORECASE)),
    (
        "url",
        re.compile(
            r"(?<![\w@/.\-])(?:[\w\-]+\.)+(?:" + _TLDS + r")(?::\d{1,5})?(?:[/?#][^\s<>\"«»]*)?"
            r"(?![\w\-])",
            re.IGNORECASE,
        ),
    ),
    (
        "bot_command",
        re.compile(
            r"(?<![\w/<>])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?"
            r"(?![\w/<>])"
        ),
    ),
    ("mention", re.compile(r"(?<![\w@])@(?:[A-Za-z0-9_]{4,32}|gif|vid|pic)(?![\w@])")),
    ("hashtag", re.compile(r"(?<![\w#])#(?=\w*[^\W\d])\w{1,256}(?![\w#])")),
    ("cashtag", re.compile(r"(?<![\w$])\$[A-Z]{1,8}(?![\w$])")),
)
# Auto-detection never looks inside these: their text is code or already a link.
_OPAQUE = frozenset(
    {"code", "pre", "text_link", "text_mention", "custom_emoji", *(kind for kind, _ in _DETECTORS)}
)


def normalize_url(url: str) -> str | None:
    """The server's idea of a usable link: known scheme, or a bare domain (gets ``http://``)."""
    url = url.strip()
    if not url:
        return None
    if url.lower().startswith(_SCHEMES):
        return url
    if "://" in url or not _DOMAIN.match(url):
        return None
    return f"http://{url}"


def _trim_url(text: str) -> str:
    """Trailing punctuation ends a sentence, not the link; an unbalanced ')' too."""
    while text and text[-1] in ".,:;!?'\"":
        text = text[:-1]
    while text.endswith(")") and text.count(")") > text.count("("):
        text = text[:-1]
    return text


def detect_entities(text: str, existing: list[Entity] | None = None) -> list[Entity]:
    """Entities the server would add to ``text`` besides ``existing`` ones (UTF-16 offsets)."""
    taken: list[tuple[int, int]] = [
        (e["offset"], e["offset"] + e["length"]) for e in existing or [] if e.get("type") in _OPAQUE
    ]
    found: list[Entity] = []
    for kind, pattern in _DETECTORS:
        for match in pattern.finditer(text):
            value = _trim_url(match.group()) if kind == "url" else match.group()
            if not value:
                continue
            start = utf16_len(text[: match.start()])
            end = start + utf16_len(value)
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            taken.append((start, end))
            found.append({"type": kind, "offset": start, "length": end - start})
    return found
