"""PII scrubbing: what must go, what must stay, and the properties training data relies on."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from loopgram.pii import find_pii, scrub

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwi"
    "aWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

# (text, expected) — the personal part replaced, everything around it kept.
POSITIVE = [
    # Russian phones, in the spellings people use
    ("Звоните +7 (912) 345-67-89 после обеда", "Звоните [PHONE] после обеда"),
    ("мой номер 89123456789", "мой номер [PHONE]"),
    ("8 912 345 67 89", "[PHONE]"),
    ("8-912-345-67-89", "[PHONE]"),
    ("8 (912) 345-67-89", "[PHONE]"),
    ("8(912)3456789", "[PHONE]"),
    ("+79123456789", "[PHONE]"),
    ("+7 912 345 67 89", "[PHONE]"),
    ("+7-912-345-67-89", "[PHONE]"),
    ("+7(912)345-67-89.", "[PHONE]."),
    ("7 912 3456789", "[PHONE]"),
    ("горячая линия 8 (800) 555-35-35", "горячая линия [PHONE]"),
    ("8 800 5553535", "[PHONE]"),
    ("офис: (495) 123-45-67", "офис: [PHONE]"),
    ("мобильный 912 345-67-89", "мобильный [PHONE]"),
    ("тел.89123456789", "тел.[PHONE]"),
    ("8\u00a0912\u00a0345\u00a067\u00a089", "[PHONE]"),
    ("номера: +7 912 345 67 89 8 912 345 67 88", "номера: [PHONE] [PHONE]"),
    # International E.164
    ("call me at +44 20 7946 0958", "call me at [PHONE]"),
    ("US office +1 (415) 555-2671, ask for Bob", "US office [PHONE], ask for Bob"),
    ("+4930123456", "[PHONE]"),
    ("+33 1 23 45 67 89", "[PHONE]"),
    # E-mail
    ("write to ivan.petrov+bot@example.com please", "write to [EMAIL] please"),
    ("почта: иван@почта.рф.", "почта: [EMAIL]."),
    ("<a.b-c@mail.co.uk>", "<[EMAIL]>"),
    # Payment cards (Luhn-valid)
    ("карта 4111 1111 1111 1111", "карта [CARD]"),
    ("card 4111-1111-1111-1111, exp 12/27", "card [CARD], exp 12/27"),
    ("amex 3782 822463 10005", "amex [CARD]"),
    ("5500000000000004", "[CARD]"),
    ("Мир 2200 0000 0000 0004", "Мир [CARD]"),
    # IBAN (checksum-valid)
    ("IBAN DE89 3704 0044 0532 0130 00", "IBAN [IBAN]"),
    ("GB82 WEST 1234 5698 7654 32 OK", "[IBAN] OK"),
    ("GB82WEST12345698765432", "[IBAN]"),
    # Secrets by shape
    (f"bot token {BOT_TOKEN}", "bot token [TOKEN]"),
    (f"https://api.telegram.org/bot{BOT_TOKEN}/getMe", "https://api.telegram.org/bot[TOKEN]/getMe"),
    ("sk-proj-abc123DEF456ghi789JKL012mno", "[API_KEY]"),
    ("OPENAI_API_KEY=sk-abc123DEF456ghi789JKL012", "OPENAI_API_KEY=[API_KEY]"),
    ("ghp_" + "a1B2" * 9, "[API_KEY]"),
    ("slack xoxb-1234567890-abcdefghij", "slack [API_KEY]"),
    ("AKIAIOSFODNN7EXAMPLE", "[API_KEY]"),
    (f"Authorization: {JWT}", "Authorization: [JWT]"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\nnext",
        "[PRIVATE_KEY]\nnext",
    ),
    # Secrets by the word before them
    ("token: 3f9a1b2c4d5e6f708192a3b4c5d6e7f8", "token: [SECRET]"),
    ("SECRET_KEY=8f14e45fceea167a5a36dedd4bea2543", "SECRET_KEY=[SECRET]"),
    ("api_key = 'AbC123xyz789LmNoPqRsTuV'", "api_key = '[SECRET]'"),
    ("the key is a1b2c3d4e5f6a7b8c9d0", "the key is [SECRET]"),
    ("Authorization: Bearer abcDEF123456ghiJKL789", "Authorization: Bearer [SECRET]"),
    ("ключ API — dGhpcyBpcyBhIHNlY3JldCBrZXkx9", "ключ API — [SECRET]"),
    ("мой токен: Zm9vYmFyYmF6cXV4MTIzNDU2", "мой токен: [SECRET]"),
    ("секрет=0a1b2c3d4e5f60718293a4b5", "секрет=[SECRET]"),
    ("пароль: Qwerty123!", "пароль: [SECRET]!"),
    ("Пароль от вайфая - kotik2024", "Пароль от вайфая - kotik2024"),  # no glue: kept
    ("DB_PASSWORD=hunter2.", "DB_PASSWORD=[SECRET]."),
    ("password: p@ss-word", "password: [SECRET]"),
]

NEGATIVE = [
    # dates, times, years
    "Встреча 12.03.2024 в 14:30",
    "2024-03-12T08:15:00Z",
    "1/2/2024 и 31.12.1999",
    "в 2023 году 1500 человек",
    "2024-2025 учебный год",
    "с 9 до 18, обед 13:00-14:00",
    # prices and counts
    "цена 1 500 000 ₽",
    "$1,299.99 or €1.299,99",
    "8 800 000 рублей",
    "+10 000 000 подписчиков",
    "12345 шагов за день",
    "счётчик: 1234567890123",
    "население 146 447 424 человека",
    # versions, identifiers, numbers that are not personal
    "Python 3.11.4",
    "version 10.0.19045.3803",
    "IP 192.168.1.1",
    "ISBN 978-5-17-118366-2",
    "ИНН 7707083893",
    "ticket #123456",
    "0.89123456789",
    "координаты 55.7558, 37.6173",
    "https://example.com/items/89123456789",
    "4111 1111 1111 1112",  # fails Luhn
    # temperatures and ranges
    "+15 градусов, к вечеру +20...+25",
    "8-10 часов",
    "тел. 8-800",
    # words next to the trigger words
    "@durov написал в канал",
    "Нужен токен доступа для авторизации",
    "The key idea is simple",
    "пароль должен быть длинным",
    "Password: required.",
    "Мой пароль: надёжный",
    "the secret ingredient is love",
    "sk-learn-preprocessing-module",
    "tokenization is explained in chapter 3",
    "ключ к успеху — постоянство",
    "key: deadbeefdeadbeefdead",
]


@pytest.mark.parametrize(("text", "expected"), POSITIVE)
def test_personal_data_is_replaced(text: str, expected: str) -> None:
    assert scrub(text) == expected
    assert scrub(expected) == expected


@pytest.mark.parametrize("text", NEGATIVE)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub(text) == text
    assert find_pii(text) == []


def test_iban_needs_its_checksum() -> None:
    # One digit off: not an IBAN (what is left may still look like a card number).
    assert "iban" not in {kind for kind, _ in find_pii("DE89 3704 0044 0532 0130 01")}
    assert find_pii("DE89 3704 0044 0532 0130 00") == [("iban", "DE89 3704 0044 0532 0130 00")]


def test_find_pii_reports_kind_and_value() -> None:
    text = "Пишите ivan@example.com или звоните 8 (912) 345-67-89, пароль: Qwerty123"
    assert find_pii(text) == [
        ("email", "ivan@example.com"),
        ("phone", "8 (912) 345-67-89"),
        ("secret", "Qwerty123"),
    ]
    assert find_pii(scrub(text)) == []


def test_long_text_without_pii_is_fast() -> None:
    # An unanchored e-mail local part would make this quadratic.
    text = "a" * 200_000 + " " + "1" * 50_000
    assert scrub(text) == text


PII_SAMPLES = [text for text, _ in POSITIVE] + [
    "+7 912 345 67 89",
    "ivan@example.com",
    "4111111111111111",
    BOT_TOKEN,
    JWT,
    "token=",
    "password: ",
    "8 (",
    "@",
    "+",
    "[PHONE]",
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(PII_SAMPLES),
            st.text(max_size=30),
            st.text(alphabet="0123456789 +-()@.:=_abcdefAKIxsk", max_size=30),
        ),
        max_size=8,
    ).map("".join)
)
@example("+7 912 345 67 89 8 912 345 67 88")
@example("8 912 345 67 89ivan@example.com")
def test_scrub_is_idempotent(text: str) -> None:
    once = scrub(text)
    assert scrub(once) == once


CYRILLIC = "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"
LATIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TRIGGER_WORDS = [
    "token", "key", "secret", "password", "пароль", "ключ", "токен", "Bearer", "API_KEY",
    "sk", "eyJ", "AKIA", "ghp", "xoxb", "IBAN", "DE", "тел",
]  # fmt: skip
WORD = st.one_of(
    st.text(alphabet=CYRILLIC, min_size=1, max_size=12),
    st.text(alphabet=LATIN, min_size=1, max_size=12),
    st.sampled_from(TRIGGER_WORDS),
)
PUNCT = st.sampled_from(["", "", "", ",", ".", "!", "?", ":", ";", " —", ")", "»", "'", '"', "-"])
PROSE = st.lists(st.tuples(WORD, PUNCT).map("".join), max_size=40).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(PROSE)
@example("The key: Password — token is secret. Пароль: надёжный, ключ — у Bearer.")
def test_prose_without_digits_or_at_is_unchanged(text: str) -> None:
    assert scrub(text) == text
