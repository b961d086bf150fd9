"""Celery task figures recorded by real workers: into the real Redis (adding up over
processes), or in the process with the embedded file-system broker; and what `/metrics` shows
of them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from loopgram import metrics
from loopgram.settings import AppSettings, RedisSettings, Settings
from loopgram.task_stats import LocalTaskStats, RedisTaskStats
from tests.e2e.test_ops_endpoints import sample
from workers.celery_app import create_celery
from workers.embedded import EmbeddedWorker
from workers.task_figures import task_stats_of


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = f"test:celery:{uuid.uuid4().hex}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{name}*"):
        client.delete(key)
    client.close()


def test_records_of_two_processes_add_up_in_redis(redis_url: str, prefix: str) -> None:
    first = RedisTaskStats(redis_url, prefix=prefix)
    second = RedisTaskStats(redis_url, prefix=prefix)  # another worker, another host
    first.record("loopgram.maybe_train", "success", 0.2)
    second.record("loopgram.maybe_train", "success", 0.3)
    second.record("loopgram.maybe_train", "failure", 40.0)
    figures = RedisTaskStats(redis_url, prefix=prefix).read()  # the bot's scrape
    assert figures.counts == {
        ("loopgram.maybe_train", "success"): 2,
        ("loopgram.maybe_train", "failure"): 1,
    }
    assert figures.buckets == {("loopgram.maybe_train", 3): 2, ("loopgram.maybe_train", 7): 1}
    assert figures.seconds["loopgram.maybe_train"] == pytest.approx(40.5)


def test_queue_depths_count_every_priority_list(redis_url: str) -> None:
    queue = f"test-queue-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_url)
    try:
        client.rpush(queue, "a", "b")
        client.rpush(f"{queue}\x06\x166", "c")  # kombu's list for priority step 6
        stats = RedisTaskStats(redis_url, queues=(queue, "nobody-uses-this"))
        assert stats.queue_depths() == {queue: 3, "nobody-uses-this": 0}
    finally:
        client.delete(queue, f"{queue}\x06\x166")
        client.close()


def test_a_dead_redis_costs_a_task_nothing_and_a_scrape_says_so(unused_tcp_port: int) -> None:
    stats = RedisTaskStats(f"redis://127.0.0.1:{unused_tcp_port}/0")
    started = time.monotonic()
    stats.record("loopgram.record_feedback_many", "success", 0.01)  # dropped, never raised
    assert time.monotonic() - started < 3
    metrics.use_task_stats(stats)
    try:
        text = metrics.render().decode()
    finally:
        metrics.use_task_stats(None)
    assert sample(text, "loopgram_celery_stats_up") == 0


def test_a_redis_deployment_records_into_redis(redis_url: str) -> None:
    app = create_celery(Settings(redis=RedisSettings(redis_url=redis_url)))
    stats = task_stats_of(app)
    assert isinstance(stats, RedisTaskStats)
    assert stats.queues == ("feedback", "rag", "training")


def test_the_embedded_worker_records_its_tasks_and_the_queue_it_fills(
    tmp_path: Path,
    sqlite_db,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    """maybe_train runs in the embedded worker and queues a training run for the separate
    training worker: /metrics shows the run that ended and the message that waits."""
    from tests.integration.test_fs_broker import deployment_due_to_train
    from workers import context

    app = deployment_due_to_train(tmp_path, sqlite_db, monkeypatch)
    stats = task_stats_of(app)
    assert isinstance(stats, LocalTaskStats)
    worker = EmbeddedWorker(app, data_dir=tmp_path, beat=False)
    worker.start()
    metrics.use_task_stats(stats)
    try:
        app.send_task("loopgram.maybe_train", queue="feedback")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not stats.read().counts:
            time.sleep(0.1)
        text = metrics.render().decode()
    finally:
        metrics.use_task_stats(None)
        worker.stop()
        context.use_database(None)
    task = "loopgram.maybe_train"
    assert sample(text, "loopgram_celery_stats_up") == 1
    assert sample(text, "loopgram_celery_tasks_total", task=task, state="success") == 1
    assert sample(text, "loopgram_celery_task_seconds_count", task=task) == 1
    assert sample(text, "loopgram_celery_queue_messages", queue="training") == 1
    assert sample(text, "loopgram_celery_queue_messages", queue="feedback") == 0


def test_an_app_made_elsewhere_has_no_figures(tmp_path: Path) -> None:
    from celery import Celery

    assert task_stats_of(Celery("other")) is None
    assert isinstance(
        task_stats_of(create_celery(Settings(app=AppSettings(data_dir=tmp_path)))), LocalTaskStats
    )


def test_a_batch_is_one_run_of_its_task(tmp_path: Path) -> None:
    """Batched tasks bypass Celery's tracer and its signals: the pool job records them."""
    from workers.batching import BatchTask, run_in_pool

    class Sum(BatchTask):
        name = "test.sum"

        def run_batch(self, payloads: list[int]) -> int:
            if any(p < 0 for p in payloads):
                raise ValueError("negative")
            return sum(payloads)

    app = create_celery(Settings(app=AppSettings(data_dir=tmp_path)))
    task = app.register_task(Sum())
    assert run_in_pool(task, [1, 2, 3]).result == 6
    assert not run_in_pool(task, [1, -1]).ok
    stats = task_stats_of(app)
    assert stats is not None
    figures = stats.read()
    assert figures.counts == {("test.sum", "success"): 1, ("test.sum", "failure"): 1}
    assert sum(figures.buckets.values()) == 2
