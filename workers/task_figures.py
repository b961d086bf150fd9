"""Which task figures (`loopgram.task_stats`) each Celery app records into, and the signals
that record a task when it ends.

Celery's tracer sends `task_prerun` / `task_postrun` around every ordinary task, in the
process that runs it. Batched tasks (`workers.batching`) bypass the tracer: `run_in_pool`
records each batch as one run of its task.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun

from loopgram.task_stats import TaskStats

_TASK_STATS: weakref.WeakKeyDictionary[Celery, TaskStats] = weakref.WeakKeyDictionary()
_STARTED: dict[str, float] = {}  # task id → monotonic start, in the process running it


def attach(app: Celery, stats: TaskStats) -> None:
    _TASK_STATS[app] = stats


def task_stats_of(app: Celery) -> TaskStats | None:
    """The figures `app`'s workers record into (None for an app not made by create_celery)."""
    return _TASK_STATS.get(app)


def record(task: Any, state: str, seconds: float) -> None:
    """One run of `task` (a Celery task bound to its app) ended in `state`."""
    stats = task_stats_of(task.app)
    if stats is not None:
        stats.record(task.name, state.lower(), seconds)


@task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _STARTED[task_id] = time.monotonic()


@task_postrun.connect
def _task_ended(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    started = _STARTED.pop(task_id, None) if task_id else None
    if started is not None and task is not None:
        record(task, state or "unknown", time.monotonic() - started)
