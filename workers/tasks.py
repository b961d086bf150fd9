"""Thin tasks: take plain data, open a session, call a function in loopgram."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from sqlalchemy.exc import DBAPIError, OperationalError

from loopgram import adapters, crud
from loopgram.adapter_server import HttpAdapterServer
from loopgram.feedback import Feedback, FeedbackResult, apply_feedback_many
from workers.batching import BatchTask
from workers.context import get_db, get_settings

log = logging.getLogger(__name__)

_DB_ERRORS = (OperationalError, DBAPIError, ConnectionError)


class FeedbackBatch(BatchTask):
    """`loopgram.record_feedback`: one message per rating, applied by the hundred.

    Older producers and anything that sends a single rating use it (the bot's FeedbackSink
    sends `loopgram.record_feedback_many`); the worker buffers them (up to `flush_every`, at
    most `flush_interval` s) and stores a batch in one transaction (`apply_feedback_many`).
    The messages are acknowledged after the commit; a batch that cannot be stored is
    requeued (never lost).
    """

    flush_every = 100
    flush_interval = 0.2
    max_held = 400
    #: seconds to wait between attempts while the database is unreachable, before requeueing
    retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)

    def run_batch(self, payloads: list[Any]) -> dict[str, Any]:
        return record_feedback_batch(payloads, retry_delays=self.retry_delays)


def record_feedback_batch(
    payloads: list[Any], *, retry_delays: tuple[float, ...] = ()
) -> dict[str, Any]:
    """Store many ratings in one transaction; a payload that is not a rating is dropped."""
    feedbacks: list[Feedback] = []
    for payload in payloads:
        try:
            feedbacks.append(Feedback.from_payload(payload))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            log.error("feedback.invalid_payload payload=%r error=%s; dropped", payload, exc)
    db = get_db()
    for delay in (*retry_delays, None):
        try:
            results = db.call(apply_feedback_many, feedbacks=feedbacks)
            break
        except _DB_ERRORS as exc:
            if not _transient(exc):
                results = _one_by_one(feedbacks)
                break
            if delay is None:
                raise
            log.warning("feedback.batch_retry size=%d error=%s", len(feedbacks), exc)
            time.sleep(delay)
    stored = sum(r.stored for r in results)
    log.info(
        "feedback.recorded batch=%d stored=%d pairs=%d flagged=%d",
        len(payloads),
        stored,
        sum(r.pairs for r in results),
        sum(r.flagged for r in results),
    )
    return {"received": len(payloads), "stored": stored, "dropped": len(payloads) - stored}


def _transient(exc: BaseException) -> bool:
    """The database is unreachable or a transaction lost a race: the same batch may succeed."""
    return isinstance(exc, (OperationalError, ConnectionError)) or bool(
        getattr(exc, "connection_invalidated", False)
    )


def _one_by_one(feedbacks: list[Feedback]) -> list[FeedbackResult]:
    """A batch refused for its data: store what can be stored, drop (and log) the rest."""
    db = get_db()
    results: list[FeedbackResult] = []
    for feedback in feedbacks:
        try:
            results += db.call(apply_feedback_many, feedbacks=[feedback])
        except _DB_ERRORS as exc:
            if _transient(exc):
                raise
            log.exception("feedback.refused feedback=%r; dropped", feedback)
            results.append(FeedbackResult(stored=False, note=f"refused: {type(exc).__name__}"))
    return results


@shared_task(base=FeedbackBatch, name="loopgram.record_feedback", acks_late=True, bind=True)
def record_feedback(self: FeedbackBatch, payload: dict[str, Any]) -> dict[str, Any]:
    """One rating, called directly or eagerly; a worker batches these messages instead."""
    return self.run_batch([payload])


class FeedbackBulk(FeedbackBatch):
    """`loopgram.record_feedback_many`: one message carries many ratings (a list of payloads).

    The bot's FeedbackSink publishes the presses of a short window as one message; the
    worker merges the messages that arrive together (up to `flush_every` ratings, at most
    `flush_interval` s) and stores them in one transaction, acknowledging every message after
    the commit, exactly as for single ratings.
    """

    flush_every = 1000  # ratings, not messages
    flush_interval = 0.02  # the bot has already batched: merge only what arrives together
    max_held = 64

    def weigh(self, payload: Any) -> int:
        return len(payload) if isinstance(payload, list) else 1

    def run_batch(self, payloads: list[Any]) -> dict[str, Any]:
        ratings: list[Any] = []
        for payload in payloads:
            if isinstance(payload, list):
                ratings.extend(payload)
            else:  # not a list: one rating (validated, and dropped if it is not one)
                ratings.append(payload)
        return record_feedback_batch(ratings, retry_delays=self.retry_delays)


@shared_task(base=FeedbackBulk, name="loopgram.record_feedback_many", acks_late=True, bind=True)
def record_feedback_many(self: FeedbackBulk, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Many ratings in one message, called directly or eagerly; a worker merges messages."""
    return self.run_batch([payloads])


