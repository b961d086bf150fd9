"""Structured logs (key=value or JSON) on stderr, with secrets masked.

Masking works at two levels, so no path lets a secret through:
- `install_secret_masking` wraps the log record factory: every record any logger creates
  (ours, aiogram's, aiohttp's, Celery's after it replaced the root handlers) has its message
  and its formatted traceback masked before a handler or formatter sees it;
- `SecretMaskFilter` does the same on our stderr handler (and on any handler it is added to).

What is masked: the configured secret values (bot token, webhook secret, LLM and Qdrant API
keys), anything shaped like a bot token (`123456:AA...`), the token in a Bot API URL
(`.../bot123:ABC/sendMessage` -> `.../bot***/sendMessage`), and passwords in URLs
(`postgresql://user:***@host`). `mask_secrets` is the same function for texts shown to
people (`loopgram.i18n.t` runs it over every argument it formats).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

MASK = "***"
_TOKEN = re.compile(r"\b\d{5,12}:[A-Za-z0-9_-]{30,}\b")
# The token inside a Bot API URL, whatever its length: https://api.telegram.org/bot<id>:<secret>/
_BOT_URL_TOKEN = re.compile(r"(?<![A-Za-z0-9])bot\d{1,20}:[A-Za-z0-9_-]+")
# user:password@ in a URL (database, Redis, broker URLs in connection errors).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)([^\s@/]+)(@)")

_secrets: set[str] = set()
_lock = threading.Lock()
_factory_installed = False


def register_secrets(secrets: Iterable[str | None]) -> None:
    """Remember secret values to mask from now on (short values are ignored: masking "abc"
    everywhere would mangle logs and protect nothing)."""
    with _lock:
        _secrets.update(s for s in secrets if s and len(s) >= 8)


def mask_secrets(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every known secret and token-shaped string replaced by `***`."""
    if not text:
        return text
    masked = _BOT_URL_TOKEN.sub(f"bot{MASK}", text)
    masked = _TOKEN.sub(MASK, masked)
    masked = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", masked)
    # Longest first, so a secret containing another one is masked whole.
    for secret in sorted({*_secrets, *extra}, key=len, reverse=True):
        if secret in masked:
            masked = masked.replace(secret, MASK)
    return masked


def secret_values(settings: Any) -> list[str]:
    """Every `SecretStr` value in a `loopgram.settings.Settings` (token, webhook secret, API
    keys), read by shape so a secret added to settings later is masked too."""
    from pydantic import BaseModel, SecretStr

    values: list[str] = []
    for group in vars(settings).values():
        if not isinstance(group, BaseModel):
            continue
        for name in type(group).model_fields:
            value = getattr(group, name, None)
            if isinstance(value, SecretStr):
                values.append(value.get_secret_value())
    return values


def mask_record(record: logging.LogRecord, extra: Iterable[str] = ()) -> logging.LogRecord:
    """Mask a record's message, traceback and stack in place; returns it."""
    extra = list(extra)
    try:
        message = record.getMessage()
    except Exception:  # bad args: logging reports it at emit time, we must not raise here
        message = None
    if message is not None:
        masked = mask_secrets(message, extra)
        if masked != message:
            record.msg, record.args = masked, None
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        masked = mask_secrets(record.exc_text, extra)
        if masked != record.exc_text:
            record.exc_text = masked
            # Formatters that re-render exc_info (instead of using exc_text) would leak it.
            record.exc_info = None
    if record.stack_info:
        record.stack_info = mask_secrets(record.stack_info, extra)
    return record


class SecretMaskFilter(logging.Filter):
    """Masks bot tokens (by shape and by value) in every record, including URLs in errors and
    tracebacks. Secrets given here are registered for `mask_secrets` too."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 8]
        register_secrets(self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        mask_record(record, self.secrets)
        return True


def install_secret_masking(secrets: Iterable[str | None] = ()) -> None:
    """Register `secrets` and mask every log record of this process when it is created."""
    global _factory_installed
    register_secrets(secrets)
    with _lock:
        if _factory_installed:
            return
        previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return mask_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _factory_installed = True


# ------------------------------------------------------------------ unit-of-work fields

LOG_CONTEXT_FIELDS = ("update_id", "interaction_id", "task_id")
"""Fields that name the unit of work a log line belongs to; set with `bind_log_context`."""

_log_context: ContextVar[dict[str, Any]] = ContextVar("loopgram_log_context", default={})  # noqa: B039 (never mutated)


def bind_log_context(**fields: Any) -> Token[dict[str, Any]]:
    """Add `fields` (update_id=..., interaction_id=...) to every log line of this context
    (the current asyncio task and what it starts, threads of `asyncio.to_thread` included)
    until `reset_log_context(token)`. None values are ignored."""
    current = _log_context.get()
    merged = {**current, **{k: v for k, v in fields.items() if v is not None}}
    return _log_context.set(merged)


def reset_log_context(token: Token[dict[str, Any]]) -> None:
    _log_context.reset(token)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    token = bind_log_context(**fields)
    try:
        yield
    finally:
        reset_log_context(token)


def current_log_context() -> dict[str, Any]:
    return dict(_log_context.get())


class LogContextFilter(logging.Filter):
    """Copies the bound unit-of-work fields onto each record (`record.update_id`, ...), where
    formatters find them; a field the call already passed with `extra=` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _log_context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def _context_fields(record: logging.LogRecord, message: str) -> dict[str, Any]:
    """The unit-of-work fields of a record that its message does not already spell out."""
    return {
        name: getattr(record, name)
        for name in LOG_CONTEXT_FIELDS
        if getattr(record, name, None) is not None and f"{name}=" not in message
    }


class KeyValueFormatter(logging.Formatter):
    """`ts level=.. logger=.. message update_id=.. interaction_id=..`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # before any traceback
        text = super().formatMessage(record)
        fields = _context_fields(record, record.message)
        if not fields:
            return text
        return text + " " + " ".join(f"{name}={value}" for name, value in fields.items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        payload: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": message,
        }
        payload.update(_context_fields(record, ""))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exc"] = record.exc_text
        return json.dumps(payload, ensure_ascii=False)


def setup_logging(
    level: str = "INFO", fmt: str = "text", secrets: Iterable[str | None] = ()
) -> None:
    values = [s for s in secrets if s]
    install_secret_masking(values)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SecretMaskFilter(values))
    handler.addFilter(LogContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    noisy_loggers = (
        "httpx",
        "aiogram.event",
        "kombu",
        "celery.worker.strategy",
        "celery.app.trace",
        "alembic.runtime.plugins",  # a line per plugin each time alembic is imported
    )
    for noisy in noisy_loggers:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
