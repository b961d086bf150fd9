"""MarkdownV2 and legacy Markdown parse modes, with the server's error texts.

MarkdownV2 supports *bold* _italic_ __underline__ ~strikethrough~ ||spoiler|| `code`
```pre``` [text](url) ![emoji](tg://emoji?id=N) and ">" blockquotes; every reserved character
outside an entity must be escaped with a backslash, as on the real server. The expandable
blockquote syntax (**> ... ||) is not supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ParseError
from .links import normalize_url
from .utf16 import byte_offset, utf16_len

Entity = dict[str, Any]

RESERVED = "_*[]()~`>#+-=|{}.!"
_ERROR_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
    "code": "Code",
    "pre": "Pre",
    "blockquote": "BlockQuote",
}
_EMOJI_URL = re.compile(r"^tg://emoji\?id=(\d+)$")


@dataclass
class _Open:
    type: str
    start: int  # UTF-16 offset in the output
    at: int  # byte offset of the markup in the source, for error texts
    language: str | None = None


class _Output:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.position = 0
        self.entities: list[Entity] = []

    def emit(self, text: str) -> None:
        self.parts.append(text)
        self.position += utf16_len(text)

    def close(self, entity: _Open, **extra: str) -> None:
        length = self.position - entity.start
        if length > 0:
            item: Entity = {"type": entity.type, "offset": entity.start, "length": length}
            item.update(extra)
            self.entities.append(item)

    def result(self) -> tuple[str, list[Entity]]:
        return "".join(self.parts), self.entities


def _reserved(ch: str) -> ParseError:
    return ParseError(f"Character '{ch}' is reserved and must be escaped with the preceding '\\'")


def _unclosed(entity: _Open) -> ParseError:
    name = "PreCode" if entity.type == "pre" and entity.language else _ERROR_NAMES[entity.type]
    return ParseError(f"Can't find end of {name} entity at byte offset {entity.at}")


def parse_markdown_v2(source: str) -> tuple[str, list[Entity]]:
    out = _Output()
    stack: list[_Open] = []
    n = len(source)
    i = 0
    line_start = True
    while i < n:
        ch = source[i]
        top = stack[-1] if stack else None
        if ch == "\\" and i + 1 < n and 0 < ord(source[i + 1]) <= 126:
            out.emit(source[i + 1])
            i += 2
            line_start = False
            continue
        if top is not None and top.type in ("code", "pre"):
            i = _code_char(source, i, top, stack, out)
            continue
        if ch == "\n":
            if top is not None and top.type == "blockquote" and not source.startswith(">", i + 1):
                out.close(stack.pop())
            out.emit(ch)
            i += 1
            line_start = True
            continue
        if ch == ">" and line_start:
            if not any(e.type == "blockquote" for e in stack):
                stack.append(_Open("blockquote", out.position, byte_offset(source, i)))
            i += 1
            line_start = False
            continue
        line_start = False
        if ch not in RESERVED:
            out.emit(ch)
            i += 1
            continue
        closed_at = _close_if_end(source, i, stack, out)
        if closed_at is not None:
            i = closed_at
            continue
        i = _open_entity(source, i, stack, out)
    while stack:  # only a blockquote may stay open until the end of the text
        top = stack.pop()
        if top.type != "blockquote":
            raise _unclosed(top)
        out.close(top)
    return out.result()


def _code_char(source: str, i: int, top: _Open, stack: list[_Open], out: _Output) -> int:
    """Inside code and pre only the closing backticks are special."""
    if top.type == "code" and source[i] == "`":
        out.close(stack.pop())
        return i + 1
    if top.type == "pre" and source.startswith("```", i):
        stack.pop()
        if top.language:
            out.close(top, language=top.language)
        else:
            out.close(top)
        return i + 3
    out.emit(source[i])
    return i + 1


def _close_if_end(source: str, i: int, stack: list[_Open], out: _Output) -> int | None:
    if not stack:
        return None
    top = stack[-1]
    ch = source[i]
    doubled = source.startswith(ch * 2, i)
    ends = {
        "bold": ch == "*",
        "italic": ch == "_" and not doubled,
        "underline": ch == "_" and doubled,
        "strikethrough": ch == "~",
        "spoiler": ch == "|" and doubled,
        "text_link": ch == "]",
        "custom_emoji": ch == "]",
    }
    if not ends.get(top.type, False):
        return None
    stack.pop()
    if top.type in ("text_link", "custom_emoji"):
        return _close_link(source, i + 1, top, out)
    out.close(top)
    return i + (2 if top.type in ("underline", "spoiler") else 1)


def _close_link(source: str, i: int, link: _Open, out: _Output) -> int:
    """Read the ``(url)`` after ``]``; inside it only ``)`` and ``\\`` need escaping."""
    url = ""
    if i < len(source) and source[i] == "(":
        start = i
        i += 1
        chars: list[str] = []
        while i < len(source) and source[i] != ")":
            if source[i] == "\\" and i + 1 < len(source) and 0 < ord(source[i + 1]) <= 126:
                i += 1
            chars.append(source[i])
            i += 1
        if i >= len(source):
            raise ParseError(f"Can't find end of a URL at byte offset {byte_offset(source, start)}")
        url = "".join(chars)
        i += 1
    if link.type == "custom_emoji":
        match = _EMOJI_URL.match(url)
        if match is None:
            raise ParseError("Custom emoji entity must contain a tg://emoji URL")
        out.close(link, custom_emoji_id=match.group(1))
        return i
    normalized = normalize_url(url)
    if normalized is not None:
        out.close(link, url=normalized)
    return i


def _open_entity(source: str, i: int, stack: list[_Open], out: _Output) -> int:
    ch = source[i]
    at = byte_offset(source, i)
    doubled = source.startswith(ch * 2, i)
    simple = {"*": "bold", "~": "strikethrough", "[": "text_link"}
    if ch in simple:
        stack.append(_Open(simple[ch], out.position, at))
        return i + 1
    if ch == "_":
        stack.append(_Open("underline" if doubled else "italic", out.position, at))
        return i + (2 if doubled else 1)
    if ch == "|" and doubled:
        stack.append(_Open("spoiler", out.position, at))
        return i + 2
    if ch == "!" and source.startswith("[", i + 1):
        stack.append(_Open("custom_emoji", out.position, at))
        return i + 2
    if ch == "`":
        if source.startswith("```", i):
            return _open_pre(source, i + 3, at, stack, out)
        stack.append(_Open("code", out.position, at))
        return i + 1
    raise _reserved(ch)


def _open_pre(source: str, i: int, at: int, stack: list[_Open], out: _Output) -> int:
    n = len(source)
    end = i
    while end < n and not source[end].isspace() and source[end] != "`":
        end += 1
    language = None
    if end > i and end < n and source[end] != "`":
        language = source[i:end]
        i = end
    if i < n and source[i] in "\r\n":  # one line break after the opening fence is markup
        i += 2 if source[i : i + 2] in ("\r\n", "\n\r") else 1
    stack.append(_Open("pre", out.position, at, language))
    return i


def parse_markdown(source: str) -> tuple[str, list[Entity]]:
    """Legacy Markdown: *bold* _italic_ `code` ```pre``` [text](url), no nesting."""
    out = _Output()
    n = len(source)
    i = 0
    while i < n:
        ch = source[i]
        if ch == "\\" and i + 1 < n and source[i + 1] in "_*`[":
            out.emit(source[i + 1])
            i += 2
            continue
        if ch not in "_*`[":
            out.emit(ch)
            i += 1
            continue
        at = byte_offset(source, i)
        fence = "```" if source.startswith("```", i) else ("]" if ch == "[" else ch)
        content_start = i + (3 if fence == "```" else 1)
        end = source.find(fence, content_start)
        if end < 0:
            raise ParseError(f"Can't find end of the entity starting at byte offset {at}")
        content = source[content_start:end]
        i = end + len(fence)
        entity = _Open(
            {"*": "bold", "_": "italic", "`": "code", "[": "text_link"}[ch], out.position, at
        )
        if fence == "```":
            entity.type = "pre"
            first, newline, rest = content.partition("\n")
            if newline and first and not first.isspace():
                entity.language, content = first.strip(), rest
        out.emit(content)
        if ch != "[":
            if entity.language:
                out.close(entity, language=entity.language)
            else:
                out.close(entity)
            continue
        url = ""
        if source.startswith("(", i):
            url_end = source.find(")", i)
            if url_end < 0:
                raise ParseError(f"Can't find end of a URL at byte offset {byte_offset(source, i)}")
            url, i = source[i + 1 : url_end], url_end + 1
        normalized = normalize_url(url)
        if normalized is not None:
            out.close(entity, url=normalized)
    return out.result()
