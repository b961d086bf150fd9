"""Operations: /readyz (200, or 503 naming what failed), /metrics after real traffic, the
metrics port in polling mode, update and interaction ids in log lines, the model server's
/health and /ready."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.emulated import EmulatedBot, emulated_bot
from loopgram import metrics
from loopgram.logging_setup import (
    JsonFormatter,
    KeyValueFormatter,
    LogContextFilter,
    log_context,
)
from tests.e2e.conftest import REPLY, has_rating_buttons
from tests.e2e.test_webhook import SECRET, free_port
from training.model_server.app import create_app, start_server
from training.model_server.scripted import ScriptedBackend


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format (None when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, raw = head.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', raw))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def _succeeded_tasks(text: str) -> float:
    """Celery tasks that ended in success, of any name."""
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("loopgram_celery_tasks_total{") and 'state="success"' in line
    )


@pytest.fixture(autouse=True)
def _fresh_db_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics.DATABASE_COLLECTOR, "cache_seconds", 0.0)


@pytest.fixture
async def own_model() -> AsyncIterator[tuple[web.AppRunner, str]]:
    """A model server this test may stop."""
    runner, url = await start_server(create_app(ScriptedBackend(REPLY)), "127.0.0.1", 0)
    yield runner, url
    await runner.cleanup()


@contextlib.asynccontextmanager
async def _webhook_bot(settings: Any) -> AsyncIterator[tuple[EmulatedBot, str]]:
    async with emulated_bot(settings, with_model=False) as env:
        yield env, settings.telegram.webhook_url.rsplit("/tg/", 1)[0]


def _webhook_settings(bot_settings: Any, model_url: str, **env: str) -> Any:
    port = free_port()
    return bot_settings(
        BOT_MODE="webhook",
        WEBHOOK_URL=f"http://127.0.0.1:{port}/tg/webhook",
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_PORT=str(port),
        LLM_BASE_URL=model_url,
        READY_TIMEOUT="1",
        **env,
    )


@pytest.fixture
async def webhook_env(
    bot_settings, own_model
) -> AsyncIterator[tuple[EmulatedBot, str, web.AppRunner]]:  # type: ignore[no-untyped-def]
    """Embedded worker (no Redis): ratings are stored, so the database figures move."""
    runner, model_url = own_model
    async with _webhook_bot(_webhook_settings(bot_settings, model_url)) as (env, base):
        yield env, base, runner


@pytest.fixture
async def webhook_redis_env(
    bot_settings, own_model, redis_url: str
) -> AsyncIterator[tuple[EmulatedBot, str, web.AppRunner]]:  # type: ignore[no-untyped-def]
    runner, model_url = own_model
    settings = _webhook_settings(bot_settings, model_url, REDIS_URL=redis_url)
    async with _webhook_bot(settings) as (env, base):
        yield env, base, runner


async def _get(url: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body, text


@pytest.mark.integration
async def test_readyz_names_what_failed(
    webhook_redis_env: tuple[EmulatedBot, str, web.AppRunner],
) -> None:
    _env, base, model_runner = webhook_redis_env
    status, body, _ = await _get(f"{base}/readyz")
    assert status == 200, body
    assert body["checks"] == {"database": "ok", "model": "ok", "redis": "ok"}
    assert (await _get(f"{base}/healthz"))[0] == 200

    await model_runner.cleanup()  # the model server goes away
    status, body, _ = await _get(f"{base}/readyz")
    assert status == 503
    assert body["failed"] == ["model"] and body["checks"]["database"] == "ok"
    assert (await _get(f"{base}/healthz"))[0] == 200  # alive all the same


async def test_readyz_reports_a_dead_database_and_redis(bot_settings) -> None:  # type: ignore[no-untyped-def]
    from loopgram.db import Database
    from loopgram.readiness import ReadinessChecker
    from loopgram.settings import DatabaseSettings

    settings = bot_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", READY_TIMEOUT="1")
    dead = Database.from_settings(
        DatabaseSettings(database_url=f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    )
    report = await ReadinessChecker(settings, dead).check()
    dead.dispose()
    assert not report.ok and set(report.failed) == {"database", "redis"}
    assert report.checks["model"] == "ok"
    assert report.body()["status"] == "not ready"


async def test_a_hanging_database_holds_one_thread_not_the_process(bot_settings) -> None:  # type: ignore[no-untyped-def]
    """A database that accepts connections and never answers: every probe times out in time,
    and the probes do not pile up threads in the default executor (which `/metrics` and the
    bot's own work need) — one stuck ping at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from loopgram.db import Database
    from loopgram.readiness import ReadinessChecker
    from loopgram.settings import DatabaseSettings

    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
    hanging = Database.from_settings(
        DatabaseSettings(database_url=f"postgresql://nobody@127.0.0.1:{port}/none")
    )
    checker = ReadinessChecker(bot_settings(), hanging, timeout=0.3)
    try:
        for _ in range(4):
            started = loop.time()
            report = await checker.check()
            assert report.failed == ["database"] and "timed out" in report.checks["database"]
            assert loop.time() - started < 2
        body = await asyncio.wait_for(asyncio.to_thread(metrics.render), timeout=5)
        assert body
    finally:
        for writer in held:  # the stuck connects fail and their threads end
            writer.close()
        server.close()
        hanging.dispose()


async def test_metrics_count_updates_answers_and_ratings(
    webhook_env: tuple[EmulatedBot, str, web.AppRunner], caplog: pytest.LogCaptureFixture
) -> None:
    env, base, _ = webhook_env
    caplog.set_level(logging.INFO, logger="loopgram.answering")
    status, _, before = await _get(f"{base}/metrics")
    assert status == 200
    handled = sample(before, "loopgram_updates_total", type="message", outcome="handled") or 0
    answers = sample(before, "loopgram_answers_total", assistant="chat", status="ok") or 0
    ups = sample(before, "loopgram_rating_presses_total", value="up", source="button") or 0
    tasks_before = _succeeded_tasks(before)

    context = LogContextFilter()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    keep.addFilter(context)
    logging.getLogger().addHandler(keep)
    try:
        emu = env.emulator
        ann = emu.user(6001, "Ann", language_code="en")
        await ann.send_text("hello metrics")
        answer = await emu.wait_for_bot_message(6001, has_rating_buttons)
        await ann.press(answer, "👍")
        await emu.wait_for(lambda: len(emu.callback_answers) == 1)

        async def rated() -> str:  # the worker stores the rating a moment later
            while True:
                _, _, text = await _get(f"{base}/metrics")
                stored = sample(text, "loopgram_thumbs_up_rate", assistant="chat") is not None
                if stored and _succeeded_tasks(text) > tasks_before:
                    return text
                await asyncio.sleep(0.1)

        text = await asyncio.wait_for(rated(), timeout=15)
    finally:
        logging.getLogger().removeHandler(keep)

    assert sample(text, "loopgram_updates_total", type="message", outcome="handled") == handled + 1
    assert (
        sample(text, "loopgram_updates_total", type="callback_query", outcome="handled") or 0
    ) >= 1
    assert sample(text, "loopgram_answers_total", assistant="chat", status="ok") == answers + 1
    assert sample(text, "loopgram_rating_presses_total", value="up", source="button") == ups + 1
    assert (sample(text, "loopgram_model_requests_total", outcome="ok") or 0) >= 1
    assert (sample(text, "loopgram_update_seconds_count", type="message") or 0) >= 1
    assert sample(text, "loopgram_thumbs_up_rate", assistant="chat") == 1.0
    assert sample(text, "loopgram_recent_ratings", assistant="chat", value="up") == 1
    assert sample(text, "loopgram_review_queue", assistant="chat") == 0
    assert sample(text, "loopgram_training_runs", status="succeeded") == 0
    assert sample(text, "loopgram_adapter_in_use", assistant="chat", adapter="base") == 1
    assert sample(text, "loopgram_db_stats_up") == 1
    # The embedded worker's task that stored the press, and its queue, drained.
    assert sample(text, "loopgram_celery_stats_up") == 1
    batches = sample(
        text, "loopgram_celery_tasks_total", task="loopgram.record_feedback_many", state="success"
    )
    assert (batches or 0) >= 1
    assert sample(text, "loopgram_celery_queue_messages", queue="feedback") == 0

    # The answer's log line names its update and its interaction.
    stored = [r for r in records if r.getMessage().startswith("interaction.stored")]
    assert stored and getattr(stored[0], "update_id", None) is not None
    line = KeyValueFormatter().format(stored[0])
    assert "update_id=" in line and "interaction_id=" in line


async def test_metrics_port_in_polling_mode(bot_settings) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    settings = bot_settings(METRICS_PORT=str(port))
    async with emulated_bot(settings, with_model=False):
        status, _, text = await _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "loopgram_updates_total" in text
        assert (await _get(f"http://127.0.0.1:{port}/healthz"))[0] == 200
        status, body, _ = await _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and "redis" not in body["checks"]  # no REDIS_URL: not checked
    with pytest.raises(aiohttp.ClientConnectionError):  # closed with the bot
        await _get(f"http://127.0.0.1:{port}/metrics")


def test_log_lines_carry_the_bound_ids() -> None:
    logger = logging.getLogger("tests.ops")
    record = logger.makeRecord("tests.ops", logging.INFO, __file__, 1, "answer.sent", (), None)
    with log_context(update_id=41, interaction_id=7):
        LogContextFilter().filter(record)
    line = KeyValueFormatter().format(record)
    assert line.endswith("answer.sent update_id=41 interaction_id=7")
    payload = JsonFormatter().format(record)
    assert '"update_id": 41' in payload and '"interaction_id": 7' in payload
    # Outside the context nothing is added; a field the message already names is not repeated.
    bare = logger.makeRecord("tests.ops", logging.INFO, __file__, 1, "x update_id=41", (), None)
    LogContextFilter().filter(bare)
    assert KeyValueFormatter().format(bare).endswith("x update_id=41")


async def test_model_server_health_and_ready() -> None:
    class Empty(ScriptedBackend):
        def model_ids(self) -> list[str]:
            return []

    for backend, ready in ((ScriptedBackend("hi"), 200), (Empty("hi"), 503)):
        runner, url = await start_server(create_app(backend), "127.0.0.1", 0)
        base = url.removesuffix("/v1")
        try:
            assert (await _get(f"{base}/health"))[0] == 200
            status, body, _ = await _get(f"{base}/ready")
            assert status == ready
            assert (body["models"] != []) == (ready == 200)
        finally:
            await runner.cleanup()
