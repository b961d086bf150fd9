"""Telegram's formatting modes: text with markup -> (plain text, entities with UTF-16 offsets).

The HTML parser follows the server's (tdlib's) rules and error texts: only the documented tags,
attribute values quoted or bare, ``&lt; &gt; &amp; &quot;`` and numeric references decoded, an
``&`` that starts no known reference kept as a literal character (as the server does). Errors
carry the reason only; callers wrap it as "Bad Request: can't parse entities: <reason>".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ParseError
from .links import normalize_url
from .markdown import parse_markdown, parse_markdown_v2
from .utf16 import byte_offset, utf16_len

Entity = dict[str, Any]

_SIMPLE_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
}
_ALLOWED_TAGS = frozenset(
    [*_SIMPLE_TAGS, "a", "code", "pre", "blockquote", "span", "tg-emoji"],
)
_NAMED_REFERENCES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_BARE_VALUE = re.compile(r"[A-Za-z0-9.\-]*")


@dataclass
class _OpenTag:
    name: str
    argument: str | None
    utf16_start: int
    source_index: int  # index of the text right after the start tag (for <a> without href)


def parse_text(text: str, parse_mode: str | None) -> tuple[str, list[Entity]]:
    """Apply ``parse_mode`` ("HTML", "MarkdownV2", "Markdown", case-insensitive, or none)."""
    mode = (parse_mode or "").lower()
    if mode == "":
        return text, []
    if mode == "html":
        return parse_html(text)
    if mode == "markdownv2":
        return parse_markdown_v2(text)
    if mode == "markdown":
        return parse_markdown(text)
    raise ValueError(parse_mode)


def parse_html(source: str) -> tuple[str, list[Entity]]:
    """Parse Telegram HTML; raise :class:`ParseError` with the server's reason on bad markup."""
    out: list[str] = []
    entities: list[Entity] = []
    stack: list[_OpenTag] = []
    position = 0  # current UTF-16 offset in the output
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if ch == "&":
            decoded, after = decode_reference(source, i)
            if decoded is not None:
                out.append(decoded)
                position += utf16_len(decoded)
                i = after
                continue
        if ch != "<":
            out.append(ch)
            position += utf16_len(ch)
            i += 1
            continue
        tag_start = i
        if i + 1 < n and source[i + 1] == "/":
            i = _close_tag(source, i, stack, entities, position)
        else:
            tag, i = _open_tag(source, tag_start, position)
            stack.append(tag)
    if stack:
        raise ParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    return "".join(out), _public(entities)


def decode_reference(text: str, start: int) -> tuple[str | None, int]:
    """Decode an HTML character reference at ``text[start] == '&'``.

    Returns (character, index after it) or (None, start) when it is not a reference the server
    knows; like the server, the trailing ``;`` is optional.
    """
    n = len(text)
    end = start + 1
    code = 0
    if end < n and text[end] == "#":
        end += 1
        hexadecimal = end < n and text[end] in "xX"
        if hexadecimal:
            end += 1
        digits = "0123456789abcdefABCDEF" if hexadecimal else "0123456789"
        digits_start = end
        while end < n and text[end] in digits:
            end += 1
        if end == digits_start:
            return None, start
        code = int(text[digits_start:end], 16 if hexadecimal else 10)
        if code == 0 or code >= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return None, start
        decoded = chr(code)
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        named = _NAMED_REFERENCES.get(text[start + 1 : end])
        if named is None:
            return None, start
        decoded = named
    if end < n and text[end] == ";":
        end += 1
    return decoded, end


def _open_tag(source: str, start: int, position: int) -> tuple[_OpenTag, int]:
    n = len(source)
    at = byte_offset(source, start)
    i = start + 1
    while i < n and not source[i].isspace() and source[i] != ">":
        i += 1
    if i >= n:
        raise ParseError(f"Unclosed start tag at byte offset {at}")
    name = source[start + 1 : i].lower()
    if name not in _ALLOWED_TAGS:
        raise ParseError(f'Unsupported start tag "{name}" at byte offset {at}')
    argument: str | None = None
    while source[i] != ">":
        while i < n and source[i].isspace():
            i += 1
        if i < n and source[i] == ">":
            break
        attr_start = i
        while i < n and not source[i].isspace() and source[i] not in "=>/\"'":
            i += 1
        attr = source[attr_start:i].lower()
        if not attr:
            raise ParseError(f'Empty attribute name in the tag "{name}" at byte offset {at}')
        while i < n and source[i].isspace():
            i += 1
        if i >= n:
            raise ParseError(f'Unclosed start tag "{name}" at byte offset {at}')
        if source[i] != "=":
            if name == "blockquote" and attr == "expandable":
                argument = "expandable"
            continue
        i += 1
        while i < n and source[i].isspace():
            i += 1
        if i >= n:
            raise ParseError(f'Unclosed start tag "{name}" at byte offset {at}')
        value, i = _attribute_value(source, i, at)
        argument = _tag_argument(name, attr, value, argument)
    if name == "span" and argument != "spoiler":
        raise ParseError(f'Tag "span" must have class "tg-spoiler" at byte offset {at}')
    return _OpenTag(name, argument, position, i + 1), i + 1


