"""Update handling throughput: loopgram's real dispatcher against a bare aiogram echo bot.

Both dispatchers get the same raw updates (``feed_raw_update``, as the webhook does) on the
same :class:`FakeSession`, which answers every Bot API method at once with a plausible
result parsed by aiogram as a real response would be, so nothing touches the network
except the zero-latency model (a :class:`ScriptedBackend` behind the real OpenAI-compatible
server on loopback, reached through loopgram's real ``LLMClient``).

* text messages: loopgram runs dedup, the user upsert, the chat's assistant, the model
  stream, the draft/final messages with buttons and stores the interaction (SQLite in a
  temporary folder); the bare bot echoes the text.
* 👍 presses on those answers: loopgram re-reads and checks the interaction, answers the
  callback, hands the rating to the real ``FeedbackSink`` and swaps the keyboard; the bare
  bot answers the callback.  The sink enqueues to Redis when ``redis_url`` answers (nothing
  consumes that queue; the database is flushed afterwards), else to kombu's in-process
  ``memory://`` broker — both are the sink's normal enqueue path, never its write-through.

The contract's baseline is the bare echo bot.  A second one, :func:`minimal_dispatcher`, is
the least a bot must do for the same two jobs with the same parts (the model through the same
client, one stored row per answer through the same database, the rating through a
``FeedbackSink``): the ratio against it is what loopgram's own features cost (dedup, user
records, history, typing, drafts, buttons, ownership checks), the echo ratio also counts
the model call and the durable write that any answering bot pays.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast, get_args

from aiogram import Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.base import BaseSession
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.methods import GetMe, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import CallbackQuery, Message
from sqlmodel import col, select

from bot.app import create_runtime
from bot.callbacks import RateAction, RateCb
from bot.feedback_sink import FeedbackSink
from loopgram import crud, migrate
from loopgram.db import Database
from loopgram.feedback import Feedback
from loopgram.llm import LLMClient
from loopgram.models import Interaction, InteractionStatus
from loopgram.settings import (
    AppSettings,
    DatabaseSettings,
    LLMSettings,
    RedisSettings,
    Settings,
)
from loopgram.spool import Spool
from workers.bench_ingest import redis_reachable

__all__ = ["FakeSession", "UpdateRates", "measure_updates"]

log = logging.getLogger(__name__)

BOT_TOKEN = "123456789:BENCH-loopgram-fake-session"  # noqa: S105 - never sent anywhere
FIRST_USER = 500_000_000
ANSWER = "Zero-latency answer from the bench model."


class FakeSession(BaseSession):
    """Answers every Bot API call at once.  The result goes through aiogram's own response
    parsing (``check_response``), the part of a real request that is not the network."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self._message_ids = itertools.count(1_000_000)

    async def close(self) -> None:
        return None

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 - BaseSession's signature
    ) -> TelegramType:
        self.calls[type(method).__name__] += 1
        content = json.dumps({"ok": True, "result": self._result(bot, method)})
        return cast(TelegramType, self.check_response(bot, method, 200, content).result)

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109 - BaseSession's signature
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        yield b""

    def _result(self, bot: Bot, method: TelegramMethod[Any]) -> Any:
        if isinstance(method, GetMe):
            return _bot_user(bot)
        returning = method.__returning__
        if returning is Message or Message in get_args(returning):
            chat_id = getattr(method, "chat_id", None)
            return {
                "message_id": getattr(method, "message_id", None) or next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": chat_id if isinstance(chat_id, int) else 1, "type": "private"},
                "from": _bot_user(bot),
                "text": getattr(method, "text", None) or "…",
            }
        # Anything else the two bots call returns True (answerCallbackQuery, chat actions,
        # drafts); a method that needs more would fail aiogram's parsing loudly.
        return True


def _bot_user(bot: Bot) -> dict[str, Any]:
    return {"id": bot.id, "is_bot": True, "first_name": "Bench", "username": "bench_bot"}


# ------------------------------------------------------------------------------ updates


def _user(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": "Bench", "language_code": "en"}


def text_update(update_id: int, user_id: int, index: int) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": index + 1,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": "Bench"},
            "from": _user(user_id),
            "text": f"Question {index}: what is {index} plus one?",
        },
    }


def callback_update(
    update_id: int, bot_id: int, row: tuple[int, int, int | None]
) -> dict[str, Any]:
    iid, user_id, message_id = row
    return {
        "update_id": update_id,
        "callback_query": {
            "id": str(update_id),
            "from": _user(user_id),
            "chat_instance": "bench",
            "message": {
                "message_id": message_id or 1,
                "date": int(time.time()),
                "chat": {"id": user_id, "type": "private", "first_name": "Bench"},
                "from": {"id": bot_id, "is_bot": True, "first_name": "Bench"},
                "text": ANSWER,
            },
            "data": RateCb(action=RateAction.up, iid=iid).pack(),
        },
    }


