"""Thin tasks: take plain data, open a session, call a function in loopgram."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from sqlalchemy.exc import DBAPIError, OperationalError

from loopgram import adapters, crud
from loopgram.adapter_server import HttpAdapterServer
from loopgram.feedback import Feedback, apply_feedback
from loopgram.settings import Settings
from workers.context import get_db

log = logging.getLogger(__name__)

_DB_ERRORS = (OperationalError, DBAPIError, ConnectionError)


@shared_task(
    name="loopgram.record_feedback",
    acks_late=True,
    autoretry_for=_DB_ERRORS,
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=30,
)
def record_feedback(payload: dict[str, Any]) -> dict[str, Any]:
    """Store a rating (idempotent: an (interaction, user) pair has one rating)."""
    feedback = Feedback.from_payload(payload)
    result = get_db().call(apply_feedback, feedback=feedback)
    log.info(
        "feedback.recorded interaction_id=%s user_id=%s value=%s stored=%s pairs=%s",
        feedback.interaction_id,
        feedback.user_id,
        feedback.value,
        result.stored,
        result.pairs,
    )
    return {"stored": result.stored, "pairs": result.pairs, "note": result.note}


@shared_task(
    name="loopgram.evaluate_canaries", acks_late=True, autoretry_for=_DB_ERRORS, max_retries=3
)
def evaluate_canaries() -> dict[str, str]:
    """Promote or roll back every canary whose live ratings decide it."""
    settings = Settings.load()
    server = HttpAdapterServer.from_settings(settings)
    decisions: dict[str, str] = {}
    db = get_db()
    with db.session() as session:
        canaries = [
            a.assistant for a in adapters.list_adapters(session=session) if a.status == "canary"
        ]
    for assistant in canaries:
        verdict = db.call(
            adapters.evaluate_canary, assistant=assistant, settings=settings.learning, server=server
        )
        if verdict is not None:
            decisions[assistant] = str(verdict.decision)
    return decisions


@shared_task(name="loopgram.maybe_train", acks_late=True)
def maybe_train() -> list[str]:
    """Queue a training run for each assistant whose buffer has grown enough."""
    settings = Settings.load()
    from training.pipeline import due_assistants

    due = get_db().call(due_assistants, min_new_examples=settings.learning.train_min_new_examples)
    for assistant in due:
        train_assistant.apply_async(args=(assistant,), queue="training")
    return due


@shared_task(
    name="loopgram.train_assistant",
    acks_late=False,  # a crashed run is not retried blindly: the next schedule decides again
    time_limit=6 * 3600,
    soft_time_limit=6 * 3600 - 60,
)
def train_assistant(assistant: str, method: str = "dpo") -> dict[str, object]:
    """One training run (the `training` queue: GPU nodes, concurrency 1)."""
    settings = Settings.load()
    from training.config import TrainConfig
    from training.pipeline import run_training

    report = run_training(
        settings=settings,
        config=TrainConfig(assistant=assistant, method=method),
        db=get_db(),
        server=HttpAdapterServer.from_settings(settings),
    )
    if report.run_id is not None:
        from workers.notify import send_run_report

        try:
            send_run_report(settings, get_db(), report.run_id)
        except Exception:  # the run is recorded either way; a report is a courtesy
            log.exception("report.failed run_id=%s", report.run_id)
    return report.as_dict()


@shared_task(name="loopgram.prune_processed_updates", acks_late=True)
def prune_processed_updates(hours: int = 48) -> int:
    return get_db().call(crud.prune_processed_updates, older_than=timedelta(hours=hours))
