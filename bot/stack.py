"""The embedded stack of `loopgram run` and `loopgram demo`: model server, worker, bot."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from aiogram import Bot
from aiohttp import web

from bot.app import BotRuntime, create_bot, create_runtime
from loopgram import migrate
from loopgram.db import Database
from loopgram.settings import Settings
from workers import context
from workers.celery_app import create_celery
from workers.embedded import EmbeddedWorker
from workers.lifetime import PARENT_PID_ENV

log = logging.getLogger(__name__)


@dataclass
class Stack:
    settings: Settings
    db: Database
    runtime: BotRuntime
    bot: Bot


async def start_builtin_model(settings: Settings) -> tuple[web.AppRunner, str]:
    """The built-in server: BASE_MODEL_PATH, else SmolLM2 from its package (converted once
    into DATA_DIR/models), else the n-gram placeholder when the ml extra is missing."""
    from training.model_server.app import create_app, make_backend, start_server

    backend = await asyncio.to_thread(
        make_backend,
        settings.learning.base_model_path,
        settings.llm.llm_model,
        cache_dir=Path(settings.app.data_dir) / "models",
        max_loras=settings.llm.builtin_max_loras,
    )
    llm = settings.llm
    app = create_app(backend, sampling_seed=llm.builtin_model_seed)
    return await start_server(app, llm.builtin_model_host, llm.builtin_model_port)


def _start_training_worker(settings: Settings) -> subprocess.Popen[bytes]:
    """Training gets its own worker process: never the bot's memory, never its event loop."""
    log_path = Path(settings.app.data_dir) / "training-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DATA_DIR": str(settings.app.data_dir)}
    env["DATABASE_URL"] = settings.db.database_url
    # The worker dies with this process, even on SIGKILL (see workers/lifetime.py).
    env[PARENT_PID_ENV] = str(os.getpid())
    if settings.llm.uses_builtin_server:
        # The built-in server may have bound a free port: adapters must be loaded there.
        env["BUILTIN_MODEL_HOST"] = settings.llm.builtin_model_host
        env["BUILTIN_MODEL_PORT"] = str(settings.llm.builtin_model_port)
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loopgram.cli",
                "worker",
                "-Q",
                "training",
                "-c",
                "1",
                "-P",
                "solo",
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.asynccontextmanager
async def embedded_stack(
    settings: Settings,
    *,
    with_worker: bool = True,
    with_model: bool = True,
    with_training: bool = False,
) -> AsyncIterator[Stack]:
    """Migrate, start what has no server of its own, and build the bot; tear down in reverse."""
    migrate.upgrade(settings.db)
    db = Database.from_settings(settings.db)
    model_runner: web.AppRunner | None = None
    worker: EmbeddedWorker | None = None
    trainer: subprocess.Popen[bytes] | None = None
    bot: Bot | None = None
    runtime: BotRuntime | None = None
    try:
        if with_model and settings.llm.uses_builtin_server:
            model_runner, url = await start_builtin_model(settings)
            # Port 0 means "any free port": point the client at the port actually bound.
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            settings = replace(
                settings, llm=settings.llm.model_copy(update={"builtin_model_port": port})
            )
            log.info("stack.model_server url=%s", url)
        celery_app = create_celery(settings)
        context.use_database(db)
        context.use_settings(settings)
        if with_worker and not settings.redis.redis_url:
            worker = EmbeddedWorker(celery_app, data_dir=settings.app.data_dir)
            worker.start()
            if with_training:
                trainer = _start_training_worker(settings)
        runtime = create_runtime(settings, db=db, celery_app=celery_app)
        bot = create_bot(settings.telegram, rate_limit=runtime.rate_limit)
        yield Stack(settings, db, runtime, bot)
    finally:
        if bot is not None:
            await bot.session.close()
        if runtime is not None:
            await runtime.limiter.close()
        if worker is not None:
            worker.stop()
        if trainer is not None:
            _stop_process(trainer)
        if model_runner is not None:
            await model_runner.cleanup()
        context.use_database(None)
        context.use_settings(None)
        db.dispose()
