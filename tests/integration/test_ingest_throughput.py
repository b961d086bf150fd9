"""Ratings published in bulk by the bot's FeedbackSink and stored by real workers on Redis.

What must hold while presses travel many to a message: none lost and none stored twice when
a worker is killed mid-way, when the broker and then the database fail part-way through a
burst, or when the handlers that submitted them are cancelled; an idle press is not held back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, func, select

from bot.feedback_sink import FeedbackSink
from loopgram.db import Database
from loopgram.feedback import Feedback
from loopgram.models import Rating, ReviewItem
from loopgram.settings import Settings
from loopgram.spool import Spool
from tests.integration.test_feedback_batches import _answers
from tests.integration.test_worker_tasks import wait_until, worker_db
from workers.celery_app import create_celery

pytestmark = pytest.mark.integration

__all__ = ["worker_db"]  # the fixture


def _presses(ids: list[int]) -> list[Feedback]:
    """One press per answer, one in five a 👎 (which flags the answer for review)."""
    return [
        Feedback(interaction_id=iid, user_id=k + 1, value=-1 if k % 5 == 4 else 1, update_id=k)
        for k, iid in enumerate(ids)
    ]


def _count(db: Database, model: Any) -> int:
    def count(*, session: Session) -> int:
        return session.exec(select(func.count()).select_from(model)).one()

    return db.call(count)


def _assert_stored_exactly(db: Database, presses: list[Feedback]) -> None:
    """One row per press with its value, one pending flag per 👎, nothing else."""
    ratings = db.call(lambda *, session: list(session.exec(select(Rating)).all()))
    stored = {(r.interaction_id, r.user_id): r.value for r in ratings}
    assert len(ratings) == len(stored) == len(presses)  # no duplicate, none missing
    assert stored == {(p.interaction_id, p.user_id): p.value for p in presses}
    items = db.call(lambda *, session: list(session.exec(select(ReviewItem)).all()))
    flagged = sorted(p.interaction_id for p in presses if p.value < 0)
    assert sorted(i.interaction_id for i in items) == flagged
    assert {i.status for i in items} == {"pending"}


def _broker_is_drained(redis_url: str) -> bool:
    client = redis.Redis.from_url(redis_url)
    try:
        return (
            client.llen("feedback") == 0
            and client.hlen("unacked") == 0
            and client.zcard("unacked_index") == 0
        )
    finally:
        client.close()


def _submit_all(sink: FeedbackSink, presses: list[Feedback]) -> Counter[str]:
    async def burst() -> Counter[str]:
        outcomes = await asyncio.gather(*(sink.submit(p) for p in presses))
        await sink.stop()
        return Counter(outcomes)

    return asyncio.run(burst())


def test_payload_carries_every_field() -> None:
    press = Feedback(
        interaction_id=1, user_id=2, value=-1, reason="wrong", comment="c", source="reaction"
    )
    assert press.to_payload() == dataclasses.asdict(press)
    assert Feedback.from_payload(press.to_payload()) == press


def test_a_burst_travels_in_few_messages_and_is_stored_once(
    worker_db: tuple[Settings, Database], redis_url: str, tmp_path: Path
) -> None:
    settings, db = worker_db
    app = create_celery(settings)
    presses = _presses(_answers(db, 1200))
    sink = FeedbackSink(celery_app=app, db=db, spool=Spool(tmp_path / "spool.jsonl"))
    assert _submit_all(sink, presses) == {"queued": 1200}
    client = redis.Redis.from_url(redis_url)
    try:
        messages = client.llen("feedback")
    finally:
        client.close()
    assert messages == sink.published <= 4  # 500 a message at most, not one per press
    # Also in a bulk message: a repeat of a stored press, an unknown answer, not a rating.
    junk = [presses[0].to_payload(), {"interaction_id": 10**9, "user_id": 1, "value": 1}]
    app.send_task("loopgram.record_feedback_many", args=[[*junk, {"value": 5}]], queue="feedback")
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        wait_until(lambda: _count(db, Rating) == 1200, timeout=60)
        wait_until(lambda: _broker_is_drained(redis_url), timeout=30)
    _assert_stored_exactly(db, presses)


def test_an_idle_press_is_published_at_once(
    worker_db: tuple[Settings, Database], tmp_path: Path
) -> None:
    settings, db = worker_db
    (iid,) = _answers(db, 1)
    sink = FeedbackSink(celery_app=create_celery(settings), db=db, spool=Spool(tmp_path / "s"))

    async def press() -> tuple[str, float]:
        await sink.submit(Feedback(interaction_id=iid, user_id=1, value=1))  # connects
        started = time.perf_counter()
        how = await sink.submit(Feedback(interaction_id=iid, user_id=1, value=-1))
        return how, time.perf_counter() - started

    how, seconds = asyncio.run(press())
    assert how == "queued" and sink.published == 2
    assert seconds < 0.2  # no batching window: alone, a press leaves at once


def test_cancelled_handlers_still_store_their_ratings(
    worker_db: tuple[Settings, Database], redis_url: str, tmp_path: Path
) -> None:
    settings, db = worker_db
    app = create_celery(settings)
    presses = _presses(_answers(db, 310))  # 6 full batches and 10 that wait for them
    sink = FeedbackSink(celery_app=app, db=db, spool=Spool(tmp_path / "spool.jsonl"), max_batch=50)

    async def cancelled_burst() -> None:
        handlers = [asyncio.create_task(sink.submit(p)) for p in presses]
        await asyncio.sleep(0)  # every handler has handed its press over
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        assert all(h.cancelled() for h in handlers)
        await sink.stop()  # what is still waiting is stored, not dropped

    asyncio.run(cancelled_burst())
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        wait_until(lambda: _count(db, Rating) == 310, timeout=60)
        wait_until(lambda: _broker_is_drained(redis_url), timeout=30)
    _assert_stored_exactly(db, presses)


class _FailingBroker:
    """The sink's publish, failing for the batches numbered in `down` (the broker is away)."""

    def __init__(self, publish: Any, down: range) -> None:
        self.publish, self.down, self.calls = publish, down, 0

    def __call__(self, payloads: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.calls in self.down:
            raise ConnectionError("Error 111 connecting to redis: Connection refused")
        self.publish(payloads)


class _FailingDatabase:
    """The bot's database, refusing its first `failures` write-throughs (then it is back)."""

    def __init__(self, db: Database, failures: int) -> None:
        self.db, self.failures = db, failures

    async def run(self, fn: Any, /, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("INSERT", {}, ConnectionError("server closed the connection"))
        return await self.db.run(fn, **kwargs)

    def call(self, fn: Any, /, **kwargs: Any) -> Any:
        return self.db.call(fn, **kwargs)


def test_broker_then_database_failing_mid_burst_lose_nothing(
    worker_db: tuple[Settings, Database], redis_url: str, tmp_path: Path
) -> None:
    settings, db = worker_db
    app = create_celery(settings)
    presses = _presses(_answers(db, 1000))
    spool = Spool(tmp_path / "spool.jsonl")
    flaky_db = _FailingDatabase(db, failures=2)
    sink = FeedbackSink(celery_app=app, db=flaky_db, spool=spool, max_batch=100)  # type: ignore[arg-type]
    broker = _FailingBroker(sink._enqueue_many, down=range(3, 7))  # batches 3-6 of 10
    sink._enqueue_many = broker  # type: ignore[method-assign]
    outcomes = _submit_all(sink, presses)
    # 6 batches published; of the 4 the broker refused, the database took 2 and the spool 2.
    assert outcomes == {"queued": 600, "spooled": 200, "written": 200}
    assert len(spool) == 200 and _count(db, Rating) == 200
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        wait_until(lambda: _count(db, Rating) == 800, timeout=60)
        assert asyncio.run(sink.replay_spool()) == 200  # the broker is back
        wait_until(lambda: _count(db, Rating) == 1000, timeout=60)
        wait_until(lambda: _broker_is_drained(redis_url), timeout=30)
    assert len(spool) == 0
    _assert_stored_exactly(db, presses)


# A worker process of the real worker code on a broker whose unacknowledged messages come
# back after 3 s, looked for every second (production: an hour, looked for every ~100 s), so
# a killed worker's batches are redelivered within the test. SLOW makes each batch sleep first, so there is a "mid-way" to kill it in.
_WORKER = textwrap.dedent(
    """
    import os, sys, time
    from loopgram.settings import Settings
    from workers import tasks
    from workers.celery_app import create_celery

    if os.environ.get("SLOW"):
        real = tasks.FeedbackBulk.run_batch

        def slow(self, payloads):
            time.sleep(float(os.environ["SLOW"]))
            return real(self, payloads)

        tasks.FeedbackBulk.run_batch = slow
        tasks.FeedbackBulk.flush_every = 100
    app = create_celery(Settings.load())
    app.conf.broker_transport_options = {
        "visibility_timeout": 3, "unacked_restore_interval": 1, "unacked_restore_throttle": 1
    }
    app.worker_main(["worker", "-Q", "feedback", "-l", "WARNING", "--without-gossip",
                     "--without-mingle", *sys.argv[1:]])
    """
)


@pytest.fixture
def worker_processes(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, slow: float | None = None) -> subprocess.Popen[bytes]:
        env = {**os.environ, "DATABASE_URL": pg_url, "REDIS_URL": redis_url}
        env["DATA_DIR"] = str(tmp_path / "data")
        if slow is not None:
            env["SLOW"] = str(slow)
        log = (tmp_path / f"worker-{len(started)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-c", _WORKER, *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed with its pool
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.slow
def test_worker_killed_mid_way_loses_and_duplicates_nothing(
    worker_db: tuple[Settings, Database],
    redis_url: str,
    tmp_path: Path,
    worker_processes: Any,
) -> None:
    settings, db = worker_db
    app = create_celery(settings)
    presses = _presses(_answers(db, 3000))
    sink = FeedbackSink(celery_app=app, db=db, spool=Spool(tmp_path / "spool.jsonl"), max_batch=100)
    # All of them, then the last 300 again (a press repeated): 33 messages. Not the first
    # ones: those are what the first worker is killed on, and a copy would hide a loss.
    assert _submit_all(sink, presses + presses[-300:]) == {"queued": 3300}

    first = worker_processes("-c", "1", "-n", "first@%h", slow=0.3)
    wait_until(lambda: _count(db, Rating) > 0, timeout=60)
    os.killpg(first.pid, signal.SIGKILL)  # mid-batch: no warm shutdown, no ack
    first.wait()
    stored_before = _count(db, Rating)
    assert 0 < stored_before < 3000  # it really was mid-way

    worker_processes("-c", "2", "-n", "second@%h")  # prefork, as in production
    wait_until(lambda: _count(db, Rating) == 3000, timeout=90)
    wait_until(lambda: _broker_is_drained(redis_url), timeout=60)
    time.sleep(1.0)  # a late redelivery would show up now
    _assert_stored_exactly(db, presses)
