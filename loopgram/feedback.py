"""Ratings, regenerate choices and review flags: the writes that fill the reward buffer.

Everything here is idempotent: the same feedback applied twice leaves one row, so a task
that is redelivered (acks_late) or replayed from the spool is harmless.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from loopgram import crud
from loopgram.models import (
    Interaction,
    InteractionStatus,
    PairSource,
    PreferencePair,
    Rating,
    ReviewItem,
    ReviewStatus,
    utcnow,
)

log = logging.getLogger(__name__)

REASONS = ("wrong", "unhelpful", "unsafe", "style", "other")
THUMBS_DOWN_REVIEW_REASON = "thumbs_down"


@dataclass(frozen=True)
class Feedback:
    """One rating event. `reason`/`comment` None means "leave as stored"."""

    interaction_id: int
    user_id: int
    value: int
    reason: str | None = None
    comment: str | None = None
    source: str = "button"
    update_id: int | None = None

    def __post_init__(self) -> None:
        if self.value not in (1, -1):
            raise ValueError(f"rating value must be +1 or -1, got {self.value!r}")
        if self.reason is not None and self.reason not in REASONS:
            raise ValueError(f"unknown reason {self.reason!r}")

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Feedback:
        fields: dict[str, Any] = {k: payload[k] for k in cls.__dataclass_fields__ if k in payload}
        return cls(**fields)


@dataclass(frozen=True)
class FeedbackResult:
    stored: bool
    rating_id: int | None = None
    pairs: int = 0
    flagged: bool = False
    note: str = ""


def apply_feedback(*, session: Session, feedback: Feedback) -> FeedbackResult:
    """Store (or replace) a user's rating of an answer and derive what follows from it."""
    interaction = session.get(Interaction, feedback.interaction_id)
    if interaction is None:
        log.warning("feedback.unknown_interaction interaction_id=%s", feedback.interaction_id)
        return FeedbackResult(stored=False, note="unknown interaction")
    if interaction.user_id != feedback.user_id:
        # Only the person who asked rates an answer; the bot checks this too, the worker
        # re-checks because a task payload is just data.
        log.warning(
            "feedback.not_owner interaction_id=%s user_id=%s",
            feedback.interaction_id,
            feedback.user_id,
        )
        return FeedbackResult(stored=False, note="not the owner")

    rating = _upsert_rating(session, feedback)
    flagged = _sync_review_flag(session, interaction, rating)
    pairs = _sync_regenerate_pairs(session, interaction, rating)
    return FeedbackResult(stored=True, rating_id=rating.id, pairs=pairs, flagged=flagged)


def _upsert_rating(session: Session, feedback: Feedback) -> Rating:
    query = select(Rating).where(
        Rating.interaction_id == feedback.interaction_id, Rating.user_id == feedback.user_id
    )
    rating = session.exec(query).first()
    if rating is None:
        rating = Rating(
            interaction_id=feedback.interaction_id,
            user_id=feedback.user_id,
            value=feedback.value,
            source=feedback.source,
        )
        try:
            with session.begin_nested():
                session.add(rating)
                session.flush()
        except IntegrityError:
            # A concurrent worker inserted the same (interaction, user) first.
            rating = session.exec(query).one()
    if rating.value != feedback.value:
        rating.reason = None
        rating.comment = None
    rating.value = feedback.value
    rating.source = feedback.source
    if feedback.reason is not None:
        rating.reason = feedback.reason
    if feedback.comment is not None:
        rating.comment = feedback.comment
    rating.updated_at = utcnow()
    session.add(rating)
    session.flush()
    return rating


def _sync_review_flag(session: Session, interaction: Interaction, rating: Rating) -> bool:
    """👎 flags the answer for human review; changing one's mind to 👍 withdraws the flag."""
    query = select(ReviewItem).where(
        ReviewItem.interaction_id == interaction.id,
        ReviewItem.reason == THUMBS_DOWN_REVIEW_REASON,
    )
    item = session.exec(query).first()
    if rating.value < 0:
        if item is None:
            try:
                with session.begin_nested():
                    session.add(
                        ReviewItem(
                            interaction_id=interaction.id or 0,
                            reason=THUMBS_DOWN_REVIEW_REASON,
                        )
                    )
                    session.flush()
            except IntegrityError:
                pass
        elif item.status == ReviewStatus.withdrawn:
            item.status = ReviewStatus.pending
            session.add(item)
        return True
    if item is not None and item.status == ReviewStatus.pending:
        item.status = ReviewStatus.withdrawn
        item.note = "user changed the rating to +1"
        session.add(item)
    return False


def _sync_regenerate_pairs(session: Session, interaction: Interaction, rating: Rating) -> int:
    """A rating on one of several answers to the same prompt orders it against the others."""
    group = [
        s
        for s in crud.siblings(session=session, interaction=interaction)
        if s.status == InteractionStatus.ok
    ]
    if len(group) < 2:
        return 0
    ids = [s.id for s in group if s.id is not None]
    their_ratings = {
        r.interaction_id: r.value
        for r in session.exec(
            select(Rating).where(
                col(Rating.interaction_id).in_(ids), Rating.user_id == rating.user_id
            )
        ).all()
    }
    written = 0
    for other in group:
        if other.id == interaction.id:
            continue
        other_value = their_ratings.get(other.id or 0)
        key = _pair_key(interaction.id or 0, other.id or 0)
        existing = session.exec(
            select(PreferencePair).where(PreferencePair.pair_key == key)
        ).first()
        if other_value == rating.value:
            # Same verdict on both: no preference between them any more.
            if existing is not None and existing.consumed_by_run is None:
                session.delete(existing)
            continue
        chosen, rejected = (interaction, other) if rating.value > 0 else (other, interaction)
        pair = existing or PreferencePair(
            pair_key=key,
            assistant=interaction.assistant,
            prompt=interaction.prompt,
            chosen="",
            rejected="",
            source=PairSource.regenerate,
            user_id=rating.user_id,
        )
        if existing is not None and existing.consumed_by_run is not None:
            continue  # already trained on; history is not rewritten
        pair.chosen, pair.rejected = chosen.answer, rejected.answer
        pair.chosen_interaction_id, pair.rejected_interaction_id = chosen.id, rejected.id
        session.add(pair)
        written += 1
    session.flush()
    return written


def _pair_key(a: int, b: int) -> str:
    low, high = sorted((a, b))
    return f"{PairSource.regenerate.value}:{low}:{high}"


def reward_buffer_size(*, session: Session, assistant: str | None = None) -> dict[str, int]:
    """Unconsumed preference pairs and rated answers: what the next training run would see."""
    pairs = (
        select(func.count())
        .select_from(PreferencePair)
        .where(col(PreferencePair.consumed_by_run).is_(None))
    )
    ratings = (
        select(func.count())
        .select_from(Rating)
        .join(Interaction, col(Interaction.id) == col(Rating.interaction_id))
    )
    if assistant is not None:
        pairs = pairs.where(PreferencePair.assistant == assistant)
        ratings = ratings.where(Interaction.assistant == assistant)
    return {"pairs": session.exec(pairs).one(), "ratings": session.exec(ratings).one()}
