"""The satisfaction estimate: the 👍 rate predicted on every sent answer, rated or not.

Each assistant's active reward model scores the sent answers (`training/answer_scores.py`
writes `answer_score` rows; this module only reads and stores them). A reward score is on an
arbitrary scale of its own, so it is turned into a probability by Platt scaling,
P(👍 | score) = sigmoid(a·score + b), fitted on the answers people rated (1-D logistic
regression by Newton's method with a weak L2 prior, so that a few dozen ratings, or ratings
the score separates perfectly, still give a finite, sane fit). The predicted 👍 rate of an
adapter is the mean predicted probability over all of its scored answers; the observed rate
on its rated ones is reported beside it.

How good the calibration is (Brier score, expected calibration error, the reliability bins)
is measured out of sample: K-fold cross-validation grouped by answer, so no figure is judged
by a fit that saw it. Caveat: the reward model itself was trained on pairs built from some of
these ratings, so its ranking of the older rated answers may look better than it is on new
ones; the cross-validation keeps only the Platt step honest.

Plain functions of a session (SQLite and Postgres alike) and numpy; no torch, no Telegram.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from loopgram.models import (
    Adapter,
    AdapterKind,
    AdapterStatus,
    AnswerScore,
    Interaction,
    InteractionStatus,
    Rating,
    utcnow,
)
from loopgram.review_stats import BASE, MODERATOR_SOURCE, as_utc

log = logging.getLogger(__name__)

Floats = npt.NDArray[np.float64]

MIN_RATED = 20  # ratings (both 👍 and 👎 among them) before a calibrated figure is given
PRIOR = 1.0  # L2 strength on the standardized slope (a N(0, 1) prior)
INTERCEPT_PRIOR = 1e-3  # next to none: shrinking the intercept would bias the predicted rate
BINS = 10  # reliability-diagram bins over [0, 1]
FOLDS = 5  # cross-validation folds for the out-of-sample quality figures


# --------------------------------------------------------------------------- the math


def sigmoid(x: Floats) -> Floats:
    """1 / (1 + e^-x) without overflow for large |x|."""
    out: Floats = np.exp(-np.logaddexp(0.0, -x))
    return out


@dataclass(frozen=True)
class PlattFit:
    """P(👍 | score) = sigmoid(a * score + b)."""

    a: float
    b: float

    def predict(self, scores: Sequence[float] | Floats) -> Floats:
        return sigmoid(self.a * np.asarray(scores, dtype=np.float64) + self.b)


def fit_platt(
    scores: Sequence[float] | Floats, labels: Sequence[int] | Floats, *, prior: float = PRIOR
) -> PlattFit:
    """Logistic regression of the labels (1 = 👍, 0 = 👎) on the scores, by Newton's method.

    The scores are standardized first and the prior (L2, strength `prior`) acts on the
    standardized slope, so it means the same on every reward model's scale and keeps the
    slope finite when the scores separate 👍 from 👎 perfectly. The intercept gets only a
    token prior: pulling it towards 50 % would bias the predicted rate itself. The objective
    is strictly convex, so Newton converges; a backtracking step keeps every iteration a
    descent step."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.size == 0 or x.shape != y.shape:
        raise ValueError("fit_platt needs as many labels as scores, at least one")
    if not np.all(np.isfinite(x)):
        raise ValueError("fit_platt: scores must be finite")
    mean = float(x.mean())
    std = float(x.std())
    if std < 1e-12:  # every score equal: only the base rate can be learned
        std = 1.0
    design = np.column_stack([(x - mean) / std, np.ones_like(x)])
    weights = np.zeros(2)
    strength = np.array([prior, INTERCEPT_PRIOR])

    def objective(w: Floats) -> float:
        margin = design @ w
        penalty = 0.5 * float(strength @ (w * w))
        return float(np.sum(np.logaddexp(0.0, margin) - y * margin)) + penalty

    current = objective(weights)
    for _ in range(100):
        p = sigmoid(design @ weights)
        gradient = design.T @ (p - y) + strength * weights
        hessian = (design * (p * (1.0 - p))[:, None]).T @ design + np.diag(strength)
        step = np.linalg.solve(hessian + 1e-12 * np.eye(2), gradient)
        size = 1.0
        while size > 1e-10:
            candidate = weights - size * step
            value = objective(candidate)
            if value <= current + 1e-12:
                break
            size /= 2
        weights, moved, current = candidate, float(np.max(np.abs(size * step))), value
        if moved < 1e-10:
            break
    slope, intercept = float(weights[0]), float(weights[1])
    return PlattFit(a=slope / std, b=intercept - slope * mean / std)


