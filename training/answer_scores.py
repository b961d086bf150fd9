"""The scoring pass of the satisfaction estimate: each assistant's active reward model scores
the sent answers it has not scored yet (newest first, at most `limit` per assistant and pass),
and the scores are stored as `answer_score` rows (`loopgram.satisfaction` reads them).

Scores are stored batch by batch, so a pass that is stopped keeps what it did and the next
one goes on where it left off. A reward model that cannot be loaded (folder missing, files
broken) is logged and its assistant skipped; the other assistants are scored all the same.
An answer the model cannot score is logged and left for the next pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from loopgram import satisfaction
from loopgram.db import Database

log = logging.getLogger(__name__)

PASS_LIMIT = 2000  # answers per assistant and pass
BATCH = 64  # answers fetched, scored and committed together

Message = dict[str, str]


class ItemScorer(Protocol):
    def score(self, name: str, items: Sequence[tuple[Sequence[Message], str]]) -> list[float]: ...


class LoadedRewardModel(Protocol):
    """What `training.reward.load_active` returns (`ActiveRewardModel`)."""

    @property
    def name(self) -> str: ...

    @property
    def scorer(self) -> ItemScorer: ...


Loader = Callable[[Database, str], LoadedRewardModel | None]


@dataclass
class PassResult:
    assistant: str
    reward_model: str
    scored: int = 0  # rows stored by this pass
    failed: int = 0  # answers the model could not score (left for the next pass)
    error: str | None = None  # the reward model could not be used at all

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load_active(db: Database, assistant: str) -> LoadedRewardModel | None:
    from training.reward import load_active

    return load_active(db, assistant)


def score_pending(
    db: Database,
    *,
    limit: int = PASS_LIMIT,
    batch: int = BATCH,
    assistants: Sequence[str] | None = None,
    load: Loader = _load_active,
    seconds: float | None = None,
) -> list[PassResult]:
    """One pass over every assistant with an active reward model (or only `assistants`).

    `seconds` bounds the pass: no new batch starts after it (a Celery time limit then never
    cuts a batch that has been scored but not stored)."""
    deadline = None if seconds is None else time.monotonic() + seconds
    models = db.call(satisfaction.active_reward_models)
    results = []
    for assistant, name in sorted(models.items()):
        if assistants is not None and assistant not in assistants:
            continue
        result = PassResult(assistant, name)
        results.append(result)
        try:
            model = load(db, assistant)
        except Exception as exc:  # a missing or broken folder must not stop the others
            log.exception("satisfaction.load_failed assistant=%s reward_model=%s", assistant, name)
            result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        if model is None:  # retired between the two reads
            result.error = "no active reward model"
            continue
        result.reward_model = model.name
        _score_assistant(db, assistant, model, result, limit=limit, batch=batch, deadline=deadline)
        log.info(
            "satisfaction.scored assistant=%s reward_model=%s scored=%d failed=%d",
            assistant,
            result.reward_model,
            result.scored,
            result.failed,
        )
    return results


def _score_assistant(
    db: Database,
    assistant: str,
    model: LoadedRewardModel,
    result: PassResult,
    *,
    limit: int,
    batch: int,
    deadline: float | None,
) -> None:
    before: int | None = None
    seen = 0
    while seen < limit:
        if deadline is not None and time.monotonic() > deadline:
            log.info("satisfaction.pass_out_of_time assistant=%s seen=%d", assistant, seen)
            return
        rows = db.call(
            satisfaction.unscored_answers,
            assistant=assistant,
            reward_model=model.name,
            limit=min(batch, limit - seen),
            before_id=before,
        )
        if not rows:
            return
        seen += len(rows)
        before = rows[-1].interaction_id
        scores = _score_rows(model, rows)
        result.failed += len(rows) - len(scores)
        if not scores:  # not one answer of a batch: the model, not the answers, is broken
            result.error = f"the reward model scored none of {len(rows)} answers"
            return
        result.scored += db.call(satisfaction.store_scores, reward_model=model.name, scores=scores)


def _score_rows(
    model: LoadedRewardModel, rows: Sequence[satisfaction.AnswerToScore]
) -> dict[int, float]:
    """Scores by interaction id; a batch that fails is retried one answer at a time, so one
    answer the model chokes on costs only itself."""
    items: list[tuple[Sequence[Message], str]] = [(r.prompt, r.answer) for r in rows]
    try:
        values = model.scorer.score(model.name, items)
        return {r.interaction_id: v for r, v in zip(rows, values, strict=True)}
    except Exception:
        log.warning("satisfaction.batch_failed reward_model=%s size=%d", model.name, len(rows))
    scores = {}
    for row, item in zip(rows, items, strict=True):
        try:
            scores[row.interaction_id] = model.scorer.score(model.name, [item])[0]
        except Exception:
            log.exception(
                "satisfaction.score_failed reward_model=%s interaction_id=%s",
                model.name,
                row.interaction_id,
            )
    return scores
