"""Production shape: Postgres + Redis, a separate Celery worker, and Redis outages."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from bot.emulated import emulated_bot
from bot.feedback_sink import FeedbackSink
from loopgram import crud
from loopgram.db import Database
from loopgram.feedback import Feedback
from loopgram.models import Interaction, Rating
from loopgram.settings import DatabaseSettings, RedisSettings, Settings
from loopgram.spool import Spool
from tests.e2e.conftest import has_rating_buttons, rows, wait_db
from workers.celery_app import create_celery

pytestmark = pytest.mark.integration
DEAD_REDIS = "redis://127.0.0.1:6399/0"  # nothing listens there


async def test_rating_through_redis_worker_into_postgres(
    bot_settings,
    pg_url: str,
    redis_url: str,  # type: ignore[no-untyped-def]
) -> None:
    settings = bot_settings(DATABASE_URL=pg_url, REDIS_URL=redis_url)
    async with emulated_bot(settings, with_model=False) as env:
        emu, db = env.emulator, env.stack.db
        celery_app = create_celery(env.stack.settings)
        with start_worker(celery_app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            ben = emu.user(6001, "Ben", language_code="en")
            await ben.send_text("hello from production")
            answer = await emu.wait_for_bot_message(6001, has_rating_buttons)
            await ben.press(answer, "👎")
            reasons = await emu.wait_for_bot_message(
                6001, lambda m: "Wrong" in str(m.get("reply_markup"))
            )
            await ben.press(reasons, "❌ Wrong")
            # The comment step keeps its state in Redis (FSM storage).
            await emu.wait_for_bot_message(6001, lambda m: "/skip" in m.get("text", ""))
            await ben.send_text("it was wrong")

            def complete(*, session):  # type: ignore[no-untyped-def]
                return [r for r in rows(Rating)(session=session) if r.comment]

            (rating,) = await wait_db(db, complete, within=20)
            assert (rating.value, rating.reason, rating.comment) == (-1, "wrong", "it was wrong")


async def test_redis_down_ratings_are_written_through(bot_settings, pg_url: str) -> None:  # type: ignore[no-untyped-def]
    settings = bot_settings(DATABASE_URL=pg_url, REDIS_URL=DEAD_REDIS)
    async with emulated_bot(settings, with_model=False) as env:
        emu, db = env.emulator, env.stack.db
        ben = emu.user(6002, "Ben", language_code="en")
        await ben.send_text("is anybody there?")
        answer = await emu.wait_for_bot_message(6002, has_rating_buttons, timeout=30)
        await ben.press(answer, "👍")
        (rating,) = await wait_db(db, rows(Rating), within=30)
        assert rating.value == 1


async def test_broker_and_database_down_then_spool_replays(pg_url: str, tmp_path: Path) -> None:
    good = Database.from_settings(DatabaseSettings(database_url=pg_url))
    dead = Database.from_settings(
        DatabaseSettings(database_url="postgresql://postgres@127.0.0.1:5499/nothing")
    )
    interaction = good.call(
        crud.add_interaction,
        interaction=Interaction(chat_id=1, user_id=1, assistant="chat", prompt="p", answer="a"),
    )
    assert interaction.id is not None
    celery_app = create_celery(Settings(redis=RedisSettings(redis_url=DEAD_REDIS)))
    sink = FeedbackSink(celery_app=celery_app, db=dead, spool=Spool(tmp_path / "spool.jsonl"))
    how = await sink.submit(Feedback(interaction_id=interaction.id, user_id=1, value=-1))
    assert how == "spooled" and len(sink.spool) == 1
    # The database comes back: the replay writes the rating (the broker is still down).
    sink.db = good
    assert await sink.replay_spool() == 1
    assert len(sink.spool) == 0
    (rating,) = good.call(rows(Rating))
    assert rating.value == -1
    good.dispose()
    dead.dispose()
