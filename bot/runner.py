"""Entry points of the bot process: long polling or webhook."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets

from aiogram import Bot
from aiohttp import web

from bot.app import BotRuntime, set_commands
from bot.ops_http import start_ops_server
from bot.webhook import WebhookHandler, create_webhook_app
from loopgram import metrics
from loopgram.http_site import start_site
from loopgram.readiness import ReadinessChecker
from workers.task_figures import task_stats_of

log = logging.getLogger(__name__)


async def serve(
    runtime: BotRuntime,
    bot: Bot,
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run until cancelled (or until `stop` is set), in the mode the settings ask for.

    `ready` is set once updates are being received (polling started or webhook registered).
    """
    ready = ready or asyncio.Event()
    # What start-up built lives as long as the process: out of the cyclic collector's sight,
    # a burst of updates never pays a full collection over the whole heap (~0.3 s of CPU).
    gc.freeze()
    metrics.use_database(runtime.db)
    # The figures this deployment's Celery workers record (the sink publishes to that app).
    metrics.use_task_stats(task_stats_of(runtime.feedback_sink.celery_app))
    ops = runtime.settings.ops
    ops_runner: web.AppRunner | None = None
    if ops.metrics_port is not None:
        ops_runner, _ = await start_ops_server(
            ops.metrics_host, ops.metrics_port, ReadinessChecker(runtime.settings, runtime.db)
        )
    runtime.feedback_sink.start_replayer()
    runtime.review_poster.start(bot)
    try:
        await set_commands(bot)
    except Exception as exc:  # commands are cosmetic; never block start-up on them
        log.warning("bot.set_commands_failed error=%s", exc)
    try:
        if runtime.settings.telegram.bot_mode == "webhook":
            await _serve_webhook(runtime, bot, stop, ready)
        else:
            await _serve_polling(runtime, bot, stop, ready)
    finally:
        await runtime.review_poster.stop()
        await runtime.feedback_sink.stop()
        if ops_runner is not None:
            await ops_runner.cleanup()


async def _serve_polling(
    runtime: BotRuntime, bot: Bot, stop: asyncio.Event | None, ready: asyncio.Event
) -> None:
    dp = runtime.dispatcher
    await bot.delete_webhook(drop_pending_updates=False)
    me = await bot.me()
    log.info("bot.polling username=%s", me.username)
    polling = asyncio.create_task(
        dp.start_polling(
            bot,
            allowed_updates=dp.resolve_used_update_types(),
            handle_signals=False,
            close_bot_session=False,
            polling_timeout=10,
        )
    )
    ready.set()
    if stop is None:
        await polling
        return
    await stop.wait()
    await dp.stop_polling()
    # A long poll in flight would hold shutdown for up to its timeout; nothing is lost by
    # cutting it: unconfirmed updates are delivered again on the next start.
    try:
        await asyncio.wait_for(polling, timeout=2)
    except TimeoutError:
        log.info("bot.polling_cancelled")


async def _serve_webhook(
    runtime: BotRuntime, bot: Bot, stop: asyncio.Event | None, ready: asyncio.Event
) -> None:
    tg = runtime.settings.telegram
    if not tg.webhook_url:
        from loopgram.errors import LoopgramError

        raise LoopgramError("WEBHOOK_URL is required in webhook mode", key="error-no-webhook-url")
    secret = (
        tg.webhook_secret.get_secret_value() if tg.webhook_secret else secrets.token_urlsafe(32)
    )
    handler = WebhookHandler(runtime.dispatcher, bot, secret=secret)
    app = create_webhook_app(
        handler,
        path=tg.webhook_path,
        max_body_bytes=tg.webhook_max_body_bytes,
        readiness=ReadinessChecker(runtime.settings, runtime.db),
    )
    runner, _, _ = await start_site(app, tg.webhook_host, tg.webhook_port)
    dp = runtime.dispatcher
    await bot.set_webhook(
        tg.webhook_url, secret_token=secret, allowed_updates=dp.resolve_used_update_types()
    )
    log.info("bot.webhook url=%s listen=%s:%s", tg.webhook_url, tg.webhook_host, tg.webhook_port)
    await dp.emit_startup(bot=bot)
    ready.set()
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        await handler.drain()
        await dp.emit_shutdown(bot=bot)
        await runner.cleanup()
