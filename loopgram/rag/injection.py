"""Prompt injection in documents: found at ingest, neutralised before a prompt.

`scan(text)` lists what looks like instructions aimed at the model rather than content for
people, in English and Russian: "ignore previous instructions", "disregard the above",
"you are now DAN", requests to reveal the system prompt, "act as an unrestricted AI",
role-play jailbreak markers, fake chat-template tokens (`<|im_start|>`, `[INST]`,
`### System:`), invisible characters (zero-width, direction overrides, Unicode tag
characters that spell hidden ASCII), and base64 blobs over 200 characters (decoded and scanned
too). The patterns look for the phrase aimed at a model, not for the words alone: "system",
"act as", "ignore", "you are now", "ты теперь", "системный промпт" all occur in ordinary
documents ("Please do not ignore the safety rules", "the router acts as a gateway", "you are
now logged in", "системный промпт ассистента задаёт администратор"), so each pattern needs the
object that makes it an attack (previous instructions, your system prompt, an AI without
restrictions...), and a negation right before the verb ("do not", "never", "не") cancels it.
The text is matched after NFKC (full-width letters and ligatures), with invisible characters
removed and Cyrillic look-alikes inside Latin words read as Latin, so "іgnоre" and
"ig<U+200B>nore" are still caught; offsets point into the original text.

A finding is a warning for the person who uploads the document, not a verdict: retrieved text
always goes to the model as quoted data (see `prompts.yaml`), after `sanitize_for_prompt`,
which only takes out what could end or forge that data block: chat-template control tokens are
re-spelled with full-width brackets (`<|im_start|>` -> `＜|im_start|＞`; ChatML as in Qwen and
SmolLM2, Gemma's `<start_of_turn>`, `[INST]`, `<<SYS>>`), data-block tags (`</source>`,
`<system>`..., see `DATA_TAGS`) likewise, invisible characters removed. Ordinary text, emoji
(including zero-width-joiner sequences and flag tags) and HTML such as `<b>` or `<s>` pass
unchanged (`<s>`/`</s>` are Llama-2 tokens too, but strikethrough in Markdown).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DATA_TAGS", "InjectionFinding", "sanitize_for_prompt", "scan"]

SNIPPET_CHARS = 80
BASE64_MIN_CHARS = 200


@dataclass(frozen=True)
class InjectionFinding:
    """A suspicious place in a text: which pattern, what matched (<= 80 chars), where."""

    pattern: str
    snippet: str
    offset: int  # in the scanned text, in characters


# --- Invisible characters --------------------------------------------------------------------

# Zero-width space and non-joiner, direction marks, embeddings, overrides and isolates, word
# joiner and invisible operators, Mongolian vowel separator, BOM / zero-width no-break space.
# (The soft hyphen is ordinary in copied web text: removed for matching, never reported.)
_INVISIBLE = "\u200b\u200c\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\u180e\ufeff"
_ZWJ = "\u200d"
_TAGS = "\U000e0000-\U000e007f"
_BLACK_FLAG = "\U0001f3f4"
# A zero-width joiner is hidden text unless it joins emoji (after a pictograph, a variation
# selector or a skin tone); tag characters are hidden text unless they spell a subdivision
# flag after the black flag (🏴 + tags + cancel tag).
_HIDDEN = re.compile(
    f"(?:[{_INVISIBLE}]|(?<![\u00a9\u00ae\u203c-\u3299\ufe0f\U0001f000-\U0001faff]){_ZWJ})+"
    f"|[{_TAGS}]+"
)
_FLAG_TAGS = re.compile(f"{_BLACK_FLAG}[\U000e0020-\U000e007e]+\U000e007f")
_IGNORED_FOR_MATCHING = re.compile(f"[{_INVISIBLE}{_ZWJ}{_TAGS}\u00ad]")


def _hidden_spans(text: str) -> list[tuple[int, int]]:
    """Where invisible characters are (subdivision flags blanked out first, same length)."""
    masked = _FLAG_TAGS.sub(lambda m: "x" * len(m.group()), text)
    return [(match.start(), match.end()) for match in _HIDDEN.finditer(masked)]


# --- Patterns --------------------------------------------------------------------------------

_NEGATION = re.compile(
    r"(?:\b(?:do\s+not|don'?t|never|must\s+not|mustn'?t|should\s+not|shouldn'?t|cannot|can'?t"
    r"|не|нельзя|никогда\s+не)\s+(?:\w+\s+){0,1})$",
    re.IGNORECASE,
)
_QUALIFIER_EN = (
    r"(?:previous|prior|above|earlier|preceding|foregoing|initial|system|developer|hidden"
    r"|original\s+system)"
)
_RULES_EN = (
    r"(?:instructions?|prompts?|rules|directions?|directives?|guidelines?|constraints"
    r"|restrictions|programming)"
)
_MACHINE_EN = r"(?:ai|a\.i\.|assistant|chatbot|bot|language\s+model|model|llm|gpt|chatgpt|dan)"
_UNBOUND_EN = (
    r"(?:unrestricted|unfiltered|uncensored|unlimited|unchained|jailbroken|rogue|evil"
    r"|amoral|unethical|unbound)"
)
_VERB_RU = (
    r"(?:про)?игнорируй(?:те)?|забудь(?:те)?|отбрось(?:те)?|отмени(?:те)?|выкинь(?:те)?"
    r"|сотри(?:те)?|не\s+обращай(?:те)?\s+внимания\s+на|не\s+(?:следуй|подчиняйся)(?:те)?"
)
_QUALIFIER_RU = (
    r"(?:все|вс[её]|любые|эти|сво\w*|тво\w*|ранее|выше|прежн\w*|предыдущ\w*|прошл\w*|стар\w*"
    r"|изначальн\w*|исходн\w*|первоначальн\w*|системн\w*|заданн\w*|полученн\w*|данн\w*"
    r"|вышеуказанн\w*|вышеизложенн\w*|перечисленн\w*)"
)
_RULES_RU = (
    r"(?:инструкци\w*|указани\w*|правил\w*|команд\w*|установк\w*|промпт\w*|ограничени\w*"
    r"|запрет\w*|директив\w*|настройк\w*|сообщени\w*)"
)
_MACHINE_RU = r"(?:ии|ai|бот\w*|ассистент\w*|модел\w*|нейросет\w*|чат-?бот\w*|dan|персонаж\w*)"
_FREE_RU = (
    r"(?:без\s+(?:каких-?либо\s+|всяких\s+|любых\s+)?(?:ограничений|цензуры|фильтров|правил)"
    r"(?!\s+(?:по|на|в|для|при)\b)"
    r"|свобод\w+\s+от\s+(?:\w+\s+)?(?:ограничений|правил|цензуры)"
    r"|не\s+(?:связан\w*|ограничен\w*)\s+(?:\w+\s+)?(?:правилами|ограничениями|инструкциями))"
)
_REVEAL_EN = (
    r"(?:reveal|show|print|repeat|output|display|leak|disclose|expose|dump|share|recite"
    r"|tell\s+me|give\s+me|write\s+out|spell\s+out|type\s+out|what\s+(?:is|are|was|were))"
)
_REVEAL_RU = (
    r"(?:покажи|выведи|раскрой|повтори|расскажи|скажи|перечисли|дай|процитируй"
    r"|озвучь|распечатай|выдай|сообщи)(?:те)?"
)

_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "ignore_instructions",
        r"\b(?:ignore|disregard|forget|override|bypass)\s+"
        r"(?:(?:all|any|every|each|of|the|your|my|these|those|everything)\s+){0,4}"
        rf"(?:{_QUALIFIER_EN}\s+(?:\w+\s+)?{_RULES_EN}|your\s+{_RULES_EN}"
        r"|(?:the\s+)?(?:instructions|rules|guidelines|prompts?)\s+(?:above|before|given\s+"
        r"(?:above|before|earlier)|you\s+(?:were|have\s+been)\s+given))\b",
    ),
    (
        "disregard_above",
        r"\b(?:ignore|disregard|forget)\s+(?:all\s+|everything\s+)?(?:of\s+)?(?:the\s+)?"
        r"(?:above|foregoing|everything\s+(?:above|before|said\s+before)"
        r"|everything\s+(?:above|before)\s+this\s+(?:line|point|message|sentence)"
        r"|what\s+(?:was|is|has\s+been)\s+(?:said|written)\s+(?:above|before))"
        r"(?=\s*(?:[.,;:!\-—–]|and\b|$))",
    ),
    (
        "forget_everything",
        r"\bforget\s+(?:about\s+)?(?:everything|all)\s*,?\s+(?:that\s+)?"
        r"(?:you(?:'ve|\s+have|\s+were|\s+know|\s+learned)|(?:i|we)\s+(?:said|told)|above\b)",
    ),
    (
        "you_are_now",
        r"\b(?:you\s+are|you're)\s+now\s+(?:(?:an?|the|my|called|named)\s+)?"
        rf"(?:(?:{_UNBOUND_EN}|different|new|free)\s+(?:\w+\s+)?{_MACHINE_EN}"
        r"|(?:ai|a\.i\.|chatgpt|gpt|llm|dan)\b(?!['’]s)"
        rf"|{_UNBOUND_EN}\b)"
        r"|\b(?:you\s+are|you're)\s+now\s+in\s+(?:developer|dev|god|jailbreak|dan|unrestricted"
        r"|evil|opposite|chaos)\s+mode\b"
        r"|\b(?:you\s+are|you're)\s+(?:now\s+)?no\s+longer\s+(?:an?\s+)?(?:ai|assistant|bound"
        r"|restricted|limited|a\s+language\s+model|chatgpt)\b"
        r"|\bfrom\s+now\s+on,?\s+you\s+(?:are|will\s+be|will\s+act\s+as)\s+(?:an?\s+)?"
        rf"(?:(?:{_UNBOUND_EN})\s+)?(?:{_MACHINE_EN}|{_UNBOUND_EN})\b",
    ),
    (
        "reveal_instructions",
        rf"\b{_REVEAL_EN}\s+(?:me\s+|us\s+)?(?:all\s+)?(?:of\s+)?(?:your|the)\s+"
        r"(?:(?:system|initial|original|hidden|secret|internal|full|exact|developer|first"
        r"|confidential)\s+)+(?:prompt|instructions?|message|rules|configuration)\b"
        rf"|\b{_REVEAL_EN}\s+(?:me\s+|us\s+)?(?:all\s+)?(?:of\s+)?your\s+"
        r"(?:prompt|instructions|system\s+prompt)\b"
        r"(?!\s+(?:for|on|about|to|regarding|in|with)\b)"
        r"|\brepeat\s+(?:all\s+)?(?:of\s+)?(?:the\s+)?(?:words|text|everything|sentences?"
        r"|lines?)\s+(?:above|before\s+this)\b",
    ),
    (
        "system_prompt_override",
        r"\b(?:new|updated|override|overriding|real|actual|true|secret)\s+system\s+"
        r"(?:prompt|instructions?|message)\s*(?:[:=\-—]|follows\b)"
        r"|\b(?:begin|start|end)\s+(?:of\s+)?(?:the\s+)?system\s+prompt\b",
    ),
    (
        "act_as",
        rf"\b(?:act|behave|respond|answer|reply|role-?play)\s+(?:as|like)\s+(?:an?\s+|the\s+)?"
        rf"(?:{_UNBOUND_EN}\s+(?:\w+\s+)?{_MACHINE_EN}|{_UNBOUND_EN}\b|dan\b"
        r"|(?:an?\s+)?ai\s+(?:without|with\s+no)\b|chatgpt\s+with\b"
        r"|my\s+(?:dead\s+|deceased\s+|late\s+)?grand(?:ma|mother|pa|father))"
        r"|\b(?:act|behave|respond|answer)\s+as\s+if\s+you\s+(?:have|had)\s+no\s+"
        r"(?:restrictions|limits|limitations|rules|filters|guidelines|boundaries)\b"
        r"|\b(?:act|behave|respond|answer)\s+as\s+if\s+you\s+(?:are|were)\s+(?:not\s+an?\s+ai"
        r"|no\s+longer|free\s+from|not\s+bound)",
    ),
    (
        "jailbreak",
        r"(?-i:\bDAN\b)|\bdo\s+anything\s+now\b|\bstay\s+in\s+character\b"
        r"|\b(?:developer|dev|god|jailbreak|dan|unrestricted|evil|opposite)\s+mode\s+"
        r"(?:enabled|activated|on)\b"
        r"|\b(?:enable|activate|enter|switch\s+to)\s+(?:dan|jailbreak|god|unrestricted|evil)"
        r"\s+mode\b"
        r"|\bjailbr(?:eak|oken)\s+(?:ai|assistant|chatbot|model|llm|gpt|mode|prompt|version)\b"
        r"|\bpretend\s+(?:that\s+)?(?:you\s+are|you're|to\s+be)\s+(?:an?\s+)?(?:not\s+an?\s+ai"
        rf"|{_UNBOUND_EN}|dan\b|free\s+from|no\s+longer)"
        r"|\byou\s+(?:now\s+)?have\s+no\s+(?:ethical\s+|moral\s+|content\s+)?"
        r"(?:restrictions|limitations|filters|guidelines|boundaries|rules)\s*(?:[.,;!]|$|and\b)"
        r"|\b(?:you\s+are|you're)\s+(?:now\s+)?(?:free\s+from|not\s+bound\s+by|no\s+longer\s+"
        r"bound\s+by)\s+(?:any\s+|all\s+|the\s+|your\s+)?(?:rules|restrictions|guidelines"
        r"|policies|filters|limitations)"
        r"|\b(?:bypass|disable|ignore|turn\s+off|remove)\s+(?:all\s+|any\s+|your\s+)+"
        r"(?:safety|content|ethical|moral)\s+(?:filters?|guidelines|polic(?:y|ies)|restrictions"
        r"|rules)",
    ),
    (
        "ru_ignore_instructions",
        rf"\b(?:{_VERB_RU})\s+(?:{_QUALIFIER_RU}[\s,]+){{1,4}}(?:\w+\s+)?{_RULES_RU}"
        rf"|\b(?:{_VERB_RU})\s+{_RULES_RU}\s+(?:выше|ранее|до\s+этого|которые\s+(?:тебе|вам)\s+"
        r"(?:дали|дали\s+ранее|были\s+даны))",
    ),
    (
        "ru_forget_everything",
        r"\b(?:забудь(?:те)?|сотри(?:те)?\s+из\s+памяти)\s+(?:вс[её]|обо\s+вс[её]м)\s*,?\s*"
        r"(?:что|чему)\s+(?:тебе|вам|тебя|вас|было|я|мы)\b"
        r"|\bзабудь(?:те)?\s+(?:вс[её]|обо\s+вс[её]м)\s+(?:выше|ранее|написанное|сказанное)",
    ),
    (
        "ru_you_are_now",
        r"(?:\b(?:ты|вы)\s+теперь|\bтеперь\s+(?:ты|вы))\s*[—–-]?\s*"
        r"(?:(?:не|просто|мой|моя|наш|настоящ\w*|нов\w*|друг\w*)\s+)?"
        rf"(?:\w+(?:ый|ий|ой|ая|яя)\s+)?(?:{_MACHINE_RU}\b|{_FREE_RU}"
        r"|неограниченн\w*|зл(?:ой|ая|ым)\b|хакер\w*|взломанн\w*"
        r"|в\s+режиме\s+(?:разработчика|бога|dan|джейлбрейка|без\s+ограничений))"
        r"|\b(?:ты|вы)\s+больше\s+не\s+(?:ии|ассистент\w*|бот\w*|модель|связан\w*|ограничен\w*)",
    ),
    (
        "ru_reveal_instructions",
        rf"\b(?:{_REVEAL_RU})\s+(?:мне\s+|нам\s+)?(?:(?:вс[её]|весь|все|полностью|дословно|целиком)"
        r"\s+)*(?:(?:сво\w*|тво\w*|исходн\w*|изначальн\w*|скрыт\w*|секретн\w*|внутренн\w*"
        r"|первоначальн\w*)\s+)+(?:системн\w*\s+)?(?:инструкци\w*|промпт\w*)"
        rf"|\b(?:{_REVEAL_RU})\s+(?:мне\s+|нам\s+)?(?:(?:вс[её]|весь|свой|твой|полностью|дословно"
        r"|целиком)\s+)*системн\w*\s+(?:промпт\w*|инструкци\w*|сообщени\w*)"
        r"|\b(?:повтори|процитируй)(?:те)?\s+(?:вс[её]\s+|весь\s+)?(?:текст|слова|сообщени\w*)"
        r"\s+выше",
    ),
    (
        "ru_system_prompt_override",
        r"\b(?:нов\w*|обновл[её]нн\w*|настоящ\w*|истинн\w*|секретн\w*)\s+системн\w*\s+"
        r"(?:промпт\w*|инструкци\w*|сообщени\w*)\s*(?:[:=\-—]|следующ)",
    ),
    (
        "ru_act_as",
        r"\b(?:действуй(?:те)?|веди(?:те)?\s+себя|отвечай(?:те)?|говори(?:те)?|пиши(?:те)?)\s+"
        r"(?:как|словно|будто|так,?\s+будто)\s+(?:бы\s+)?(?:(?:ты|вы)\s+)?"
        rf"(?:\w+\s+)?(?:{_FREE_RU}|(?:ии|ai|dan)\b|зл(?:ой|ая)\b|хакер\w*|взломанн\w*"
        r"|не\s+(?:ии|ассистент|бот|модель))"
        rf"|\b(?:отвечай(?:те)?|пиши(?:те)?|говори(?:те)?)\s+(?:\w+\s+)?{_FREE_RU}"
        r"|\b(?:притворись|притворитесь|представь|представьте)\s*,?\s+(?:что|будто)\s+(?:ты|вы)\s+"
        rf"(?:\w+\s+)?(?:не\s+(?:ии|ассистент|бот|модель|связан)|(?:ии|dan)\b|{_FREE_RU}"
        r"|зл(?:ой|ая)\b|взломанн\w*|хакер\w*)",
    ),
    (
        "ru_jailbreak",
        r"\bрежим\w*\s+(?:dan|джейлбрейка|бога|без\s+ограничений)\b"
        r"|\b(?:у\s+тебя|у\s+вас)\s+(?:больше\s+)?нет\s+(?:никаких\s+)?(?:ограничений|правил"
        r"|фильтров|запретов|цензуры)(?!\s+(?:на|по|в|для|при)\b)"
        r"|\bоставайся\s+в\s+образе\b|\bделай\s+(?:что\s+угодно|вс[её])\s+сейчас\b",
    ),
    (
        "chat_template_token",
        r"<\|[a-z0-9_]{2,40}\|>|\[/?inst\]|<</?sys>>|<(?:start|end)_of_turn>|<(?:bos|eos)>"
        r"|(?m:^[ \t]*#{2,4}[ \t]*(?:system|instruction|instructions|assistant|user|human"
        r"|response)[ \t]*:)"
        r"|</?(?:system|assistant|im_start|im_end)>|(?m:^[ \t]*\[(?:system|assistant)\][ \t]*:?)",
    ),
)
_NEGATABLE = frozenset(
    {
        "ignore_instructions",
        "disregard_above",
        "forget_everything",
        "reveal_instructions",
        "act_as",
        "ru_ignore_instructions",
        "ru_forget_everything",
        "ru_reveal_instructions",
        "ru_act_as",
    }
)
_COMPILED = tuple(
    (name, re.compile(pattern, re.IGNORECASE | re.UNICODE)) for name, pattern in _PATTERNS
)
_BASE64 = re.compile(rf"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{{{BASE64_MIN_CHARS},}}={{0,2}}")
_BASE64_MIX = (re.compile("[A-Z]"), re.compile("[a-z]"), re.compile("[0-9]"))

# Cyrillic letters that look like Latin ones, read as Latin inside a word with Latin letters.
_LOOKALIKES = str.maketrans("аеорсхуіјѕԁһкмтвнАВЕКМНОРСТХІЈЅ", "aeopcxyijsdhkmtbhABEKMHOPCTXIJS")
# A word with both Latin and Cyrillic letters (the look-ahead scans one word, not the text).
_MIXED_WORD = re.compile(r"\b(?=\w*[a-zA-Z])(?=\w*[\u0400-\u052f])\w+")


def _matching_view(text: str) -> tuple[str, Sequence[int]]:
    """The text to match patterns on, and for each of its characters the original offset."""
    if not _IGNORED_FOR_MATCHING.search(text) and unicodedata.is_normalized("NFKC", text):
        view: str = text
        origin: Sequence[int] = range(len(text))
    else:
        pieces: list[str] = []
        positions: list[int] = []
        start = 0
        for line in text.splitlines(keepends=True):  # most lines need no change: kept whole
            if not _IGNORED_FOR_MATCHING.search(line) and unicodedata.is_normalized("NFKC", line):
                pieces.append(line)
                positions.extend(range(start, start + len(line)))
            else:
                for index, char in enumerate(line, start=start):
                    if _IGNORED_FOR_MATCHING.match(char):
                        continue
                    normal = unicodedata.normalize("NFKC", char)
                    pieces.append(normal)
                    positions.extend([index] * len(normal))
            start += len(line)
        view, origin = "".join(pieces), positions
    return _MIXED_WORD.sub(lambda m: m.group().translate(_LOOKALIKES), view), origin


def _snippet(text: str) -> str:
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"


def _visible(text: str) -> str:
    """Invisible characters spelled out as <U+XXXX>; Unicode tag characters as the ASCII
    they hide."""
    out = []
    for char in text:
        code = ord(char)
        if 0xE0020 <= code <= 0xE007E:
            out.append(chr(code - 0xE0000))
        elif unicodedata.category(char) in ("Cf", "Cc") or 0xE0000 <= code <= 0xE007F:
            out.append(f"<U+{code:04X}>")
        else:
            out.append(char)
    return "".join(out)


def scan(text: str) -> list[InjectionFinding]:
    """Findings, by offset: what in `text` looks like an instruction to a model."""
    return sorted(set(_scan(text, nested=False)), key=lambda f: (f.offset, f.pattern))


def _scan(text: str, *, nested: bool) -> list[InjectionFinding]:
    findings: list[InjectionFinding] = []
    for start, end in _hidden_spans(text):
        hidden = text[start:end]
        name = (
            "hidden_tag_text" if "\U000e0000" <= hidden[0] <= "\U000e007f" else "hidden_characters"
        )
        findings.append(InjectionFinding(name, _snippet(_visible(hidden)), start))
    view, origin = _matching_view(text)
    for name, pattern in _COMPILED:
        for match in pattern.finditer(view):
            if name in _NEGATABLE and _NEGATION.search(
                view, max(0, match.start() - 40), match.start()
            ):
                continue  # "do not ignore previous instructions", "не игнорируйте правила"
            start = origin[match.start()]
            end = origin[match.end() - 1] + 1
            findings.append(InjectionFinding(name, _snippet(text[start:end]), start))
    for match in _BASE64.finditer(text):
        blob = match.group()
        if not all(kind.search(blob) for kind in _BASE64_MIX):
            continue  # a long slug or identifier, not encoded data
        findings.append(InjectionFinding("base64_blob", _snippet(blob), match.start()))
        decoded = None if nested else _decode_base64(blob)
        for inner in _scan(decoded, nested=True) if decoded else ():
            findings.append(
                InjectionFinding(f"base64/{inner.pattern}", inner.snippet, match.start())
            )
    return findings


def _decode_base64(blob: str) -> str | None:
    """The blob's text when it is base64 (standard or URL-safe) of UTF-8 text, else None."""
    blob = blob.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        data = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
        text = data.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    printable = sum(char.isprintable() or char.isspace() for char in text)
    return text if text and printable >= 0.95 * len(text) else None


# --- Sanitising ------------------------------------------------------------------------------

# Tags a prompt may use to fence retrieved text: never left to close or open a block.
DATA_TAGS = (
    "source", "sources", "document", "documents", "context", "retrieved", "system", "assistant",
    "instructions",
)  # fmt: skip
_TEMPLATE_TOKEN = re.compile(
    r"<\|[A-Za-z0-9_]{1,40}\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>|<(?:bos|eos)>"
    rf"|</?(?:{'|'.join(DATA_TAGS)})(?:\s[^<>]*)?>",
    re.IGNORECASE,
)
_FULL_WIDTH = str.maketrans({"<": "＜", ">": "＞", "[": "［", "]": "］"})


def sanitize_for_prompt(text: str) -> str:
    """The text with chat-template tokens and data-block tags re-spelled in full-width brackets
    and invisible characters removed (emoji sequences kept); other text unchanged."""
    spans = _hidden_spans(text)
    if spans:
        keep_from = [0, *(end for _, end in spans)]
        keep_to = [*(start for start, _ in spans), len(text)]
        text = "".join(text[a:b] for a, b in zip(keep_from, keep_to, strict=True))
    return _TEMPLATE_TOKEN.sub(lambda m: m.group().translate(_FULL_WIDTH), text)
