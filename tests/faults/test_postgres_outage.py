"""Postgres unreachable for a while: ratings are held and retried, none lost, none doubled,
and everything recovers by itself. The outage lasts `FAULTS_PG_OUTAGE_SECONDS` (6 s by
default) and, marked slow, the issue's 30 s.

Presses made during the outage are held by the bot (the dedup middleware, an update's first
database call, retries while the database is unreachable); ratings already in Redis are held
by the worker, which retries and requeues its batch.

The bot and a separate worker reach the shared Postgres through a proxy that the test cuts
(connections dropped, new ones refused) and restores; Redis is a private server.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlmodel import select

from bot.emulated import emulated_bot
from loopgram.db import Database
from loopgram.models import Rating
from loopgram.settings import DatabaseSettings
from tests.faults.conftest import PrivateRedis, TcpProxy, ask_all, start_worker, stop_worker

pytestmark = pytest.mark.integration
OUTAGE = float(os.environ.get("FAULTS_PG_OUTAGE_SECONDS", "6"))
USERS = 9


@pytest.mark.parametrize(
    "outage", [OUTAGE, pytest.param(30.0, marks=pytest.mark.slow, id="issue-30s")]
)
async def test_postgres_outage_ratings_are_held_and_retried(
    outage: float,
    bot_settings,  # type: ignore[no-untyped-def]
    private_redis: PrivateRedis,
    pg_proxy: TcpProxy,
    pg_url: str,
    tmp_path: Path,
) -> None:
    proxied = pg_proxy.url_for(pg_url)
    settings = bot_settings(DATABASE_URL=proxied, REDIS_URL=private_redis.url)
    worker_log = tmp_path / "worker.log"
    worker = start_worker(
        {"DATABASE_URL": proxied, "REDIS_URL": private_redis.url, "DATA_DIR": str(tmp_path)},
        worker_log,
    )
    direct = Database.from_settings(DatabaseSettings(database_url=pg_url))
    try:
        async with emulated_bot(settings, with_model=False) as env:
            emu = env.emulator
            users = [emu.user(7200 + i, f"U{i}", language_code="en") for i in range(USERS)]
            answers = await ask_all(emu, users)
            pairs = list(zip(users, answers, strict=True))
            for user, answer in pairs[:3]:
                await user.press(answer, "👍")
            await emu.wait_for(lambda: len(emu.callback_answers) >= 3, timeout=20)

            pg_proxy.cut()
            started = asyncio.get_running_loop().time()
            for user, answer in pairs[3:6]:
                await user.press(answer, "👍")
                await asyncio.sleep(0.3)
            await asyncio.sleep(max(0.0, outage - (asyncio.get_running_loop().time() - started)))
            pg_proxy.restore()

            for user, answer in pairs[6:]:
                await user.press(answer, "👍")

            def stored(*, session):  # type: ignore[no-untyped-def]
                return list(session.exec(select(Rating)).all())

            deadline = asyncio.get_running_loop().time() + 60
            while len(direct.call(stored)) < USERS:
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.3)
            await asyncio.sleep(1.0)
            ratings = direct.call(stored)
            answered = emu.callback_answers
    finally:
        stop_worker(worker)
        direct.dispose()
    assert sorted((r.user_id, r.value) for r in ratings) == [(u.id, 1) for u in users], (
        answered,
        worker_log.read_text(errors="replace")[-3000:],
    )
    assert len({r.interaction_id for r in ratings}) == USERS
