"""`loopgram playground`: the real bot behind a web page that looks like a Telegram chat.

The whole stack runs on embedded defaults (SQLite, local Qdrant, the in-process worker, the
built-in model server unless LLM_BASE_URL is set), the Bot API emulator plays Telegram, and
``loopgram.playground.PlaygroundServer`` serves the page that acts as its users.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bot.demo import _fresh_dir
from bot.emulated import EmulatedBot, emulated_bot
from loopgram.errors import LoopgramError
from loopgram.i18n import t
from loopgram.models import Role
from loopgram.playground import Cast, PlaygroundServer, default_cast
from loopgram.settings import Settings


@dataclass
class Playground:
    env: EmulatedBot
    server: PlaygroundServer
    url: str


def playground_settings(
    settings: Settings, cast: Cast, *, data_dir: Path, max_tokens: int | None = None
) -> Settings:
    """Embedded defaults under `data_dir`; the cast's moderators and admins get their roles
    (added to ADMIN_IDS / MODERATOR_IDS), and review cards go to the moderators' group."""
    access = settings.access
    llm = settings.llm.model_copy(update={"builtin_model_port": 0})
    if max_tokens is not None:
        llm = llm.model_copy(update={"llm_max_tokens": max_tokens})
    return replace(
        settings,
        app=settings.app.model_copy(update={"data_dir": data_dir}),
        db=settings.db.model_copy(update={"database_url": f"sqlite:///{data_dir / 'loopgram.db'}"}),
        redis=settings.redis.model_copy(update={"redis_url": None}),
        qdrant=settings.qdrant.model_copy(update={"qdrant_url": None, "qdrant_path": None}),
        learning=settings.learning.model_copy(update={"adapters_dir": data_dir / "adapters"}),
        telegram=settings.telegram.model_copy(update={"bot_mode": "polling"}),
        bot=settings.bot.model_copy(update={"stream_edit_interval": 0.3}),
        llm=llm,
        access=access.model_copy(
            update={
                "admin_ids": sorted({*access.admin_ids, *cast.ids(Role.admin)}),
                "moderator_ids": sorted({*access.moderator_ids, *cast.ids(Role.moderator)}),
                "moderator_chat_id": cast.moderator_chat_id,
                "allowed_chat_ids": [],
            }
        ),
    )


@contextlib.asynccontextmanager
async def playground(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    lang: str = "en",
    with_model: bool = True,
    with_training: bool = False,
) -> AsyncIterator[Playground]:
    """The stack, the emulator and the page's server; `settings` as `playground_settings`
    made them (tests pass their own, with LLM_BASE_URL pointing at a scripted model)."""
    cast = default_cast(lang)
    async with emulated_bot(settings, with_model=with_model, with_training=with_training) as env:
        server = PlaygroundServer(env.emulator, env.stack.db, cast, lang=lang)
        url = await server.start(host, port)
        try:
            yield Playground(env, server, url)
        finally:
            await server.stop()


def _check_port(host: str, port: int, lang: str) -> None:
    if port == 0:
        return
    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise LoopgramError(
            t(lang, "playground-cannot-listen", host=host, port=str(port), error=reason),
            key="playground-cannot-listen",
        ) from exc


async def run_playground(
    settings: Settings,
    *,
    host: str,
    port: int,
    lang: str,
    data_dir: Path,
    reset: bool,
    max_tokens: int,
    stop: asyncio.Event,
    on_ready: Callable[[Playground], None] | None = None,
) -> None:
    """Until `stop` is set; `on_ready` is told the page's URL once everything runs."""
    _check_port(host, port, lang)  # before the model loads, not half a minute later
    if reset:
        await asyncio.to_thread(_fresh_dir, data_dir)
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    cast = default_cast(lang)
    settings = playground_settings(settings, cast, data_dir=data_dir, max_tokens=max_tokens)
    async with playground(settings, host=host, port=port, lang=lang, with_training=True) as pg:
        if on_ready is not None:
            on_ready(pg)
        await stop.wait()