@shared_task(
    name="loopgram.evaluate_canaries", acks_late=True, autoretry_for=_DB_ERRORS, max_retries=3
)
def evaluate_canaries() -> dict[str, str]:
    """Promote or roll back every canary whose live ratings decide it."""
    settings = get_settings()
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


@shared_task(name="loopgram.maybe_train", acks_late=True, bind=True)
def maybe_train(self: Task[Any, Any]) -> dict[str, list[str]]:
    """Queue a training run for each assistant whose buffer has grown enough, and a
    reward-model run for each with enough new preference pairs from people."""
    settings = get_settings()
    from training.pipeline import due_assistants, reap_interrupted_runs, reward_due_assistants

    # A run killed mid-way stays `running` and would keep its assistant off the schedule.
    reap_interrupted_runs(settings=settings, db=get_db())
    due = get_db().call(due_assistants, min_new_examples=settings.learning.train_min_new_examples)
    for assistant in due:
        # Sent through the app running this task: in a thread without a current app, the
        # shared-task proxy would fall back to Celery's default app and its default broker.
        self.app.send_task("loopgram.train_assistant", args=(assistant,), queue="training")
    # Independent of the policy runs; the per-assistant training lock serialises the two.
    reward_due = get_db().call(
        reward_due_assistants, min_new_pairs=settings.reward.reward_train_min_pairs
    )
    for assistant in reward_due:
        self.app.send_task(
            "loopgram.train_assistant",
            args=(assistant, "reward"),
            kwargs={"only_if_due": True},
            queue="training",
        )
    return {"policy": due, "reward": reward_due}


@shared_task(
    name="loopgram.train_assistant",
    acks_late=False,  # a crashed run is not retried blindly: the next schedule decides again
    time_limit=6 * 3600,
    soft_time_limit=6 * 3600 - 60,
)
def train_assistant(
    assistant: str, method: str | None = None, only_if_due: bool = False
) -> dict[str, object]:
    """One training run (the `training` queue: GPU nodes, concurrency 1). Without `method`
    (the schedule's policy runs), TRAIN_CONFIG's `method` decides, else dpo.

    `only_if_due` (scheduled reward-model runs): checked again when the run starts, since the
    schedule may have queued it twice while a long run held the queue."""
    settings = get_settings()
    from training.config import train_config
    from training.pipeline import reward_due_assistants, run_training

    if only_if_due and method == "reward":
        due = get_db().call(
            reward_due_assistants, min_new_pairs=settings.reward.reward_train_min_pairs
        )
        if assistant not in due:
            log.info("training.not_due assistant=%s method=%s", assistant, method)
            return {"run_id": None, "status": "skipped", "detail": "no longer due"}

    report = run_training(
        settings=settings,
        config=train_config(settings, assistant=assistant, method=method),
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


#: Seconds a scoring pass may take at most (and no longer than the schedule's interval); it
#: starts no new batch after that.
SCORE_PASS_SECONDS = 25 * 60


@shared_task(
    name="loopgram.score_answers",
    # Acked at start: a pass may outlast the broker's visibility timeout, and one that dies is
    # simply redone by the next schedule (scores are stored per batch, idempotently).
    acks_late=False,
    time_limit=SCORE_PASS_SECONDS + 300,
    soft_time_limit=SCORE_PASS_SECONDS + 240,
)
def score_answers(limit: int = 2000) -> list[dict[str, Any]]:
    """Score the sent answers each active reward model has not scored yet (the satisfaction
    estimate's input). On the `training` queue: it loads torch and a model, like training."""
    from training.answer_scores import score_pending

    interval = get_settings().reward.satisfaction_check_seconds
    results = score_pending(get_db(), limit=limit, seconds=min(SCORE_PASS_SECONDS, interval))
    return [result.as_dict() for result in results]
