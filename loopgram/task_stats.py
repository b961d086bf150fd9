"""Celery task figures for Prometheus: how many tasks ran, how they ended, how long they took,
and how many messages wait in each queue.

Workers record every task when it ends (`workers/celery_app.py` connects Celery's signals);
the bot's `/metrics` reads the figures at scrape time (`loopgram.metrics`).

- **With Redis** (production) the figures live in three Redis hashes: the counts add up over
  prefork children, workers and hosts without prometheus_client's multiprocess mode, and every
  bot replica reports the same figures (aggregate them with `max`, not `sum`). A record is one
  pipelined round trip; when Redis is down the task is unaffected and the record is dropped.
- **Without Redis** (the embedded default) they live in the process. The embedded worker runs
  the feedback and rag tasks in the bot's process, so those are counted; the training worker
  `loopgram run` starts is a process of its own and its runs are not (the database's
  training-run figures count them).

Queue depths come from the broker: the lengths of a queue's Redis lists (kombu keeps one per
priority step), or the message files of the queue in the embedded broker's folder.

This module imports neither aiogram nor celery.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

# Feedback tasks take milliseconds, a training run minutes to an hour.
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
REDIS_PREFIX = "loopgram:celery:"
# kombu's Redis transport keeps a queue's messages of priority step p under "<queue>\x06\x16<p>"
# (step 0 is the bare name).
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (0, 3, 6, 9)
_REDIS_TIMEOUT = 1.0  # seconds: a scrape or a task never waits longer on a sick Redis
_WARN_EVERY = 60.0  # seconds between two warnings about failed records


@dataclass
class TaskFigures:
    """Totals since the figures were first recorded."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (task, state) → runs
    buckets: dict[tuple[str, int], int] = field(default_factory=dict)  # (task, bucket) → runs
    seconds: dict[str, float] = field(default_factory=dict)  # task → seconds in total

    def add(self, task: str, state: str, seconds: float) -> None:
        self.counts[task, state] = self.counts.get((task, state), 0) + 1
        index = bucket_of(seconds)
        self.buckets[task, index] = self.buckets.get((task, index), 0) + 1
        self.seconds[task] = self.seconds.get(task, 0.0) + seconds

    def tasks(self) -> list[str]:
        return sorted({task for task, _ in self.counts} | set(self.seconds))


def bucket_of(seconds: float) -> int:
    """The index of the first bucket whose upper bound holds `seconds`
    (len(TASK_BUCKETS) for +Inf)."""
    return bisect.bisect_left(TASK_BUCKETS, seconds)


class TaskStats(Protocol):
    def record(self, task: str, state: str, seconds: float) -> None: ...

    def read(self) -> TaskFigures: ...

    def queue_depths(self) -> dict[str, int]: ...


class LocalTaskStats:
    """The figures of this process (the embedded worker's), and the depths of the embedded
    broker's queues read from its folder."""

    def __init__(self, *, queue_folder: Path | None = None, queues: Sequence[str] = ()) -> None:
        self.queue_folder = queue_folder
        self.queues = tuple(queues)
        self._figures = TaskFigures()
        self._lock = threading.Lock()

    def record(self, task: str, state: str, seconds: float) -> None:
        with self._lock:
            self._figures.add(task, state, seconds)

    def read(self) -> TaskFigures:
        with self._lock:
            figures = self._figures
            return TaskFigures(dict(figures.counts), dict(figures.buckets), dict(figures.seconds))

    def queue_depths(self) -> dict[str, int]:
        if self.queue_folder is None:
            return {}
        depths = dict.fromkeys(self.queues, 0)
        # kombu names a message "<ms>_<uuid>.<queue>.msg"; ours are renamed into place
        # whole, so a ".msg.writing" file is not counted before it is a message.
        with os.scandir(self.queue_folder) as entries:
            for entry in entries:
                queue = entry.name.partition(".")[2].removesuffix(".msg")
                if queue in depths and entry.name.endswith(".msg"):
                    depths[queue] += 1
        return depths


