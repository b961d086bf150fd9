"""`loopgram worker` and `loopgram beat` as separate processes on Redis + Postgres."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import select

from loopgram import crud
from loopgram.db import Database
from loopgram.models import Interaction, Rating
from loopgram.settings import DatabaseSettings, RedisSettings, Settings
from loopgram.task_stats import RedisTaskStats
from workers.celery_app import create_celery

pytestmark = pytest.mark.integration


def _start(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "loopgram.cli", *args],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_worker_process_stores_ratings_and_beat_starts(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": pg_url, "REDIS_URL": redis_url, "DATA_DIR": str(tmp_path)}
    db = Database.from_settings(DatabaseSettings(database_url=pg_url))
    interaction = db.call(
        crud.add_interaction,
        interaction=Interaction(chat_id=9, user_id=9, assistant="chat", prompt="p", answer="a"),
    )
    app = create_celery(Settings(redis=RedisSettings(redis_url=redis_url)))
    app.send_task(
        "loopgram.record_feedback",
        args=[{"interaction_id": interaction.id, "user_id": 9, "value": 1}],
        queue="feedback",
    )
    worker = _start("worker", "-c", "1", env=env, log=tmp_path / "worker.log")
    beat = _start("beat", env=env, log=tmp_path / "beat.log")
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if db.call(lambda *, session: session.exec(select(Rating)).first()):
                break
            time.sleep(0.2)
        else:
            raise AssertionError((tmp_path / "worker.log").read_text()[-3000:])
        assert beat.poll() is None, (tmp_path / "beat.log").read_text()[-2000:]
        # The prefork child recorded the run into Redis, where the bot's /metrics reads it.
        stats = RedisTaskStats(redis_url)
        while time.monotonic() < deadline and not stats.read().counts:
            time.sleep(0.2)
        assert stats.read().counts.get(("loopgram.record_feedback", "success")) == 1
    finally:
        _stop(worker)
        _stop(beat)
        db.dispose()
    assert "beat: Starting" in (tmp_path / "beat.log").read_text()
