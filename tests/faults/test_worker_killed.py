"""The Celery worker SIGKILLed mid-task: acks_late + idempotency store the rating exactly once.

The worker is a real `loopgram worker` process (solo pool) on a private Redis, writing to the
shared Postgres through a proxy. Stalling the proxy holds the worker inside its database
write (or, with Redis stalled instead, inside its ack after the commit) while it is killed.
A second worker then gets the message again from Redis and stores it: once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from loopgram.db import Database
from loopgram.feedback import Feedback
from loopgram.models import Rating, ReviewItem
from loopgram.settings import DatabaseSettings, RedisSettings, Settings
from tests.factories import add_interaction
from tests.faults.conftest import (
    PrivateRedis,
    TcpProxy,
    count,
    kill_group,
    start_worker,
    stop_worker,
    wait_until,
)
from workers.celery_app import create_celery

pytestmark = pytest.mark.integration

VISIBILITY = 2.0  # seconds; production: an hour (see tests/faults/worker_main.py)


@pytest.fixture
def direct_db(pg_url: str) -> Iterator[Database]:
    db = Database.from_settings(DatabaseSettings(database_url=pg_url))
    yield db
    db.dispose()


def _unacked(redis: PrivateRedis) -> int:
    client = redis.client()
    try:
        return int(client.hlen("unacked"))
    finally:
        client.close()


def _ready(log: Path) -> bool:
    return log.exists() and "ready." in log.read_text(errors="replace")


def _send(redis_url: str, payloads: list[dict[str, object]]) -> None:
    app = create_celery(Settings(redis=RedisSettings(redis_url=redis_url)))
    app.send_task("loopgram.record_feedback_many", args=[payloads], queue="feedback")
    app.close()


@pytest.mark.parametrize("moment", ["before_commit", "after_commit_before_ack"])
def test_a_worker_killed_mid_task_stores_the_rating_once_after_a_new_worker_starts(
    moment: str,
    private_redis: PrivateRedis,
    pg_proxy: TcpProxy,
    pg_url: str,
    direct_db: Database,
    tmp_path: Path,
) -> None:
    iid = add_interaction(direct_db, user_id=41, prompt="p")
    press = Feedback(interaction_id=iid, user_id=41, value=-1, reason="wrong", update_id=7)
    redis_proxy = TcpProxy("127.0.0.1", private_redis.port)
    env = {
        "DATABASE_URL": pg_proxy.url_for(pg_url),
        "REDIS_URL": redis_proxy.url_for(private_redis.url),
        "DATA_DIR": str(tmp_path / "data"),
    }
    first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    first = start_worker(env, first_log, visibility_timeout=VISIBILITY)
    second = None
    try:
        wait_until(lambda: _ready(first_log), 60, "first worker ready")
        pg_proxy.stall()  # the worker's database write will hang
        _send(private_redis.url, [press.to_payload()])
        wait_until(lambda: _unacked(private_redis) == 1, 20, "the worker took the message")
        # Taken is not yet running: the solo pool fetches, holds the message for the batch
        # window, then runs the task. A Redis stall before the task has opened its database
        # connection would hang the worker's loop itself, and the task would never start.
        wait_until(lambda: pg_proxy.accepted > 0, 10, "the worker is writing")
        if moment == "after_commit_before_ack":
            redis_proxy.stall()  # its ack will hang ...
            pg_proxy.restore()  # ... after the commit goes through
            wait_until(lambda: count(direct_db, Rating) == 1, 20, "the first worker committed")
        kill_group(first)  # SIGKILL, worker and pool alike
        assert _unacked(private_redis) == 1, "the message must still await its ack"
        pg_proxy.cut()  # drop whatever the dead worker left half-open, then serve again
        pg_proxy.restore()
        redis_proxy.cut()
        redis_proxy.restore()
        if moment == "before_commit":
            assert count(direct_db, Rating) == 0

        second = start_worker(env, second_log, visibility_timeout=VISIBILITY)
        # Redis re-delivers the unacknowledged message to the new worker, which stores it.
        wait_until(lambda: _unacked(private_redis) == 0, 60, "the message was re-delivered")
        wait_until(
            lambda: "feedback.recorded" in second_log.read_text(errors="replace"),
            20,
            "the second worker applied the press",
        )
    finally:
        if second is not None:
            stop_worker(second)
        kill_group(first)
        redis_proxy.close()
    ratings = direct_db.call(lambda *, session: list(session.exec(select(Rating)).all()))
    assert [(r.interaction_id, r.user_id, r.value, r.reason) for r in ratings] == [
        (iid, 41, -1, "wrong")
    ]
    assert count(direct_db, ReviewItem) == 1  # the 👎 flagged the answer once, not twice
