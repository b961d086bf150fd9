"""Redis SIGKILLed and restarted while people press 👍: every rating stored once.

Production shape: the real bot (emulated Telegram), a separate `loopgram worker` process,
Postgres, and a private redis-server (append-only, fsync always, as a broker that must not
lose messages should be run). Presses before the crash go through the broker; presses
while Redis is down are written through to Postgres by the bot; presses after the restart go
through the broker again — the worker reconnects by itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlmodel import select

from bot.emulated import emulated_bot
from loopgram.models import Rating
from tests.faults.conftest import (
    PrivateRedis,
    ask_all,
    start_worker,
    stop_worker,
)

pytestmark = pytest.mark.integration
USERS = 12


async def test_redis_restarted_mid_stream_loses_and_doubles_no_rating(
    bot_settings,  # type: ignore[no-untyped-def]
    private_redis: PrivateRedis,
    pg_url: str,
    tmp_path: Path,
) -> None:
    settings = bot_settings(DATABASE_URL=pg_url, REDIS_URL=private_redis.url)
    worker_log = tmp_path / "worker.log"
    # A message the worker had taken but not yet stored when Redis died stays in Redis'
    # unacked set and comes back after the visibility timeout (10 minutes in production,
    # workers/celery_app.py); shortened here so the test sees it come back.
    worker_env = {"DATABASE_URL": pg_url, "REDIS_URL": private_redis.url, "DATA_DIR": str(tmp_path)}
    workers = [start_worker(worker_env, worker_log, visibility_timeout=5)]

    async def supervise() -> None:
        """What compose's `restart: unless-stopped` does: Celery's consumer sometimes dies
        while it closes the broken connection (kombu: 'NoneType' object has no attribute
        'hostname') and the worker exits; it is started again."""
        while True:
            await asyncio.sleep(0.5)
            if workers[-1].poll() is not None:
                workers.append(start_worker(worker_env, worker_log, visibility_timeout=5))

    supervisor = asyncio.create_task(supervise())
    try:
        async with emulated_bot(settings, with_model=False) as env:
            emu, db = env.emulator, env.stack.db
            users = [emu.user(7100 + i, f"U{i}", language_code="ru") for i in range(USERS)]
            answers = await ask_all(emu, users)
            how: list[str] = []
            sink = env.stack.runtime.feedback_sink
            submit = sink.submit

            async def recording_submit(feedback):  # type: ignore[no-untyped-def]
                result = await submit(feedback)
                how.append(result)
                return result

            sink.submit = recording_submit  # type: ignore[method-assign]

            async def press(first: int, last: int) -> None:
                for user, answer in list(zip(users, answers, strict=True))[first:last]:
                    await user.press(answer, "👍")
                    await asyncio.sleep(0.05)
                await emu.wait_for(lambda: len(how) >= last, timeout=30)

            await press(0, 4)
            private_redis.kill()  # mid-stream: SIGKILL, no shutdown save
            await press(4, 8)
            private_redis.start()  # same port, same append-only file
            await asyncio.sleep(1.0)  # the bot's next publish reconnects
            await press(8, USERS)

            def stored(*, session):  # type: ignore[no-untyped-def]
                return list(session.exec(select(Rating)).all())

            # The worker reconnects with a growing back-off (Celery: 2 s, 4 s, ...), slower on a
            # loaded machine: give it time; a lost rating still shows as missing.
            deadline = asyncio.get_running_loop().time() + 120
            while len(await db.run(stored)) < USERS:
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # anything doubled would show now
            ratings = await db.run(stored)
            assert len(sink.spool) == 0
    finally:
        supervisor.cancel()
        for worker in workers:
            stop_worker(worker)
    assert "written" in how[4:8], how  # Redis was really down for some presses
    assert sorted((r.user_id, r.value) for r in ratings) == [(u.id, 1) for u in users], (
        how,
        worker_log.read_text(errors="replace")[-3000:],
    )
    assert len({r.interaction_id for r in ratings}) == USERS
    assert all(h in ("queued", "written", "spooled") for h in how) and len(how) == USERS