def brier_score(predicted: Floats, labels: Floats) -> float:
    """Mean squared difference between the predicted probability and the 0/1 outcome."""
    return float(np.mean((np.asarray(predicted) - np.asarray(labels)) ** 2))


@dataclass(frozen=True)
class CalibrationBin:
    """Predictions in [bin_low, bin_high) (the last bin includes 1.0): their mean, the share of
    👍 among them, and how many there were (None for an empty bin)."""

    bin_low: float
    bin_high: float
    predicted: float | None
    observed: float | None
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "bin_low": round(self.bin_low, 4),
            "bin_high": round(self.bin_high, 4),
            "predicted": _round(self.predicted),
            "observed": _round(self.observed),
            "count": self.count,
        }


def calibration_bins(
    predicted: Floats, labels: Floats, *, bins: int = BINS
) -> list[CalibrationBin]:
    p = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    index = np.minimum((p * bins).astype(int), bins - 1)
    result = []
    for i in range(bins):
        inside = index == i
        n = int(inside.sum())
        result.append(
            CalibrationBin(
                bin_low=i / bins,
                bin_high=(i + 1) / bins,
                predicted=float(p[inside].mean()) if n else None,
                observed=float(y[inside].mean()) if n else None,
                count=n,
            )
        )
    return result


def expected_calibration_error(predicted: Floats, labels: Floats, *, bins: int = BINS) -> float:
    """Σ over equal-width bins of (share of predictions in the bin) × |mean predicted −
    observed share|: 0 for perfectly calibrated predictions."""
    total = len(np.asarray(predicted))
    if total == 0:
        return 0.0
    return sum(
        b.count / total * abs((b.predicted or 0.0) - (b.observed or 0.0))
        for b in calibration_bins(predicted, labels, bins=bins)
        if b.count
    )


def out_of_fold(
    scores: Floats, labels: Floats, groups: Sequence[int], *, folds: int = FOLDS
) -> Floats:
    """Each observation's probability from a fit that did not see its group (its answer):
    groups are dealt into `folds` folds in a fixed shuffled order."""
    unique = sorted(set(groups))
    k = max(2, min(folds, len(unique)))
    order = np.random.default_rng(0).permutation(len(unique))
    fold_of = {unique[i]: rank % k for rank, i in enumerate(order)}
    assignment = np.array([fold_of[g] for g in groups])
    predicted = np.empty(len(scores), dtype=np.float64)
    for fold in range(k):
        held = assignment == fold
        if not held.any():
            continue
        train = ~held
        if not train.any():  # one group only: nothing to learn from but the prior
            predicted[held] = 0.5
            continue
        predicted[held] = fit_platt(scores[train], labels[train]).predict(scores[held])
    return predicted


# --------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class AdapterEstimate:
    adapter: str  # the served adapter's name, or "base"
    predicted: float | None  # mean P(👍) over its scored answers; None until calibrated
    answers: int  # scored answers
    observed: float | None  # 👍 share of its rated scored answers; None without ratings
    rated: int  # ratings of its scored answers (one per person and answer)
    newest: int = 0  # the id of its newest scored answer: recent adapters first in /stats

    def as_dict(self) -> dict[str, Any]:
        return {
            "predicted": _round(self.predicted),
            "answers": self.answers,
            "observed": _round(self.observed),
            "rated": self.rated,
        }


@dataclass(frozen=True)
class Estimate:
    assistant: str
    reward_model: str
    adapters: dict[str, AdapterEstimate]
    rated: int  # ratings of scored answers, all adapters
    thumbs_up: int
    fit: PlattFit | None = None  # None: not enough ratings to calibrate
    brier: float | None = None  # out of sample
    ece: float | None = None  # out of sample
    calibration: list[CalibrationBin] = field(default_factory=list)
    note: str | None = None

    @property
    def calibrated(self) -> bool:
        return self.fit is not None

    @property
    def answers(self) -> int:
        return sum(a.answers for a in self.adapters.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "reward_model": self.reward_model,
            "adapters": {name: a.as_dict() for name, a in sorted(self.adapters.items())},
            "brier": _round(self.brier),
            "ece": _round(self.ece),
            "calibration": [b.as_dict() for b in self.calibration],
            "calibrated": self.calibrated,
            "answers": self.answers,
            "rated": self.rated,
            "platt": {"a": self.fit.a, "b": self.fit.b} if self.fit else None,
            "note": self.note,
        }


