"""Secrets never reach a log line or a message shown to people (loopgram.logging_setup)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from loopgram.i18n import t
from loopgram.logging_setup import (
    JsonFormatter,
    SecretMaskFilter,
    install_secret_masking,
    mask_secrets,
    secret_values,
    setup_logging,
)
from loopgram.settings import Settings

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
SHORT_URL = "https://api.telegram.org/bot123:ABC/sendMessage"
WEBHOOK_SECRET = "whs-Secret-value-42"
LLM_KEY = "llm-key-0123456789abcdef"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger as `loopgram` sets it up, writing into a buffer."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("INFO", "text", secrets=[TOKEN, WEBHOOK_SECRET, LLM_KEY])
    buffer = io.StringIO()
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    yield buffer
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _fail_with_url(url: str) -> None:
    raise ConnectionError(f"Cannot connect to host for url {url}")


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"GET https://api.telegram.org/bot{TOKEN}/getMe 200", TOKEN),
        (SHORT_URL, "123:ABC"),
        (f"token is {TOKEN}.", TOKEN),
        ("postgresql://loop:pa55word@db:5432/loopgram", "pa55word"),
        ("redis://:r3dis-pass@redis:6379/0", "r3dis-pass"),
        (f"header X-Telegram-Bot-Api-Secret-Token={WEBHOOK_SECRET}", WEBHOOK_SECRET),
    ],
)
def test_mask_secrets(text: str, gone: str) -> None:
    install_secret_masking([WEBHOOK_SECRET])
    masked = mask_secrets(text)
    assert gone not in masked and "***" in masked


def test_ordinary_text_is_left_alone() -> None:
    for text in ("robot12:walks", "price 12:30", "https://example.com/path?a=1", "bot: hi"):
        assert mask_secrets(text) == text


def test_log_lines_and_tracebacks_are_masked(captured: io.StringIO) -> None:
    log = logging.getLogger("loopgram.test")
    log.info("call https://api.telegram.org/bot%s/getMe failed", TOKEN)
    log.warning("webhook secret %s, llm key %s", WEBHOOK_SECRET, LLM_KEY)
    try:
        _fail_with_url(SHORT_URL)
    except ConnectionError:
        log.exception("send failed")
    try:
        _fail_with_url(f"https://api.telegram.org/bot{TOKEN}/sendMessage")
    except ConnectionError as exc:
        log.error("update.failed error=%r", exc, exc_info=exc)
    out = captured.getvalue()
    for secret in (TOKEN, "AAHdqTcvCH1vGWJ", "bot123:ABC", WEBHOOK_SECRET, LLM_KEY):
        assert secret not in out
    assert "Traceback" in out and "_fail_with_url" in out  # the traceback itself is kept
    assert "bot***/sendMessage" in out


def test_records_are_masked_for_any_handler(captured: io.StringIO) -> None:
    """A handler added later (Celery replaces the root handlers) has no filter of ours; the
    record is masked when it is created."""
    other = io.StringIO()
    handler = logging.StreamHandler(other)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("celery.like")
    log.addHandler(handler)
    try:
        try:
            _fail_with_url(SHORT_URL)
        except ConnectionError:
            log.exception("task failed with %s", TOKEN)
    finally:
        log.removeHandler(handler)
    line = json.loads(other.getvalue())
    assert TOKEN not in line["msg"] and "123:ABC" not in line["exc"]
    assert "ConnectionError" in line["exc"]


def test_the_filter_alone_masks_messages_and_exceptions() -> None:
    try:
        _fail_with_url(SHORT_URL)
    except ConnectionError as exc:
        record = logging.LogRecord(
            "x", logging.ERROR, "", 0, "with %s", (TOKEN,), (type(exc), exc, exc.__traceback__)
        )
    SecretMaskFilter([TOKEN]).filter(record)
    formatted = logging.Formatter().format(record)
    assert TOKEN not in formatted and "123:ABC" not in formatted and "ConnectionError" in formatted


def test_texts_shown_to_people_are_masked() -> None:
    install_secret_masking([LLM_KEY])
    shown = t("en", "error-adapter-server", detail=f"POST {SHORT_URL} key={LLM_KEY}")
    assert "123:ABC" not in shown and LLM_KEY not in shown


def test_every_secret_setting_is_collected() -> None:
    settings = Settings()
    telegram = settings.telegram.model_copy(
        update={"telegram_bot_token": SecretStr(TOKEN), "webhook_secret": SecretStr("w" * 20)}
    )
    llm = settings.llm.model_copy(update={"llm_api_key": SecretStr(LLM_KEY)})
    values = secret_values(Settings(telegram=telegram, llm=llm))
    assert {TOKEN, "w" * 20, LLM_KEY} <= set(values)