def _attribute_value(source: str, i: int, tag_at: int) -> tuple[str, int]:
    n = len(source)
    if source[i] not in "\"'":
        match = _BARE_VALUE.match(source, i)
        end = match.end() if match else i
        if end >= n or (not source[end].isspace() and source[end] != ">"):
            at_end = byte_offset(source, end)
            raise ParseError(f"Unexpected end of name token at byte offset {at_end}")
        return source[i:end].lower(), end
    quote = source[i]
    i += 1
    value: list[str] = []
    while i < n and source[i] != quote:
        if source[i] == "&":
            decoded, after = decode_reference(source, i)
            if decoded is not None:
                value.append(decoded)
                i = after
                continue
        value.append(source[i])
        i += 1
    if i >= n:
        raise ParseError(f"Unclosed start tag at byte offset {tag_at}")
    return "".join(value), i + 1


def _tag_argument(tag: str, attr: str, value: str, current: str | None) -> str | None:
    if tag == "a" and attr == "href":
        return value
    if tag == "code" and attr == "class" and value.startswith("language-"):
        return value[len("language-") :]
    if tag == "span" and attr == "class" and value == "tg-spoiler":
        return "spoiler"
    if tag == "tg-emoji" and attr == "emoji-id":
        return value
    if tag == "blockquote" and attr == "expandable":
        return "expandable"
    return current


def _close_tag(
    source: str, start: int, stack: list[_OpenTag], entities: list[Entity], position: int
) -> int:
    n = len(source)
    at = byte_offset(source, start)
    if not stack:
        raise ParseError(f"Unexpected end tag at byte offset {at}")
    i = start + 2
    while i < n and not source[i].isspace() and source[i] != ">":
        i += 1
    name = source[start + 2 : i].lower()
    while i < n and source[i].isspace():
        i += 1
    if i >= n or source[i] != ">":
        raise ParseError(f"Unclosed end tag at byte offset {at}")
    tag = stack[-1]
    if name and name != tag.name:
        raise ParseError(
            f'Unmatched end tag at byte offset {at}, expected "</{tag.name}>", found "</{name}>"'
        )
    stack.pop()
    length = position - tag.utf16_start
    if length > 0:
        _add_tag_entity(tag, length, entities, source[tag.source_index : start])
    return i + 1


def _add_tag_entity(tag: _OpenTag, length: int, entities: list[Entity], inner: str) -> None:
    offset = tag.utf16_start
    last = entities[-1] if entities else None
    same_span = last is not None and last["offset"] == offset and last["length"] == length
    if tag.name in _SIMPLE_TAGS or tag.name == "span":
        entities.append(
            {"type": _SIMPLE_TAGS.get(tag.name, "spoiler"), "offset": offset, "length": length}
        )
    elif tag.name == "a":
        url = normalize_url(tag.argument if tag.argument is not None else inner)
        if url is not None:  # the server silently drops links with an invalid URL
            entities.append({"type": "text_link", "offset": offset, "length": length, "url": url})
    elif tag.name == "code":
        if same_span and last is not None and last["type"] == "pre":
            if tag.argument:
                last["language"] = tag.argument
        else:
            entities.append(
                {"type": "code", "offset": offset, "length": length, "_language": tag.argument}
            )
    elif tag.name == "pre":
        if same_span and last is not None and last["type"] == "code":
            language = last.pop("_language", None)
            last["type"] = "pre"
            if language:
                last["language"] = language
        else:
            entities.append({"type": "pre", "offset": offset, "length": length})
    elif tag.name == "blockquote":
        kind = "expandable_blockquote" if tag.argument == "expandable" else "blockquote"
        entities.append({"type": kind, "offset": offset, "length": length})
    elif tag.name == "tg-emoji":
        if tag.argument is None or not tag.argument.isdigit():
            raise ParseError("Invalid custom emoji identifier specified")
        entities.append(
            {
                "type": "custom_emoji",
                "offset": offset,
                "length": length,
                "custom_emoji_id": tag.argument,
            }
        )


def _public(entities: list[Entity]) -> list[Entity]:
    """Drop bookkeeping keys: a <code> language only survives when the code sits in a <pre>."""
    return [{k: v for k, v in e.items() if not k.startswith("_")} for e in entities]
