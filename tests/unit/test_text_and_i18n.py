"""Rendering answers for Telegram, locale files, settings parsing, the spool, log masking."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.update_guard import update_body_problem
from loopgram.i18n import LOCALES_DIR, message_ids, pick_language, t
from loopgram.logging_setup import SecretMaskFilter
from loopgram.settings import AccessSettings, Settings
from loopgram.spool import Spool
from loopgram.telegram_text import (
    TELEGRAM_LIMIT,
    markdown_to_html,
    render_parts,
    split_markdown,
    visible_length,
)

ALLOWED_TAGS = {"b", "i", "s", "code", "pre", "a"}


def assert_valid_telegram_html(text: str) -> None:
    """Balanced tags from Telegram's set; what the Bot API's parser would accept."""
    stack: list[str] = []
    for match in re.finditer(r"<(/?)([a-z]+)[^>]*>", text):
        closing, tag = match.group(1), match.group(2)
        assert tag in ALLOWED_TAGS, tag
        if closing:
            assert stack and stack.pop() == tag, text
        else:
            stack.append(tag)
    assert not stack, text
    stripped = re.sub(r"<[^>]+>", "", text)
    assert "<" not in stripped and ">" not in stripped


def test_markdown_subset_renders() -> None:
    html = markdown_to_html(
        "# Plan\n**bold** _it_ `a<b` [doc](https://x.io/?a=1&b=2)\n```py\nx = 1 < 2\n```"
    )
    assert html == (
        '<b>Plan</b>\n<b>bold</b> <i>it</i> <code>a&lt;b</code> <a href="https://x.io/?a=1&amp;b=2">doc</a>\n'
        '<pre><code class="language-py">x = 1 &lt; 2</code></pre>'
    )
    assert markdown_to_html("snake_case and 2*3*4") == "snake_case and 2*3*4"


def test_split_keeps_fences_balanced_and_under_the_limit() -> None:
    text = "intro\n\n```python\n" + "print('x')\n" * 900 + "```\n\noutro"
    parts = split_markdown(text)
    assert len(parts) >= 3
    for part in parts:
        assert part.count("```") % 2 == 0
    for html in render_parts(text):
        assert visible_length(html) <= TELEGRAM_LIMIT
        assert_valid_telegram_html(html)


def test_emoji_count_twice_towards_the_limit() -> None:
    text = "😀" * 5000
    parts = render_parts(text)
    assert len(parts) == 3
    assert all(visible_length(p) <= TELEGRAM_LIMIT for p in parts)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([*"ab *_`[]()#~<>&\n😀ы", "**", "```", "\n\n", "https://x.io"]),
        max_size=1500,
    ).map("".join)
)
def test_any_model_output_renders_to_valid_parts(text: str) -> None:
    for html in render_parts(text):
        assert visible_length(html) <= TELEGRAM_LIMIT
        assert_valid_telegram_html(html)


def test_locales_have_the_same_keys_and_are_used() -> None:
    assert message_ids("ru") == message_ids("en")
    source = "\n".join(p.read_text() for p in Path(LOCALES_DIR).parents[1].glob("**/*.py"))
    for key in message_ids("en"):
        dynamic = key.startswith(
            (
                "assistant-",
                "reason-",
                "command-",
                "error-",
                "report-status-",
                "moderation-label-",
                "moderation-action-",
                "option-",
                "meaning-",
                "review-reason-",
                "review-status-",
            )
        )
        assert dynamic or f'"{key}"' in source, f"unused locale key {key}"


@pytest.mark.parametrize(
    ("lang", "status", "expected"),
    [
        ("ru", "active", "paraphrase-v2 уже активен."),
        ("ru", "canary", "paraphrase-v2 уже на канарейке."),
        ("en", "active", "paraphrase-v2 is already active."),
    ],
)
def test_adapter_state_texts_name_the_status_in_the_language(
    lang: str, status: str, expected: str
) -> None:
    assert t(lang, "error-adapter-already", name="paraphrase-v2", status=status) == expected


def test_language_choice() -> None:
    assert pick_language("ru") == "ru" and pick_language("uk-UA") == "ru"
    assert pick_language("de") == "en" and pick_language(None) == "en"
    assert pick_language("ru", default="en") == "en"
    assert t("xx", "reset-done").startswith("🧹 Done")
    assert t("ru", "no-such-key") == "no-such-key"


def test_id_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_IDS", "1, 2;3")
    monkeypatch.setenv("MODERATOR_CHAT_ID", "")
    access = AccessSettings()
    assert access.admin_ids == [1, 2, 3] and access.moderator_chat_id is None
    assert access.group_allowed(-100)
    monkeypatch.setenv("ALLOWED_CHAT_IDS", "-100")
    assert not AccessSettings().group_allowed(-200)
    monkeypatch.setenv("BOT_MODE", "carrier-pigeon")
    with pytest.raises(ValueError):
        Settings.load()


def test_spool_keeps_what_it_could_not_deliver(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.jsonl")
    for i in range(3):
        spool.append({"n": i})
    (tmp_path / "s.jsonl").open("a").write("{broken\n")
    delivered: list[int] = []

    def deliver(payload: dict[str, int]) -> None:
        if payload["n"] == 2 and not delivered.count(99):
            delivered.append(99)
            raise ConnectionError("down")
        delivered.append(payload["n"])

    assert spool.replay(deliver) == 2 and len(spool) == 2
    assert spool.replay(deliver) == 2 and len(spool) == 0
    assert delivered == [0, 1, 99, 2]


def test_token_is_masked_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    record = logging.LogRecord(
        "x", logging.ERROR, "", 0, "call https://api/bot%s/getMe failed", (token,), None
    )
    SecretMaskFilter([token]).filter(record)
    assert token not in record.getMessage() and "***" in record.getMessage()


@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ({"update_id": 1, "message": {}}, True),
        ({"update_id": 1}, False),
        ({"update_id": 1, "message": {}, "callback_query": {}}, False),
        ({"update_id": 1, "message": None}, False),  # validates, then has no update kind
        ({"update_id": 1, "message": {}, "callback_query": None}, True),
        ({"update_id": 1, "message": {"text": "a\x00b"}}, False),
        ({"update_id": 1, "message": {"chat": {"id": 2**70}}}, False),
        ([{"update_id": 1}], False),
        (None, False),
    ],
)
def test_update_guard(body: object, ok: bool) -> None:
    assert (update_body_problem(json.loads(json.dumps(body))) is None) is ok
