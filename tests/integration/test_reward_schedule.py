"""Scheduled reward-model runs: which assistants are due (people's pairs since the last
reward-model run, never best-of-n), and the scheduled check queueing them for the training
worker."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from kombu import Connection
from sqlmodel import Session, select

from loopgram.db import Database
from loopgram.models import PairSource, PreferencePair, RunStatus, TrainingRun, utcnow
from loopgram.settings import Settings
from training.pipeline import reward_due_assistants

T0 = utcnow() - timedelta(days=1)
_keys = iter(range(1_000_000))


def add_pairs(
    db: Database, source: PairSource, n: int, *, at: datetime, assistant: str = "chat"
) -> None:
    def add(*, session: Session) -> None:
        for _ in range(n):
            session.add(
                PreferencePair(
                    pair_key=f"{source}:{next(_keys)}",
                    assistant=assistant,
                    prompt="question",
                    chosen="good",
                    rejected="bad",
                    source=source,
                    created_at=at,
                )
            )

    db.call(add)


def add_run(db: Database, status: RunStatus, *, at: datetime, method: str = "reward") -> None:
    def add(*, session: Session) -> None:
        session.add(
            TrainingRun(
                assistant="chat", method=method, status=status, started_at=at, created_at=at
            )
        )

    db.call(add)


def due(db: Database, n: int = 5) -> list[str]:
    return db.call(reward_due_assistants, min_new_pairs=n)


def test_due_counts_peoples_pairs_since_the_last_reward_run(db: Database) -> None:
    assert due(db) == []
    # Machine-labelled best-of-n pairs never count, however many there are.
    add_pairs(db, PairSource.best_of_n, 50, at=T0)
    add_pairs(db, PairSource.best_of_n, 50, at=T0, assistant="paraphrase")
    assert due(db) == []
    add_pairs(db, PairSource.regenerate, 2, at=T0)
    add_pairs(db, PairSource.correction, 1, at=T0)
    add_pairs(db, PairSource.rating, 1, at=T0)
    assert due(db) == []  # 4 of 5
    add_pairs(db, PairSource.rating, 1, at=T0 + timedelta(minutes=1))
    assert due(db) == ["chat"]
    assert due(db, 6) == [] and due(db, 0) == [], "0 turns scheduled reward runs off"

    # A finished reward run is the new reference point; a policy run is not.
    add_run(db, RunStatus.succeeded, at=T0 + timedelta(minutes=2))
    add_run(db, RunStatus.succeeded, at=T0 + timedelta(minutes=30), method="dpo")
    assert due(db) == []
    add_pairs(db, PairSource.regenerate, 4, at=T0 + timedelta(minutes=3))
    add_pairs(db, PairSource.best_of_n, 9, at=T0 + timedelta(minutes=3))
    assert due(db) == []
    add_pairs(db, PairSource.correction, 1, at=T0 + timedelta(minutes=4))
    assert due(db) == ["chat"]

    # One that never started (refused) does not reset the count...
    add_run(db, RunStatus.refused, at=T0 + timedelta(minutes=5))
    assert due(db) == ["chat"]
    # ...one in progress keeps the assistant off the schedule...
    add_run(db, RunStatus.running, at=T0 + timedelta(minutes=6))
    assert due(db) == []


def test_a_failed_or_rejected_reward_run_waits_for_new_pairs(db: Database) -> None:
    add_pairs(db, PairSource.regenerate, 5, at=T0)
    add_run(db, RunStatus.failed, at=T0 + timedelta(minutes=1))
    assert due(db) == [], "a crashing run is not retried on every check"
    add_pairs(db, PairSource.rating, 5, at=T0 + timedelta(minutes=2))
    assert due(db) == ["chat"]
    add_run(db, RunStatus.rejected, at=T0 + timedelta(minutes=3))
    assert due(db) == []


def test_the_scheduled_check_queues_a_reward_run_for_the_training_worker(
    tmp_path: Path,
    sqlite_db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """maybe_train, run by a real worker, sends `train_assistant(chat, "reward")` to the
    training queue when people made enough pairs, and nothing when only best-of-n did."""
    from workers import context
    from workers.celery_app import broker_options, create_celery
    from workers.embedded import EmbeddedWorker
    from workers.tasks import maybe_train

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRAIN_MIN_NEW_EXAMPLES", "1000000")  # no policy run
    monkeypatch.setenv("REWARD_TRAIN_MIN_PAIRS", "3")
    settings = Settings.load()
    context.use_database(sqlite_db)
    try:
        add_pairs(sqlite_db, PairSource.best_of_n, 10, at=T0)
        # Nothing due: nothing would be sent (called in-process, where a send would go astray).
        assert maybe_train() == {"policy": [], "reward": []}
        add_pairs(sqlite_db, PairSource.regenerate, 3, at=T0)
        app = create_celery(settings)
        worker = EmbeddedWorker(app, data_dir=tmp_path, beat=False)
        worker.start()
        folder = tmp_path / "broker" / "queue"
        try:
            app.send_task("loopgram.maybe_train", queue="feedback")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not list(folder.glob("*.training.msg")):
                time.sleep(0.1)
        finally:
            worker.stop()
    finally:
        context.use_database(None)
    options = broker_options(settings)
    with Connection(
        options["broker_url"],
        transport=options["broker_transport"],
        transport_options=options["broker_transport_options"],
    ) as conn:
        queue = conn.SimpleQueue("training")
        message = queue.get(block=True, timeout=5)
        args, kwargs, _embed = message.payload
        assert message.headers["task"] == "loopgram.train_assistant"
        assert args == ["chat", "reward"] and kwargs == {"only_if_due": True}
        message.ack()
        with pytest.raises(queue.Empty):
            queue.get(block=True, timeout=0.5)
        queue.close()


def test_a_queued_reward_run_that_is_no_longer_due_does_nothing(  # type: ignore[no-untyped-def]
    sqlite_db: Database, settings_factory, sqlite_url: str
) -> None:
    """Queued twice while a long run held the queue: the second finds the first's run and
    skips without recording anything."""
    from workers import context
    from workers.tasks import train_assistant

    settings = settings_factory(DATABASE_URL=sqlite_url, REWARD_TRAIN_MIN_PAIRS="3")
    add_pairs(sqlite_db, PairSource.regenerate, 3, at=T0)
    add_run(sqlite_db, RunStatus.rejected, at=T0 + timedelta(minutes=1))
    context.use_settings(settings)
    context.use_database(sqlite_db)
    try:
        report = train_assistant("chat", "reward", only_if_due=True)
    finally:
        context.use_settings(None)
        context.use_database(None)
    assert report == {"run_id": None, "status": "skipped", "detail": "no longer due"}
    runs = sqlite_db.call(lambda *, session: session.exec(select(TrainingRun)).all())
    assert [r.status for r in runs] == [RunStatus.rejected]