def minimal_dispatcher(db: Database, llm: LLMClient, sink: FeedbackSink) -> Dispatcher:
    """The fairer baseline: answer with the model and store the exchange (one row, committed
    before the handler returns); take a 👍 by answering it and enqueueing the rating."""
    router = Router(name="minimal")

    @router.message()
    async def answer(message: Message) -> None:
        assert message.from_user is not None
        question = message.text or ""
        reply = await llm.complete([{"role": "user", "content": question}])
        sent = await message.answer(reply)
        row = Interaction(
            chat_id=message.chat.id,
            user_id=message.from_user.id,
            assistant="minimal",
            prompt=question,
            answer=reply,
            model=llm.default_model,
            telegram_message_id=sent.message_id,
            telegram_message_ids=[sent.message_id],
        )
        await db.run_grouped(crud.add_interaction, interaction=row)

    @router.callback_query()
    async def press(query: CallbackQuery) -> None:
        await query.answer()
        rated = RateCb.unpack(query.data or "")
        await sink.submit(Feedback(interaction_id=rated.iid, user_id=query.from_user.id, value=1))

    dp = Dispatcher(storage=MemoryStorage())
    dp.include_router(router)
    return dp


def bare_dispatcher() -> Dispatcher:
    """The baseline: a plain aiogram bot that echoes texts and answers button presses."""
    router = Router(name="bare-echo")

    @router.message()
    async def echo(message: Message) -> None:
        await message.answer(message.text or "…")

    @router.callback_query()
    async def press(query: CallbackQuery) -> None:
        await query.answer(query.data)

    dp = Dispatcher(storage=MemoryStorage())
    dp.include_router(router)
    return dp


async def feed_all(
    dp: Dispatcher, bot: Bot, updates: Sequence[dict[str, Any]], concurrency: int
) -> float:
    """Feed ``updates`` ``concurrency`` at a time; seconds from the first to the last done."""
    started = time.perf_counter()
    for start in range(0, len(updates), concurrency):
        chunk = updates[start : start + concurrency]
        await asyncio.gather(*(dp.feed_raw_update(bot, update) for update in chunk))
    return time.perf_counter() - started


# -------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class UpdateRates:
    """Updates/s of loopgram, of the bare echo bot and of the minimal answering bot on the
    same updates."""

    text: float
    text_bare: float
    callback: float
    callback_bare: float
    sink: str
    """Where the ratings went: ``redis`` or ``memory``."""
    text_minimal: float | None = None
    callback_minimal: float | None = None


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
    finally:
        client.close()


def _answered_rows(*, session: Any, user_ids: list[int]) -> list[tuple[int, int, int | None]]:
    query = (
        select(Interaction.id, Interaction.user_id, Interaction.telegram_message_id)
        .where(col(Interaction.user_id).in_(user_ids), Interaction.status == InteractionStatus.ok)
        .order_by(col(Interaction.id))
    )
    return [(int(i or 0), u, m) for i, u, m in session.exec(query).all()]


