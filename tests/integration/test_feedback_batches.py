"""`loopgram.record_feedback` batched by a real worker on the real Redis, into Postgres."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, func, select

from loopgram.db import Database
from loopgram.models import Interaction, Rating, ReviewItem
from loopgram.settings import Settings
from tests.integration.test_worker_tasks import wait_until, worker_db
from workers import tasks
from workers.celery_app import create_celery

pytestmark = pytest.mark.integration

__all__ = ["worker_db"]  # the fixture, shared with the single-task worker tests


def _answers(db: Database, n: int) -> list[int]:
    with db.session() as session:
        rows = [
            Interaction(chat_id=u, user_id=u, assistant="chat", prompt="p", answer="a")
            for u in range(1, n + 1)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id or 0 for row in rows]


def _count(db: Database, model: Any) -> int:
    def count(*, session: Session) -> int:
        return session.exec(select(func.count()).select_from(model)).one()

    return db.call(count)


def test_many_presses_land_exactly_once(
    worker_db: tuple[Settings, Database], redis_url: str
) -> None:
    settings, db = worker_db
    app = create_celery(settings)
    ids = _answers(db, 450)
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        with app.producer_or_acquire() as producer:
            for user, iid in enumerate(ids, start=1):
                first = {"interaction_id": iid, "user_id": user, "value": -1, "update_id": iid}
                for payload in (first, first, {**first, "value": 1}):  # a repeat, then 👍
                    app.send_task(
                        "loopgram.record_feedback",
                        args=[payload],
                        queue="feedback",
                        producer=producer,
                    )
            # Dropped, never crash the batch: unknown answer, not a rating at all.
            for bad in ({"interaction_id": 10**9, "user_id": 1, "value": 1}, {"value": 5}):
                app.send_task(
                    "loopgram.record_feedback", args=[bad], queue="feedback", producer=producer
                )
        wait_until(lambda: _count(db, Rating) == len(ids), timeout=60)
        wait_until(
            lambda: db.call(
                lambda *, session: all(r.value == 1 for r in session.exec(select(Rating)).all())
            ),
            timeout=30,
        )
        time.sleep(0.5)
    assert _count(db, Rating) == len(ids)
    client = redis.Redis.from_url(redis_url)
    try:  # every message was acknowledged: nothing left in kombu's unacked index
        assert client.hlen("unacked") == 0
        assert client.zcard("unacked_index") == 0
    finally:
        client.close()
    items = db.call(lambda *, session: list(session.exec(select(ReviewItem)).all()))
    assert len(items) == len(ids)
    assert {i.status for i in items} == {"withdrawn"}


def test_a_batch_that_fails_is_requeued_not_lost(
    worker_db: tuple[Settings, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, db = worker_db
    app = create_celery(settings)
    ids = _answers(db, 30)
    real = tasks.apply_feedback_many
    calls = {"n": 0}

    def flaky(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= 2:  # the database is away for the first two attempts
            raise OperationalError("INSERT", {}, ConnectionError("server closed the connection"))
        return real(**kwargs)

    monkeypatch.setattr(tasks, "apply_feedback_many", flaky)
    monkeypatch.setattr(tasks.FeedbackBatch, "retry_delays", ())  # give up at once: requeue
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="CRITICAL"):
        for user, iid in enumerate(ids, start=1):
            app.send_task(
                "loopgram.record_feedback",
                args=[{"interaction_id": iid, "user_id": user, "value": 1}],
                queue="feedback",
            )
        wait_until(lambda: _count(db, Rating) == len(ids), timeout=30)
    assert calls["n"] >= 3


def test_called_directly_is_a_batch_of_one(worker_db: tuple[Settings, Database]) -> None:
    _, db = worker_db
    (iid,) = _answers(db, 1)
    result = tasks.record_feedback({"interaction_id": iid, "user_id": 1, "value": 1})
    assert result == {"received": 1, "stored": 1, "dropped": 0}
    assert _count(db, Rating) == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"interaction_id": "abc", "user_id": 1, "value": 1},
        {"interaction_id": None, "user_id": 1, "value": 1},
        {"interaction_id": [1], "user_id": 1, "value": 1},
        {"interaction_id": 2**70, "user_id": 1, "value": 1},  # beyond 64 bits
        {"interaction_id": 1, "user_id": "1", "value": 1},
        {"interaction_id": 1, "user_id": 1, "value": 1, "comment": {"a": 1}},
    ],
    ids=["str-id", "none-id", "list-id", "huge-id", "str-user", "dict-comment"],
)
def test_a_payload_of_wrong_types_is_dropped_not_the_batch(
    db: Database, bad: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poison payload would fail the whole batch, requeued again and again with its good
    ratings: it is refused on its own (and logged) instead."""
    from workers import context

    monkeypatch.setattr(context, "_db", db)
    (iid,) = _answers(db, 1)
    good = {"interaction_id": iid, "user_id": 1, "value": 1}
    assert tasks.record_feedback_batch([good, bad]) == {"received": 2, "stored": 1, "dropped": 1}
    assert _count(db, Rating) == 1
