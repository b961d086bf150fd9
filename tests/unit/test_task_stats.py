"""Celery task figures: counts by outcome, duration buckets, queue depths from the embedded
broker's folder, and a scrape that survives a store it cannot read."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from loopgram.task_stats import (
    TASK_BUCKETS,
    LocalTaskStats,
    TaskCollector,
    TaskFigures,
    bucket_of,
)
from tests.e2e.test_ops_endpoints import sample


def scrape(stats: object) -> str:
    collector = TaskCollector()
    collector.use(stats)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


@pytest.mark.parametrize(
    ("seconds", "index"),
    [(0.0, 0), (0.01, 0), (0.011, 1), (1.0, 4), (59.9, 7), (3600.0, 10), (3601.0, 11)],
)
def test_a_duration_falls_in_the_first_bucket_that_holds_it(seconds: float, index: int) -> None:
    assert bucket_of(seconds) == index
    assert len(TASK_BUCKETS) == 11  # index 11 is +Inf


def test_local_figures_render_as_counters_and_a_cumulative_histogram(tmp_path: Path) -> None:
    stats = LocalTaskStats(queue_folder=tmp_path, queues=("feedback", "training", "rag"))
    stats.record("loopgram.record_feedback_many", "success", 0.004)
    stats.record("loopgram.record_feedback_many", "success", 0.3)
    stats.record("loopgram.record_feedback_many", "failure", 0.02)
    stats.record("loopgram.train_assistant", "success", 420.0)
    for name in ("1_a.feedback.msg", "2_b.feedback.msg", "3_c.training.msg"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "4_d.feedback.msg.writing").write_text("")  # not a message until renamed
    (tmp_path / "5_e.celery.msg").write_text("{}")  # a queue nobody here serves

    text = scrape(stats)
    feedback = "loopgram.record_feedback_many"
    assert sample(text, "loopgram_celery_stats_up") == 1
    assert sample(text, "loopgram_celery_tasks_total", task=feedback, state="success") == 2
    assert sample(text, "loopgram_celery_tasks_total", task=feedback, state="failure") == 1
    assert sample(text, "loopgram_celery_task_seconds_bucket", task=feedback, le="0.01") == 1
    assert sample(text, "loopgram_celery_task_seconds_bucket", task=feedback, le="0.05") == 2
    assert sample(text, "loopgram_celery_task_seconds_bucket", task=feedback, le="0.5") == 3
    assert sample(text, "loopgram_celery_task_seconds_bucket", task=feedback, le="+Inf") == 3
    assert sample(text, "loopgram_celery_task_seconds_count", task=feedback) == 3
    assert sample(text, "loopgram_celery_task_seconds_sum", task=feedback) == pytest.approx(0.324)
    train = "loopgram.train_assistant"
    assert sample(text, "loopgram_celery_task_seconds_bucket", task=train, le="300.0") == 0
    assert sample(text, "loopgram_celery_task_seconds_bucket", task=train, le="900.0") == 1
    assert sample(text, "loopgram_celery_queue_messages", queue="feedback") == 2
    assert sample(text, "loopgram_celery_queue_messages", queue="training") == 1
    assert sample(text, "loopgram_celery_queue_messages", queue="rag") == 0
    assert sample(text, "loopgram_celery_queue_messages", queue="celery") is None


def test_read_returns_a_copy_that_later_records_do_not_change() -> None:
    stats = LocalTaskStats()
    stats.record("t", "success", 1.0)
    before = stats.read()
    stats.record("t", "success", 1.0)
    assert before.counts == {("t", "success"): 1}
    assert stats.read().counts == {("t", "success"): 2}
    assert stats.queue_depths() == {}  # no folder: no queue figures


class Broken:
    def record(self, task: str, state: str, seconds: float) -> None:
        raise AssertionError("not called on scrape")

    def read(self) -> TaskFigures:
        raise ConnectionError("redis is down")

    def queue_depths(self) -> dict[str, int]:
        return {}


def test_a_store_that_cannot_be_read_gives_up_zero_and_nothing_else() -> None:
    text = scrape(Broken())
    assert sample(text, "loopgram_celery_stats_up") == 0
    assert "loopgram_celery_tasks_total" not in text


def test_without_a_store_there_are_no_celery_figures() -> None:
    assert "loopgram_celery" not in scrape(None)
