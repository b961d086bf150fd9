"""The embedded broker never hands a consumer a half-written message."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Queue

from loopgram.settings import AppSettings, Settings
from workers.celery_app import broker_options


def test_messages_are_whole_under_concurrent_produce_and_consume(tmp_path: Path) -> None:
    options = broker_options(Settings(app=AppSettings(data_dir=tmp_path)))
    queue = "feedback"
    received: list[dict[str, int]] = []
    errors: list[BaseException] = []
    total = 400

    def consume() -> None:
        with Connection(
            options["broker_url"],
            transport=options["broker_transport"],
            transport_options=options["broker_transport_options"],
        ) as conn:
            simple = conn.SimpleQueue(queue)
            deadline = time.monotonic() + 60
            while len(received) < total and time.monotonic() < deadline:
                try:
                    message = simple.get(block=True, timeout=1)
                except simple.Empty:
                    continue
                except BaseException as exc:  # what broke the embedded worker before
                    errors.append(exc)
                    return
                received.append(message.payload)
                message.ack()
            simple.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    with Connection(
        options["broker_url"],
        transport=options["broker_transport"],
        transport_options=options["broker_transport_options"],
    ) as conn:
        # Publish the way Celery's producer does (a bare producer, no consumer of its own).
        producer = conn.Producer(serializer="json")
        for i in range(total):
            producer.publish(
                {"n": i, "pad": "x" * 2000},
                routing_key=queue,
                declare=[Queue(queue, routing_key=queue)],
            )
    consumer.join(timeout=90)
    assert errors == []
    assert sorted(m["n"] for m in received) == list(range(total))


def test_a_training_task_sent_from_the_bot_process_reaches_the_training_queue(
    tmp_path: Path,
) -> None:
    """The file-system broker keeps exchange bindings in process memory: the bot process,
    whose worker consumes only feedback and rag, must still route a run to `training`
    (where the separate training worker picks it up) instead of dropping it."""
    from workers.celery_app import create_celery
    from workers.embedded import EmbeddedWorker

    app = create_celery(Settings(app=AppSettings(data_dir=tmp_path)))
    worker = EmbeddedWorker(app, data_dir=tmp_path, beat=False)
    worker.start()
    try:
        app.send_task("loopgram.train_assistant", args=["chat"], queue="training")
        folder = tmp_path / "broker" / "queue"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not list(folder.glob("*.training.msg")):
            time.sleep(0.1)
        assert [p.name for p in folder.glob("*.training.msg")]
    finally:
        worker.stop()


def deployment_due_to_train(tmp_path: Path, db: Any, monkeypatch: Any) -> Any:
    """An embedded deployment in `tmp_path` whose one rated answer is enough for a run; its
    Celery app (the workers' database is `db` until `context.use_database(None)`)."""
    from loopgram.feedback import Feedback, apply_feedback
    from tests.factories import add_interaction
    from workers import context
    from workers.celery_app import create_celery

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRAIN_MIN_NEW_EXAMPLES", "1")
    iid = add_interaction(db)
    db.call(apply_feedback, feedback=Feedback(interaction_id=iid, user_id=7, value=1))
    context.use_database(db)
    return create_celery(Settings.load())


def test_the_scheduled_check_queues_a_run_for_the_training_worker(
    tmp_path: Path,
    sqlite_db,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    """maybe_train runs in the embedded worker's thread; the run it queues must land in this
    deployment's `training` queue (it once went to a fallback app's broker and was lost)."""
    from workers import context
    from workers.embedded import EmbeddedWorker

    app = deployment_due_to_train(tmp_path, sqlite_db, monkeypatch)
    worker = EmbeddedWorker(app, data_dir=tmp_path, beat=False)
    worker.start()
    try:
        app.send_task("loopgram.maybe_train", queue="feedback")
        folder = tmp_path / "broker" / "queue"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not list(folder.glob("*.training.msg")):
            time.sleep(0.1)
        [message] = folder.glob("*.training.msg")
        assert "loopgram.train_assistant" in message.read_text("utf-8")
    finally:
        worker.stop()
        context.use_database(None)


def test_a_connection_to_the_folders_logs_no_missing_host_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The embedded broker is folders: kombu's "No hostname was supplied" warning (once per
    connection, in every demo and worker log) says nothing true about it."""
    options = broker_options(Settings(app=AppSettings(data_dir=tmp_path)))
    with (
        caplog.at_level(logging.WARNING, logger="kombu"),
        Connection(
            options["broker_url"],
            transport=options["broker_transport"],
            transport_options=options["broker_transport_options"],
        ) as conn,
    ):
        conn.SimpleQueue("ping").put({"ok": 1})
        assert conn.info()["hostname"] is None
    assert "No hostname was supplied" not in caplog.text
