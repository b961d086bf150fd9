"""Keep aiogram's response classes built.

aiogram parses every Bot API answer with ``Response[method.__returning__]``, a pydantic
generic class that pydantic caches only weakly: once the cyclic collector has freed it, the
next call builds it again (milliseconds of schema building, ~90 times per 500 answered
messages in ``bot/bench_updates.py``). Holding the classes of the calls made while answering
and rating keeps each one built once per process.
"""

from __future__ import annotations

from typing import Any

from aiogram.methods import (
    AnswerCallbackQuery,
    DeleteMessage,
    EditMessageReplyMarkup,
    EditMessageText,
    GetMe,
    Response,
    SendChatAction,
    SendMessage,
    SendMessageDraft,
    SetMessageReaction,
    TelegramMethod,
)

_HOT_METHODS: tuple[type[TelegramMethod[Any]], ...] = (
    SendMessage,
    SendMessageDraft,
    SendChatAction,
    EditMessageText,
    EditMessageReplyMarkup,
    AnswerCallbackQuery,
    DeleteMessage,
    SetMessageReaction,
    GetMe,
)
_held: dict[Any, type[Response[Any]]] = {}


def hold_response_types() -> None:
    """Build (once) and hold the response classes of the bot's frequent calls."""
    for method in _HOT_METHODS:
        returning = method.__returning__
        if returning not in _held:
            _held[returning] = Response[returning]  # type: ignore[valid-type]
