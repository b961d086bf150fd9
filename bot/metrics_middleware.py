"""Counts and times every update (`loopgram_updates_total`, `loopgram_update_seconds`) and
binds `update_id` to every log line written while the update is handled.

Registered before the other update middlewares (only the arrival stamp comes first), so its
time covers the others (ordering, dedup, user context) and the handlers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import TelegramObject, Update
from aiogram.types.update import UpdateTypeLookupError

from loopgram import metrics
from loopgram.logging_setup import bind_log_context, reset_log_context

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def _kind(event: TelegramObject) -> str:
    if not isinstance(event, Update):
        return type(event).__name__.lower()
    try:
        return event.event_type
    except UpdateTypeLookupError:  # an update type newer than this aiogram
        return "unknown"


class UpdateMetricsMiddleware(BaseMiddleware):
    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        kind = _kind(event)
        update_id = event.update_id if isinstance(event, Update) else None
        token = bind_log_context(update_id=update_id)
        started = time.perf_counter()
        outcome = "error"
        try:
            result = await handler(event, data)
            outcome = "unhandled" if result is UNHANDLED else "handled"
            return result
        finally:
            metrics.UPDATES.labels(type=kind, outcome=outcome).inc()
            metrics.UPDATE_SECONDS.labels(type=kind).observe(time.perf_counter() - started)
            reset_log_context(token)
