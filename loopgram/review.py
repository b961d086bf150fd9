"""The human review queue: answers flagged for moderators (👎, moderation, low confidence).

The review issue adds claiming, decisions and corrections; this module is where items
enter the queue, once per (answer, reason).
"""

from __future__ import annotations

import logging

from sqlmodel import Session, select

from loopgram.models import ReviewItem, ReviewStatus

log = logging.getLogger(__name__)

LOW_CONFIDENCE = "low_confidence"
MODERATION = "moderation"


def flag(
    *, session: Session, interaction_id: int, reason: str, note: str | None = None
) -> ReviewItem:
    """Put an answer in the queue for `reason` (idempotent: one item per answer and reason)."""
    existing = session.exec(
        select(ReviewItem).where(
            ReviewItem.interaction_id == interaction_id, ReviewItem.reason == reason
        )
    ).first()
    if existing is not None:
        return existing
    item = ReviewItem(
        interaction_id=interaction_id,
        reason=reason,
        status=ReviewStatus.pending,
        note=note[:512] if note else None,
    )
    session.add(item)
    session.flush()
    log.info("review.flagged interaction_id=%s reason=%s", interaction_id, reason)
    return item


def pending_count(*, session: Session) -> int:
    return len(
        session.exec(select(ReviewItem.id).where(ReviewItem.status == ReviewStatus.pending)).all()
    )
