"""Personal data and secrets out of text before it leaves the database (datasets, reports).

`scrub` replaces each find with a typed placeholder (`[PHONE]`, `[EMAIL]`, `[CARD]`, `[IBAN]`,
`[TOKEN]`, `[API_KEY]`, `[JWT]`, `[PRIVATE_KEY]`, `[SECRET]`). The rules lean to precision on
digits: dates, years, prices, version numbers and counts must survive, because a model trained
on placeholders where numbers were learns to hallucinate placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# Horizontal space and a dash between digit groups: "8 912 345-67-89", "8 - 912".
_SP = r"[ \t\u00a0]"
_SEP = rf"(?:{_SP}?[-\u2010-\u2013]?{_SP}?)"
# Digits glued to letters, to a path ("/items/8912...") or to a decimal point are not phones.
_BEFORE = r"(?<![\w/+])(?<!\d[.,])"
_AFTER = r"(?!\w)(?![.,]\d)"
_KEY_CHARS = r"[A-Za-z0-9_\-]"


# A check returns (replacement for the whole match, the personal part found) or None to keep
# the match as it is (a Luhn-invalid "card" is just a number).
_Check = Callable[[re.Match[str]], "tuple[str, str] | None"]


@dataclass(frozen=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    check: _Check | None = None

    @property
    def placeholder(self) -> str:
        return f"[{self.kind.upper()}]"


def _has_digit_and_letter(value: str) -> bool:
    return any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> tuple[str, str] | None:
    digits = re.sub(r"\D", "", match.group(0))
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return "[CARD]", match.group(0)
    return None


def _iban_ok(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _longest_valid_prefix(
    text: str, placeholder: str, valid: Callable[[str], bool]
) -> tuple[str, str] | None:
    """A candidate may run on into what follows ("DE89 ... 00 OK", "+44 20 7946 0958 15"):
    drop space-separated groups from the end until `valid` holds, and keep what was dropped."""
    cut = len(text)
    while cut > 0:
        head = text[:cut].rstrip()
        if valid(head):
            return placeholder + text[len(head) :], head
        cut = text.rfind(" ", 0, cut)
    return None


def _iban(match: re.Match[str]) -> tuple[str, str] | None:
    return _longest_valid_prefix(
        match.group(0), "[IBAN]", lambda head: _iban_ok(head.replace(" ", ""))
    )


# Where the length is fixed, a following number is not swallowed: "+7 912 345 67 89 8 912 ...".
_NATIONAL_LENGTH = {"7": 11, "1": 11}


def _international_phone_ok(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    if not 8 <= len(digits) <= 15 or not text[-1].isdigit():
        return False
    if len(digits) != _NATIONAL_LENGTH.get(digits[0], len(digits)):
        return False
    # "+10 000 000 subscribers" is a count, not a phone: pure thousands grouping.
    return re.fullmatch(r"\+\d{1,3}(?:[ \u00a0]\d{3})+", text) is None


def _international_phone(match: re.Match[str]) -> tuple[str, str] | None:
    return _longest_valid_prefix(match.group(0), "[PHONE]", _international_phone_ok)


def _api_key(match: re.Match[str]) -> tuple[str, str] | None:
    # "sk-learn-preprocessing" is a word; real keys are random and carry digits.
    value = match.group(0)
    return ("[API_KEY]", value) if _has_digit_and_letter(value) else None


def _replace_value(match: re.Match[str], value: str) -> tuple[str, str]:
    whole, start = match.group(0), match.start("value") - match.start(0)
    return whole[:start] + "[SECRET]" + whole[start + len(value) :], value


def _keyword_secret(match: re.Match[str]) -> tuple[str, str] | None:
    value = match.group("value")
    # Random strings of this length carry a digit; "tokenisation-explained" does not.
    if not any(c.isdigit() for c in value):
        return None
    return _replace_value(match, value)


def _password(match: re.Match[str]) -> tuple[str, str] | None:
    value = match.group("value").rstrip(".,;:!?)»\"'")
    # "Password: required." is prose; a password has a digit or a symbol inside it.
    if len(value) < 6 or not re.search(r"\d|[!@#$%^&*+=~|<>]", value):
        return None
    return _replace_value(match, value)


_KEY_NAMES = (
    r"api[_\- ]?key|access[_\- ]?key|secret(?:[_\- ]?key)?|client[_\- ]?secret|token|"
    r"auth|bearer|key|токен\w*|ключ\w*|секрет\w*"
)
_LOGIN_NAMES = r"password|passwd|pwd|pass|парол\w*"
# Between the word and the value: "token: x", "SECRET_KEY = 'x'", "ключ API — x", "key is x".
_GLUE = r"[\s\"'`]*(?:(?:is|это|равен|API|api)\s*)?[:=\u2014\u2013-]?[\s\"'`]*"
_LOGIN_GLUE = r"[^\S\n]*(?:[:=\u2014\u2013]|-(?=\s))[^\S\n]*[\"'`]?"
# A word of its own: not inside another word ("monkey", "keyboard"); "DB_PASSWORD" is fine.
_WORD_START = r"(?<![^\W\d_])"
_WORD_END = r"(?![^\W\d])"

_RULES: tuple[_Rule, ...] = (
    _Rule(
        "private_key",
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
    ),
    _Rule(
        "jwt",
        re.compile(
            rf"(?<!{_KEY_CHARS})eyJ{_KEY_CHARS}{{8,}}\.eyJ{_KEY_CHARS}{{8,}}\.{_KEY_CHARS}{{8,}}"
        ),
    ),
    _Rule("token", re.compile(rf"(?<![\d:])\d{{6,12}}:{_KEY_CHARS}{{35}}(?!{_KEY_CHARS})")),
    _Rule(
        "api_key",
        re.compile(
            rf"(?<!{_KEY_CHARS})(?:"
            r"sk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{20,}"
            r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}"
            r"|xox[bpars]-[A-Za-z0-9\-]{10,}"
            r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
            r"|AIza[0-9A-Za-z_\-]{35}"
            r"|[rs]k_(?:live|test)_[0-9A-Za-z]{16,}"
            rf")(?!{_KEY_CHARS})"
        ),
        _api_key,
    ),
    _Rule(
        "email",
        # Anchored at the start of a run: an unanchored local part makes long words quadratic.
        re.compile(r"(?<![\w.%+\-])[\w.%+\-]+@(?:[\w\-]+\.)+[^\W\d_]{2,}(?![\w\-])"),
    ),
    _Rule(
        "iban",
        re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
        _iban,
    ),
    _Rule(
        "card",
        re.compile(
            r"(?<![\w.,\-])(?:\d{13,19}"
            r"|\d{4}([ \-])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{1,3})?"
            r"|\d{4}([ \-])\d{6}\2\d{4,5})(?![\w\-])(?![.,]\d)"
        ),
        _card,
    ),
    _Rule(
        "phone",
        # E.164 and its spaced spellings: "+44 20 7946 0958", "+1 (415) 555-2671", "+7 (912) ...".
        re.compile(rf"{_BEFORE}\+[1-9][\d\u00a0 ()\-]{{6,22}}\d{_AFTER}"),
        _international_phone,
    ),
    _Rule(
        "phone",
        re.compile(
            # Russian: +7 / 7 / 8, a three-digit code (in brackets or not), then 3-2-2.
            rf"{_BEFORE}(?:\+{_SP}?7|7|8){_SEP}"
            rf"(?:\({_SP}?[3-9]\d\d{_SP}?\)|[3-9]\d\d){_SEP}"
            rf"\d{{3}}{_SEP}\d\d{_SEP}\d\d{_AFTER}"
            # Without a country code: a bracketed code, or a mobile 9xx with separators.
            rf"|{_BEFORE}\({_SP}?\d{{3}}{_SP}?\){_SEP}"
            rf"\d{{3}}{_SEP}(?:\d\d{_SEP}\d\d|\d{{4}}){_AFTER}"
            rf"|{_BEFORE}9\d\d[ \u00a0\-]\d{{3}}[ \u00a0\-]\d\d[ \u00a0\-]\d\d{_AFTER}"
        ),
    ),
    _Rule(
        "secret",
        re.compile(
            rf"(?i){_WORD_START}(?:{_KEY_NAMES}){_WORD_END}(?-i:{_GLUE})"
            r"(?P<value>[A-Za-z0-9+/=_\-.~]{16,}(?<![.\-]))"
        ),
        _keyword_secret,
    ),
    _Rule(
        "secret",
        re.compile(
            rf"(?i){_WORD_START}(?:{_LOGIN_NAMES}){_WORD_END}{_LOGIN_GLUE}"
            r"(?P<value>[^\s\"'`]{1,64})"
        ),
        _password,
    ),
)


def _pass(text: str, found: list[tuple[str, str]] | None) -> str:
    for rule in _RULES:

        def replace(match: re.Match[str], rule: _Rule = rule) -> str:
            if rule.check is None:
                result: tuple[str, str] | None = (rule.placeholder, match.group(0))
            else:
                result = rule.check(match)
            if result is None:
                return match.group(0)
            if found is not None:
                found.append((rule.kind, result[1]))
            return result[0]

        text = rule.pattern.sub(replace, text)
    return text


def scrub(text: str) -> str:
    """Replace personal data and secrets with typed placeholders; idempotent.

    Passes repeat until nothing changes: a replacement can expose a new match next to it, and
    a fixed point is what makes `scrub(scrub(x)) == scrub(x)` hold. Every replacement removes
    digits, "@" or a key block and placeholders contain none, so this ends in a few passes.
    """
    for _ in range(32):
        scrubbed = _pass(text, None)
        if scrubbed == text:
            return scrubbed
        text = scrubbed
    return text


def find_pii(text: str) -> list[tuple[str, str]]:
    """`(kind, matched text)` for everything `scrub` would replace, in order of discovery."""
    found: list[tuple[str, str]] = []
    for _ in range(32):
        scrubbed = _pass(text, found)
        if scrubbed == text:
            break
        text = scrubbed
    return found