class Observation(NamedTuple):
    """One scored answer and the ratings people gave it (+1/-1, one per person). A tuple:
    there is one per scored answer, so building them must be cheap."""

    interaction_id: int
    adapter: str
    score: float
    ratings: tuple[int, ...] = ()


def enough_ratings(rated: int, thumbs_up: int, *, min_rated: int = MIN_RATED) -> bool:
    """A fit needs `min_rated` ratings with both 👍 and 👎 among them."""
    return rated >= min_rated and 0 < thumbs_up < rated


def estimate(
    assistant: str,
    reward_model: str,
    observations: Iterable[Observation],
    *,
    min_rated: int = MIN_RATED,
    bins: int = BINS,
) -> Estimate:
    """The estimate from scored answers: Platt fit on the rated ones, predicted rate over all."""
    answers = list(observations)
    scores = np.array([o.score for o in answers], dtype=np.float64)
    rated_scores = np.array([o.score for o in answers for _ in o.ratings], dtype=np.float64)
    labels = np.array([1.0 if v > 0 else 0.0 for o in answers for v in o.ratings])
    groups = [o.interaction_id for o in answers for _ in o.ratings]
    rated, ups = len(labels), int(labels.sum())
    enough = enough_ratings(rated, ups, min_rated=min_rated)
    fit = fit_platt(rated_scores, labels) if enough else None
    probabilities = fit.predict(scores) if fit is not None else None

    per_adapter: dict[str, list[int]] = {}
    for i, o in enumerate(answers):
        per_adapter.setdefault(o.adapter, []).append(i)
    adapters = {}
    for name, indices in per_adapter.items():
        votes = [v for i in indices for v in answers[i].ratings]
        adapters[name] = AdapterEstimate(
            adapter=name,
            predicted=float(probabilities[indices].mean()) if probabilities is not None else None,
            answers=len(indices),
            observed=sum(v > 0 for v in votes) / len(votes) if votes else None,
            rated=len(votes),
            newest=max(answers[i].interaction_id for i in indices),
        )
    if fit is None:
        note = (
            f"not enough ratings to calibrate: {rated} rated ({ups} 👍), "
            f"needs {min_rated} with both 👍 and 👎"
        )
        return Estimate(assistant, reward_model, adapters, rated, ups, note=note)
    held_out = out_of_fold(rated_scores, labels, groups)
    return Estimate(
        assistant,
        reward_model,
        adapters,
        rated,
        ups,
        fit=fit,
        brier=brier_score(held_out, labels),
        ece=expected_calibration_error(held_out, labels, bins=bins),
        calibration=calibration_bins(held_out, labels, bins=bins),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# --------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class AnswerToScore:
    interaction_id: int
    prompt: list[dict[str, str]]  # the messages the model was sent
    answer: str


def active_reward_models(*, session: Session) -> dict[str, str]:
    """assistant -> the name of its active reward model (the newest version if, by a race,
    two are active)."""
    rows = session.exec(
        select(Adapter.assistant, Adapter.name)
        .where(Adapter.kind == AdapterKind.reward, Adapter.status == AdapterStatus.active)
        .order_by(col(Adapter.version))
    ).all()
    return {str(assistant): str(name) for assistant, name in rows}


def prompt_of(messages: Any, prompt: str) -> list[dict[str, str]]:
    """The stored prompt messages, keeping only well-formed ones; the bare question as a user
    message when none are stored (rows written before prompts were kept) or none is usable."""
    kept = []
    if isinstance(messages, list):
        for message in messages:
            if (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                kept.append({"role": message["role"], "content": message["content"]})
    return kept or [{"role": "user", "content": prompt}]


def unscored_answers(
    *,
    session: Session,
    assistant: str,
    reward_model: str,
    limit: int,
    before_id: int | None = None,
) -> list[AnswerToScore]:
    """Sent answers of `assistant` (status ok, non-empty) that `reward_model` has not scored,
    newest first; `before_id` continues a pass below the last id it saw (so an answer that
    could not be scored is not fetched again in the same pass)."""
    scored = select(AnswerScore.interaction_id).where(
        AnswerScore.reward_model == reward_model,
        col(AnswerScore.interaction_id) == col(Interaction.id),
    )
    query = select(
        col(Interaction.id), Interaction.prompt_messages, Interaction.prompt, Interaction.answer
    ).where(
        Interaction.assistant == assistant,
        Interaction.status == InteractionStatus.ok,
        Interaction.answer != "",
        ~scored.exists(),
    )
    if before_id is not None:
        query = query.where(col(Interaction.id) < before_id)
    rows = session.exec(query.order_by(col(Interaction.id).desc()).limit(limit)).all()
    return [
        AnswerToScore(interaction_id=iid, prompt=prompt_of(messages, prompt), answer=answer)
        for iid, messages, prompt, answer in rows
        if iid is not None
    ]


def store_scores(*, session: Session, reward_model: str, scores: Mapping[int, float]) -> int:
    """Insert the scores that are not stored yet (a concurrent pass may have stored some: its
    rows stand); non-finite scores are dropped. Returns how many rows were inserted."""
    now = utcnow()
    rows = [
        {
            "interaction_id": iid,
            "reward_model": reward_model,
            "score": float(score),
            "created_at": now,
        }
        for iid, score in scores.items()
        if math.isfinite(score)
    ]
    if len(rows) < len(scores):
        log.warning(
            "satisfaction.non_finite_scores reward_model=%s dropped=%d",
            reward_model,
            len(scores) - len(rows),
        )
    if not rows:
        return 0
    table: Any = AnswerScore.__table__  # type: ignore[attr-defined]
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table).on_conflict_do_nothing(
            constraint="uq_answer_score_model"
        )
    else:  # SQLite, the only other supported database
        statement = sqlite.insert(table).on_conflict_do_nothing(
            index_elements=["interaction_id", "reward_model"]
        )
    inserted = 0
    for start in range(0, len(rows), 300):
        chunk = statement.values(rows[start : start + 300]).returning(table.c.id)
        inserted += len(session.connection().execute(chunk).all())
    return inserted


def observations(*, session: Session, assistant: str, reward_model: str) -> list[Observation]:
    """Every answer of `assistant` scored by `reward_model`, with people's ratings of it:
    moderators' decisions left out, one rating per person (their latest press)."""
    scored = session.exec(
        select(AnswerScore.interaction_id, AnswerScore.score, Interaction.adapter)
        .join(Interaction, col(Interaction.id) == col(AnswerScore.interaction_id))
        .where(AnswerScore.reward_model == reward_model, Interaction.assistant == assistant)
        .order_by(col(AnswerScore.interaction_id))
    ).all()
    ratings = session.execute(
        sa_select(
            col(Rating.interaction_id),
            col(Rating.user_id),
            col(Rating.value),
            col(Rating.updated_at),
            col(Rating.id),
        )
        .join(AnswerScore, col(AnswerScore.interaction_id) == col(Rating.interaction_id))
        .join(Interaction, col(Interaction.id) == col(Rating.interaction_id))
        .where(
            col(AnswerScore.reward_model) == reward_model,
            col(Interaction.assistant) == assistant,
            col(Rating.source) != MODERATOR_SOURCE,
        )
    ).all()
    # (interaction, user) is unique in `rating` today; keep the latest anyway, so that a
    # re-press stored as a row of its own would still count once.
    latest: dict[tuple[int, int], tuple[datetime, int, int]] = {}
    for iid, uid, value, updated, rid in ratings:
        key, seen = (int(iid), int(uid)), (as_utc(updated), int(rid or 0), int(value))
        if key not in latest or seen[:2] > latest[key][:2]:
            latest[key] = seen
    votes: dict[int, list[int]] = {}
    for (iid, _), (_, _, value) in sorted(latest.items()):
        votes.setdefault(iid, []).append(value)
    return [
        Observation(int(iid), adapter or BASE, float(score), tuple(votes.get(int(iid), ())))
        for iid, score, adapter in scored
    ]


def estimate_for(*, session: Session, assistant: str, reward_model: str) -> Estimate:
    return estimate(
        assistant,
        reward_model,
        observations(session=session, assistant=assistant, reward_model=reward_model),
    )


def estimate_all(*, session: Session, assistant: str | None = None) -> dict[str, Estimate]:
    """The estimate of every assistant that has an active reward model (or only
    `assistant`'s); an assistant without one is absent."""
    models = active_reward_models(session=session)
    return {
        name: estimate_for(session=session, assistant=name, reward_model=model)
        for name, model in sorted(models.items())
        if assistant is None or name == assistant
    }