async def measure_updates(
    n: int,
    *,
    redis_url: str | None = None,
    concurrency: int = 100,
    users: int = 500,
    warmup: int = 20,
) -> UpdateRates:
    """Feed ``n`` text updates and then ``n`` 👍 presses to each dispatcher, timed per kind.

    ``redis_url`` (a database the bench may flush) receives the enqueued ratings; when it
    is None or unreachable the ratings go to an in-process ``memory://`` broker.
    """
    from workers.celery_app import create_celery

    sink = "redis" if redis_url and redis_reachable(redis_url) is None else "memory"
    broker = redis_url if sink == "redis" and redis_url else "memory://localhost/"
    if sink == "redis" and redis_url:
        _flush_redis(redis_url)
    model_server, model_url = await asyncio.to_thread(_start_model_server)
    with tempfile.TemporaryDirectory(prefix="loopgram-bench-updates-") as tmp:
        settings = Settings(
            app=AppSettings(data_dir=Path(tmp)),
            db=DatabaseSettings(database_url=f"sqlite:///{tmp}/bench.db"),
            redis=RedisSettings(redis_url=None),
            llm=LLMSettings(llm_base_url=model_url, llm_model="loopgram-base"),
        )
        await asyncio.to_thread(migrate.upgrade, settings.db)
        db = Database.from_settings(settings.db)
        celery_app = create_celery(replace_redis(settings, broker))
        llm = LLMClient(settings.llm)
        runtime = create_runtime(
            settings, db=db, celery_app=celery_app, llm=llm, storage=MemoryStorage()
        )
        loopgram_session, bare_session = FakeSession(), FakeSession()
        defaults = DefaultBotProperties(link_preview_is_disabled=True)
        loopgram_bot = Bot(BOT_TOKEN, session=loopgram_session, default=defaults)
        bare_bot = Bot(BOT_TOKEN, session=bare_session, default=defaults)
        minimal_bot = Bot(BOT_TOKEN, session=FakeSession(), default=defaults)
        bare = bare_dispatcher()
        minimal_sink = FeedbackSink(
            celery_app=celery_app, db=db, spool=Spool(Path(tmp) / "minimal-spool.jsonl")
        )
        minimal = minimal_dispatcher(db, llm, minimal_sink)
        ids = itertools.count(1)
        # Start-up as bot.runner.serve does it: what start-up built is frozen out of the
        # cyclic collector's sight, so neither bot pays a full collection of the whole
        # heap (~0.3 s of CPU) in the middle of its timed run.
        gc.freeze()
        try:
            # Untimed warm-up of both: first-call costs (connections, caches) are not rates.
            warm_users = [FIRST_USER - 1 - i for i in range(warmup)]
            warm = [text_update(next(ids), u, i) for i, u in enumerate(warm_users)]
            await feed_all(runtime.dispatcher, loopgram_bot, warm, concurrency)
            await feed_all(bare, bare_bot, warm, concurrency)
            warm_rows = await db.run(_answered_rows, user_ids=warm_users)
            await feed_all(minimal, minimal_bot, warm, concurrency)
            warm_presses = [callback_update(next(ids), loopgram_bot.id, r) for r in warm_rows]
            await feed_all(runtime.dispatcher, loopgram_bot, warm_presses, concurrency)
            await feed_all(bare, bare_bot, warm_presses, concurrency)
            await feed_all(minimal, minimal_bot, warm_presses, concurrency)
            before = Counter(loopgram_session.calls)

            user_ids = [FIRST_USER + i % users for i in range(n)]
            texts = [text_update(next(ids), u, i) for i, u in enumerate(user_ids)]
            text_bare = n / await feed_all(bare, bare_bot, texts, concurrency)
            text = n / await feed_all(runtime.dispatcher, loopgram_bot, texts, concurrency)
            rows = await db.run(_answered_rows, user_ids=sorted(set(user_ids)))
            if len(rows) != n:
                raise RuntimeError(f"loopgram stored {len(rows)} answers for {n} questions")
            # After loopgram's rows are read: the minimal bot stores answers of its own.
            text_minimal = n / await feed_all(minimal, minimal_bot, texts, concurrency)
            presses = [callback_update(next(ids), loopgram_bot.id, row) for row in rows]
            callback_bare = n / await feed_all(bare, bare_bot, presses, concurrency)
            callback = n / await feed_all(runtime.dispatcher, loopgram_bot, presses, concurrency)
            callback_minimal = n / await feed_all(minimal, minimal_bot, presses, concurrency)
            _check_calls(loopgram_session.calls - before, n)
        finally:
            gc.unfreeze()
            await minimal_sink.stop()
            await runtime.feedback_sink.stop()
            await loopgram_bot.session.close()
            await bare_bot.session.close()
            await minimal_bot.session.close()
            await llm.close()
            model_server.kill()
            model_server.wait()
            db.dispose()
            if sink == "redis" and redis_url:
                _flush_redis(redis_url)
    return UpdateRates(
        text, text_bare, callback, callback_bare, sink, text_minimal, callback_minimal
    )


_MODEL_SERVER = """
import asyncio, sys
from training.model_server.app import create_app, start_server
from training.model_server.scripted import ScriptedBackend

async def main():
    runner, url = await start_server(create_app(ScriptedBackend(sys.argv[1])), "127.0.0.1", 0)
    print(url, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _start_model_server() -> tuple[subprocess.Popen[str], str]:
    """The zero-latency model in its own process, so its CPU is not counted as the bot's
    (a real model server never shares the bot's event loop).  A plain subprocess, not
    multiprocessing: it starts in a fraction of a second whatever the parent imported."""
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-c", _MODEL_SERVER, ANSWER],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http"):
        process.kill()
        process.wait()
        raise RuntimeError("the bench model server did not start")
    return process, url


def replace_redis(settings: Settings, broker_url: str) -> Settings:
    return replace(settings, redis=RedisSettings(redis_url=broker_url))


def _check_calls(calls: Counter[str], n: int) -> None:
    """Every question got its final message and every press its callback answer and new
    keyboard: the rates are of updates actually handled, not of errors swallowed."""
    expected = {"SendMessage": n, "AnswerCallbackQuery": n, "EditMessageReplyMarkup": n}
    short = {name: calls[name] for name, want in expected.items() if calls[name] < want}
    if short:
        raise RuntimeError(f"loopgram handled fewer updates than fed ({n} each): {short}")
