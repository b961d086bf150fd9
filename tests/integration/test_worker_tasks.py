"""Feedback tasks through a real Celery worker on the real Redis, into Postgres."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from celery.contrib.testing.worker import start_worker
from sqlmodel import func, select

from loopgram import crud
from loopgram.db import Database
from loopgram.models import Interaction, Rating
from loopgram.settings import Settings
from tests.factories import add_interaction
from workers import context
from workers.celery_app import create_celery

pytestmark = pytest.mark.integration


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def worker_db(pg_url: str, redis_url: str, settings_factory) -> Iterator[tuple[Settings, Database]]:  # type: ignore[no-untyped-def]
    settings = settings_factory(DATABASE_URL=pg_url, REDIS_URL=redis_url)
    db = Database.from_settings(settings.db)
    context.use_database(db)
    yield settings, db
    context.use_database(None)
    db.dispose()


def _count(db: Database) -> int:
    return db.call(lambda *, session: session.exec(select(func.count()).select_from(Rating)).one())


def test_ratings_go_through_the_worker_exactly_once(worker_db: tuple[Settings, Database]) -> None:
    settings, db = worker_db
    app = create_celery(settings)
    ids = [add_interaction(db, user_id=1, prompt="p") for _ in range(20)]
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        for iid in ids:
            payload = {"interaction_id": iid, "user_id": 1, "value": 1, "update_id": iid}
            # Each twice: a redelivery must not create a second row.
            app.send_task("loopgram.record_feedback", args=[payload], queue="feedback")
            app.send_task("loopgram.record_feedback", args=[payload], queue="feedback")
        wait_until(lambda: _count(db) == 20)
        time.sleep(0.3)
    assert _count(db) == 20


def test_messages_wait_in_redis_until_a_worker_comes(worker_db: tuple[Settings, Database]) -> None:
    """Enqueued while no worker runs (a worker restart): processed once one starts."""
    settings, db = worker_db
    app = create_celery(settings)
    iid = add_interaction(db, user_id=1, prompt="p")
    app.send_task(
        "loopgram.record_feedback",
        args=[{"interaction_id": iid, "user_id": 1, "value": -1, "reason": "wrong"}],
        queue="feedback",
    )
    time.sleep(0.2)
    assert _count(db) == 0
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        wait_until(lambda: _count(db) == 1)


def test_evaluate_canaries_task_promotes_through_the_worker(
    worker_db: tuple[Settings, Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    from loopgram import adapters
    from loopgram.feedback import Feedback, apply_feedback
    from tests.integration.test_adapters import RecordingServer

    settings, db = worker_db
    monkeypatch.setenv("CANARY_MIN_RATINGS", "20")
    name = db.call(
        adapters.register, assistant="chat", path="/a", base_model="b", method="dpo"
    ).name
    db.call(adapters.deploy, name=name, server=RecordingServer())
    for user in range(60):
        adapter = name if user % 2 else None
        iid = db.call(
            crud.add_interaction,
            interaction=Interaction(
                chat_id=user,
                user_id=user,
                assistant="chat",
                prompt="p",
                answer="a",
                adapter=adapter,
            ),
        ).id
        liked = user % 2 == 1 or user % 4 == 0  # canary 100% 👍, base model 50%
        db.call(
            apply_feedback,
            feedback=Feedback(interaction_id=iid, user_id=user, value=1 if liked else -1),
        )
    app = create_celery(settings)
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        app.send_task("loopgram.evaluate_canaries", queue="feedback")
        wait_until(lambda: db.call(adapters.get_by_name, name=name).status == "active")