class RedisTaskStats:
    """The figures of every worker that records into this Redis, and the broker's queues."""

    def __init__(self, url: str, *, queues: Sequence[str] = (), prefix: str = REDIS_PREFIX) -> None:
        self.url = url
        self.queues = tuple(queues)
        self.prefix = prefix
        self._client: redis.Redis | None = None
        self._client_pid = 0
        self._warned_at = -_WARN_EVERY

    def _redis(self) -> redis.Redis:
        # A prefork child must not share its parent's socket: one client per process.
        if self._client is None or self._client_pid != os.getpid():
            import redis

            self._client = redis.Redis.from_url(
                self.url, socket_timeout=_REDIS_TIMEOUT, socket_connect_timeout=_REDIS_TIMEOUT
            )
            self._client_pid = os.getpid()
        return self._client

    def _key(self, name: str) -> str:
        return self.prefix + name

    def record(self, task: str, state: str, seconds: float) -> None:
        """Never raises: figures are not worth failing or slowing a task for."""
        try:
            pipe = self._redis().pipeline(transaction=False)
            pipe.hincrby(self._key("count"), f"{task}\t{state}", 1)
            pipe.hincrby(self._key("bucket"), f"{task}\t{bucket_of(seconds)}", 1)
            pipe.hincrbyfloat(self._key("seconds"), task, seconds)
            pipe.execute()
        except Exception as exc:
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY:
                self._warned_at = now
                log.warning("task_stats.record_failed task=%s error=%s", task, exc)

    def read(self) -> TaskFigures:
        pipe = self._redis().pipeline(transaction=False)
        for name in ("count", "bucket", "seconds"):
            pipe.hgetall(self._key(name))
        counts, buckets, seconds = pipe.execute()
        figures = TaskFigures()
        for raw, value in counts.items():
            task, _, state = raw.decode().rpartition("\t")
            figures.counts[task, state] = int(value)
        for raw, value in buckets.items():
            task, _, index = raw.decode().rpartition("\t")
            figures.buckets[task, int(index)] = int(value)
        for raw, value in seconds.items():
            figures.seconds[raw.decode()] = float(value)
        return figures

    def queue_depths(self) -> dict[str, int]:
        pipe = self._redis().pipeline(transaction=False)
        for queue in self.queues:
            for step in _PRIORITY_STEPS:
                pipe.llen(queue if step == 0 else f"{queue}{_PRIORITY_SEPARATOR}{step}")
        lengths = pipe.execute()
        steps = len(_PRIORITY_STEPS)
        return {
            queue: sum(lengths[i * steps : (i + 1) * steps]) for i, queue in enumerate(self.queues)
        }


class TaskCollector(Collector):
    """The task and queue figures of `use(stats)` as metric families at scrape time."""

    def __init__(self) -> None:
        self._stats: TaskStats | None = None
        self._lock = threading.Lock()

    def use(self, stats: TaskStats | None) -> None:
        with self._lock:
            self._stats = stats

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families depend on the data; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            stats = self._stats
        if stats is None:
            return iter(())
        up = GaugeMetricFamily(
            "loopgram_celery_stats_up", "1 when the Celery task and queue figures could be read."
        )
        try:
            families = task_families(stats.read(), stats.queue_depths())
        except Exception as exc:
            log.warning("metrics.celery_stats_failed error=%s", type(exc).__name__)
            up.add_metric([], 0)
            return iter([up])
        up.add_metric([], 1)
        return iter([up, *families])


def task_families(figures: TaskFigures, depths: dict[str, int]) -> list[Metric]:
    runs = CounterMetricFamily(
        "loopgram_celery_tasks",
        "Celery tasks run to the end, by task and outcome (success, failure, retry, ...).",
        labels=["task", "state"],
    )
    for (task, state), count in sorted(figures.counts.items()):
        runs.add_metric([task, state], count)
    seconds = HistogramMetricFamily(
        "loopgram_celery_task_seconds",
        "How long Celery tasks ran, whatever their outcome.",
        labels=["task"],
    )
    for task in figures.tasks():
        cumulative, points = 0, []
        for index, bound in enumerate([*TASK_BUCKETS, float("inf")]):
            cumulative += figures.buckets.get((task, index), 0)
            points.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        seconds.add_metric([task], points, figures.seconds.get(task, 0.0))
    waiting = GaugeMetricFamily(
        "loopgram_celery_queue_messages",
        "Messages waiting in each Celery queue (not yet taken by a worker).",
        labels=["queue"],
    )
    for queue, depth in sorted(depths.items()):
        waiting.add_metric([queue], depth)
    return [runs, seconds, waiting]
