"""Model Markdown -> Telegram HTML, and splitting long answers into valid messages.

Telegram rejects a message whose HTML does not parse ("can't parse entities") and any text
over 4096 characters. Answers are split on paragraph boundaries first, code fences are
closed and reopened across a split, and every part is rendered on its own, so each part is
valid HTML by construction.
"""

from __future__ import annotations

import html
import re

TELEGRAM_LIMIT = 4096
# Rendering escapes &<> and Telegram counts the text after entity parsing, so a part of
# this many source characters always fits, with room for the fence lines added on splits.
DEFAULT_PART_CHARS = 3800

_FENCE = re.compile(r"^```")
_CODE_BLOCK = re.compile(r"```([\w+-]*)\n?(.*?)(?:```|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(
    r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])|(?<!\w)_(?=\S)([^_\n]+?)(?<=\S)_(?!\w)"
)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.MULTILINE)


def markdown_to_html(text: str) -> str:
    """Render the Markdown subset small models write into Telegram-safe HTML.

    Markdown written by a model can overlap (`**a *b** c*`); when the regex rendering is
    not properly nested, the part is sent as escaped plain text instead of being refused.
    """
    rendered = _render(text)
    return rendered if is_balanced_html(rendered) else html.escape(text, quote=False)


_TAG = re.compile(r"<(/?)([a-z]+)(?:\s[^>]*)?>")


def is_balanced_html(text: str) -> bool:
    stack: list[str] = []
    for match in _TAG.finditer(text):
        closing, tag = match.group(1), match.group(2)
        if not closing:
            stack.append(tag)
        elif not stack or stack.pop() != tag:
            return False
    return not stack


def _render(text: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _CODE_BLOCK.finditer(text):
        out.append(_render_inline(text[pos : match.start()]))
        lang, body = match.group(1), match.group(2).rstrip("\n")
        attr = f' class="language-{html.escape(lang)}"' if lang else ""
        out.append(f"<pre><code{attr}>{html.escape(body, quote=False)}</code></pre>")
        pos = match.end()
    out.append(_render_inline(text[pos:]))
    return "".join(out)


def _render_inline(text: str) -> str:
    pieces: list[str] = []
    pos = 0
    for match in _INLINE_CODE.finditer(text):
        pieces.append(_render_spans(text[pos : match.start()]))
        pieces.append(f"<code>{html.escape(match.group(1), quote=False)}</code>")
        pos = match.end()
    pieces.append(_render_spans(text[pos:]))
    return "".join(pieces)


def _render_spans(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _LINK.sub(_link, escaped)
    escaped = _HEADING.sub(lambda m: f"<b>{m.group(1)}</b>", escaped)
    escaped = _BOLD.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", escaped)
    escaped = _STRIKE.sub(lambda m: f"<s>{m.group(1)}</s>", escaped)
    return _ITALIC.sub(lambda m: f"<i>{m.group(1) or m.group(2)}</i>", escaped)


def _link(match: re.Match[str]) -> str:
    # The text is already escaped; only a quote could still break out of the attribute.
    url = match.group(2).replace('"', "&quot;")
    return f'<a href="{url}">{match.group(1)}</a>'


def split_markdown(text: str, limit: int = DEFAULT_PART_CHARS) -> list[str]:
    """Split on paragraph, then line, then sentence, then word boundaries; keep fences valid."""
    text = text.strip()
    if not text:
        return []
    parts: list[str] = []
    for block in _pack(_units(text, limit), limit):
        parts.append(block)
    return _balance_fences(parts)


def _u16(text: str) -> int:
    """Telegram measures text in UTF-16 code units: an emoji counts twice."""
    return len(text.encode("utf-16-le")) // 2


def _units(text: str, limit: int) -> list[str]:
    units: list[str] = []
    for paragraph in re.split(r"(\n{2,})", text):
        if _u16(paragraph) <= limit:
            units.append(paragraph)
            continue
        for line in re.split(r"(\n)", paragraph):
            if _u16(line) <= limit:
                units.append(line)
                continue
            for sentence in re.split(r"(?<=[.!?…])(\s+)", line):
                if _u16(sentence) <= limit:
                    units.append(sentence)
                    continue
                units.extend(_hard_split(sentence, limit))
    return units


def _hard_split(text: str, limit: int) -> list[str]:
    pieces: list[str] = []
    while _u16(text) > limit:
        end = _fit(text, limit)
        cut = text.rfind(" ", 0, end)
        cut = cut if cut > end // 2 else end
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def _fit(text: str, limit: int) -> int:
    """The longest prefix length (in characters) whose UTF-16 length is within `limit`."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _pack(units: list[str], limit: int) -> list[str]:
    parts: list[str] = []
    current = ""
    for unit in units:
        if _u16(current) + _u16(unit) > limit and current.strip():
            parts.append(current.strip("\n"))
            current = ""
        current += unit
    if current.strip():
        parts.append(current.strip("\n"))
    return [p for p in parts if p.strip()]


def _balance_fences(parts: list[str]) -> list[str]:
    """A split inside a ``` block closes it in one part and reopens it in the next."""
    balanced: list[str] = []
    carry = ""
    for part in parts:
        part = carry + part
        carry = ""
        fences = [line for line in part.splitlines() if _FENCE.match(line.strip())]
        if len(fences) % 2 == 1:
            opener = fences[-1].strip()
            part += "\n```"
            carry = (opener if opener != "```" else "```") + "\n"
        balanced.append(part)
    return balanced


def render_parts(text: str, limit: int = DEFAULT_PART_CHARS) -> list[str]:
    """Final HTML messages for an answer, each under Telegram's limit."""
    return [markdown_to_html(part) for part in split_markdown(text, limit)]


def visible_length(html_text: str) -> int:
    """Length of the text Telegram counts (tags stripped, entities decoded), in UTF-16 units."""
    return _u16(html.unescape(re.sub(r"<[^>]+>", "", html_text)))


def truncate_u16(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-16 code units (never inside a surrogate pair)."""
    return text[: _fit(text, limit)]
