"""From a method's text parameters to the text and entities of the resulting message."""

from __future__ import annotations

from typing import Any

from .errors import ParseError, bad_request
from .html_entities import parse_text
from .links import detect_entities, normalize_url
from .params import Params
from .utf16 import utf16_len

Entity = dict[str, Any]

MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024
_PARSE_MODES = frozenset({"", "html", "markdown", "markdownv2"})
_WHITESPACE = " \t\n\r\v\f\x00"
# Outer entities first when several start at the same offset (blockquote > pre > link > style).
_PRIORITY = {
    "blockquote": 0,
    "expandable_blockquote": 0,
    "pre": 1,
    "code": 2,
    "text_link": 3,
    "text_mention": 3,
    "bold": 5,
    "italic": 6,
    "underline": 7,
    "strikethrough": 8,
    "spoiler": 9,
    "custom_emoji": 10,
}
_ENTITY_TYPES = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
        "date_time",
    }
)


def formatted(
    p: Params, text_key: str, mode_key: str, entities_key: str
) -> tuple[str, list[Entity]]:
    """Read text + parse_mode/entities parameters; an absent text gives ("", [])."""
    text = p.text(text_key) or ""
    parse_mode = p.text(mode_key)
    raw_entities = p.json_value(entities_key, "can't parse entities JSON object")
    return format_text(text, parse_mode, raw_entities)


def format_text(
    text: str, parse_mode: str | None, raw_entities: Any = None
) -> tuple[str, list[Entity]]:
    """Parse markup (or take explicit entities, which win over parse_mode like on the server),
    trim surrounding whitespace as the server does, and add auto-detected entities."""
    if raw_entities is not None:
        entities = _explicit_entities(raw_entities, text)
    else:
        if (parse_mode or "").lower() not in _PARSE_MODES:
            raise bad_request("unsupported parse_mode")
        try:
            text, entities = parse_text(text, parse_mode)
        except ParseError as error:
            raise error.as_api_error() from None
    text, entities = _trim(text, entities)
    entities = entities + detect_entities(text, entities)
    return text, sort_entities(entities)


def check_length(text: str, limit: int, too_long: str) -> None:
    if utf16_len(text) > limit:
        raise bad_request(too_long)


def sort_entities(entities: list[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (e["offset"], -e["length"], _PRIORITY.get(e["type"], 4)))


def _explicit_entities(raw: Any, text: str) -> list[Entity]:
    """Validate an ``entities`` parameter; out-of-range parts are cut off like the server does."""
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise bad_request("can't parse entities JSON object")
    total = utf16_len(text)
    result: list[Entity] = []
    for item in raw:
        kind = item.get("type")
        offset, length = item.get("offset"), item.get("length")
        if not isinstance(offset, int) or not isinstance(length, int):
            raise bad_request("can't parse entities JSON object")
        if kind not in _ENTITY_TYPES:
            raise bad_request(f'can\'t parse entities: unsupported entity type "{kind}"')
        start, end = max(0, offset), min(total, offset + length)
        if end <= start:
            continue
        entity: Entity = {"type": kind, "offset": start, "length": end - start}
        if kind == "text_link":
            url = normalize_url(str(item.get("url") or ""))
            if url is None:
                continue
            entity["url"] = url
        for key in ("language", "custom_emoji_id", "user", "unix_time", "date_time_format"):
            if item.get(key) is not None:
                entity[key] = item[key]
        result.append(entity)
    return result


def _trim(text: str, entities: list[Entity]) -> tuple[str, list[Entity]]:
    stripped = text.strip(_WHITESPACE)
    if stripped == text:
        return text, entities
    left = utf16_len(text[: len(text) - len(text.lstrip(_WHITESPACE))])
    total = utf16_len(stripped)
    trimmed: list[Entity] = []
    for entity in entities:
        start = max(entity["offset"] - left, 0)
        end = min(entity["offset"] + entity["length"] - left, total)
        if end > start:
            trimmed.append({**entity, "offset": start, "length": end - start})
    return stripped, trimmed
