"""Webhook mode: an aiohttp endpoint that checks Telegram's secret header in constant time.

Bodies over the size limit get 413, bodies that are not an Update get 400, and a valid
update is answered 200 at once and processed in the background (Telegram waits for no
one; a re-delivery after a crash is dropped by the dedup middleware).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from aiohttp import web
from pydantic import ValidationError

from bot.ops_http import add_ops_routes
from bot.update_guard import update_body_problem
from loopgram.readiness import ReadinessChecker

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)


class WebhookHandler:
    def __init__(self, dp: Dispatcher, bot: Bot, *, secret: str, **kwargs: Any) -> None:
        self.dp = dp
        self.bot = bot
        self.secret = secret.encode()
        self.kwargs = kwargs
        self._tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER)
        if given is None:
            return _error(401, "missing secret token")
        if not hmac.compare_digest(given.encode(), self.secret):
            log.warning("webhook.bad_secret remote=%s", request.remote)
            return _error(403, "wrong secret token")
        if request.content_type != "application/json":
            return _error(415, "Content-Type must be application/json")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "body too large")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return _error(400, "body is not JSON")
        problem = update_body_problem(data)
        if problem is not None:
            log.info("webhook.rejected reason=%s", problem)
            return _error(400, problem)
        try:
            update = Update.model_validate(data, context={"bot": self.bot})
        except (ValidationError, RecursionError) as exc:
            log.info("webhook.invalid_update error=%s", str(exc)[:200])
            return _error(400, "body is not a valid Update")
        task = asyncio.create_task(self._process(update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.json_response({})

    async def _process(self, update: Update) -> None:
        try:
            await self.dp.feed_update(self.bot, update, **self.kwargs)
        except Exception:
            log.exception("webhook.update_failed update_id=%s", update.update_id)

    async def drain(self, grace: float = 30.0) -> None:
        """Let in-flight updates finish before shutdown."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


def create_webhook_app(
    handler: WebhookHandler,
    *,
    path: str,
    max_body_bytes: int,
    readiness: ReadinessChecker | None = None,
) -> web.Application:
    """The webhook at `path`, `/healthz` beside it, `/metrics`, and `/readyz` when given a
    readiness checker (200, or 503 naming what failed)."""
    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post(path, handler.handle)
    app.router.add_get("/healthz", _healthz)
    add_ops_routes(app, readiness, healthz=False)
    return app


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
