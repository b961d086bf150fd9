"""The Celery application: Redis in production, a file-system broker for the embedded default.

Queues are split by kind (`feedback`, `rag`, `training`) so each scales on its own workers.
"""

from __future__ import annotations

import gc
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready
from kombu import Exchange, Queue

from loopgram.settings import Settings
from loopgram.task_stats import LocalTaskStats, RedisTaskStats, TaskStats
from workers import context
from workers.task_figures import attach

QUEUES = ("feedback", "rag", "training")
VISIBILITY_TIMEOUT = 600  # seconds (Redis broker; see broker_options)


def broker_options(settings: Settings) -> dict[str, Any]:
    if settings.redis.redis_url:
        return {
            "broker_url": settings.redis.redis_url,
            # kombu's, without the loss of a message Redis dies on between BRPOP and its
            # unacked record (workers/redis_transport.py).
            "broker_transport": "workers.redis_transport:Transport",
            # A dead worker's unacked messages come back after this long: longer than any
            # acks_late task may run (task_time_limit 120 s; training is acked at start), short
            # enough that a killed worker's ratings are stored minutes, not an hour, later.
            "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
        }
    # Embedded default: messages are files under data/broker, so a press survives a restart.
    folder = Path(settings.app.data_dir) / "broker"
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport": "workers.fs_transport:Transport",
        "broker_transport_options": {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # kombu's default is ./control in the working directory; keep it with the rest.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        },
        "worker_enable_remote_control": False,
    }


def task_stats_for(settings: Settings) -> TaskStats:
    """Where this deployment's workers record their tasks (see loopgram.task_stats)."""
    if settings.redis.redis_url:
        return RedisTaskStats(settings.redis.redis_url, queues=QUEUES)
    return LocalTaskStats(
        queue_folder=Path(settings.app.data_dir) / "broker" / "queue", queues=QUEUES
    )


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.load()
    app = Celery("loopgram", include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        task_time_limit=120,
        task_soft_time_limit=100,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_default_queue="feedback",
        # Each queue gets its own exchange and routing key. Bare Queue(name) objects would all
        # be bound to the default exchange under one key, and every task would then be
        # delivered to every queue (a training run executed by the bot's feedback worker).
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        task_default_exchange="feedback",
        task_default_routing_key="feedback",
        task_routes={
            "loopgram.record_feedback": {"queue": "feedback"},
            "loopgram.record_feedback_many": {"queue": "feedback"},
            "loopgram.prune_processed_updates": {"queue": "feedback"},
            "loopgram.evaluate_canaries": {"queue": "feedback"},
            "loopgram.maybe_train": {"queue": "feedback"},
            "loopgram.train_assistant": {"queue": "training"},
            # Torch and a reward model: where training runs, never in the bot's worker.
            "loopgram.score_answers": {"queue": "training"},
        },
        beat_schedule={
            "maybe-train": {
                "task": "loopgram.maybe_train",
                "schedule": timedelta(seconds=settings.learning.train_check_seconds),
            },
            "evaluate-canaries": {
                "task": "loopgram.evaluate_canaries",
                "schedule": timedelta(seconds=settings.learning.canary_check_seconds),
            },
            "score-answers": {
                "task": "loopgram.score_answers",
                "schedule": timedelta(seconds=settings.reward.satisfaction_check_seconds),
                # Dropped unstarted when no training worker took it before the next one.
                "options": {"expires": settings.reward.satisfaction_check_seconds},
            },
            "prune-processed-updates": {
                "task": "loopgram.prune_processed_updates",
                "schedule": timedelta(hours=1),
            },
        },
        timezone="UTC",
        **broker_options(settings),
    )
    attach(app, task_stats_for(settings))
    return app


@worker_process_init.connect
def _fresh_engine_after_fork(**_: Any) -> None:
    # A pooled connection must never be shared between forked worker processes.
    context.reset_after_fork()


@worker_process_init.connect
@worker_ready.connect
def _freeze_startup_heap(**_: Any) -> None:
    # The hundreds of thousands of objects made by imports live as long as the process: out
    # of the collector's sight, a full collection no longer walks them (~0.1-0.3 s of CPU
    # each time, and in a forked pool process a copy of every page it touches).
    gc.freeze()


celery_app = create_celery()
