"""The human review queue: flagged answers, claimed by one moderator at a time, decided.

Items enter the queue once per (answer, reason): a user's 👎, a harmful or unsure group
moderation verdict, a label the model is unsure of, a user's /report. A moderator claims an
item (the claim lapses after `review_claim_seconds`), then approves, rejects or corrects it.
A share of items (`review_overlap`) needs two moderators; when they disagree a third
decides. The final decision becomes training data:
- a correction: a gold preference pair (correction > original) with the highest weight, and
  for labels a confirmed example;
- an approval: a 👍 from the moderator (and a confirmed label);
- a rejection: a 👎 from the moderator — a negative example.
Every decision is recorded (`review_decision`) and audited; the same decision delivered
twice is applied once; two moderators pressing at once cannot both decide an item.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from loopgram import crud, labeling
from loopgram.assistants.label import LabelResult
from loopgram.assistants.moderate import ModerationAction, ModerationLabel, Verdict
from loopgram.assistants.structured import InvalidOutput, parse_structured
from loopgram.errors import LoopgramError
from loopgram.models import (
    Chunk,
    Document,
    Interaction,
    InteractionStatus,
    PairSource,
    PreferencePair,
    Rating,
    ReviewDecision,
    ReviewItem,
    ReviewStatus,
    utcnow,
)

log = logging.getLogger(__name__)

LOW_CONFIDENCE = "low_confidence"
MODERATION = "moderation"
REPORT = "report"
MAX_REVIEWS = 3  # overlap items: a third moderator breaks a tie


class Decision(StrEnum):
    approve = "approve"
    reject = "reject"
    correct = "correct"


STATUS_OF = {
    Decision.approve: ReviewStatus.approved,
    Decision.reject: ReviewStatus.rejected,
    Decision.correct: ReviewStatus.corrected,
}


class CorrectionError(LoopgramError):
    key = "review-correction-invalid"


class ReviewResult(StrEnum):
    decided = "decided"  # this decision closed the item
    recorded = "recorded"  # counted; the item waits for another moderator
    duplicate = "duplicate"  # this moderator had already decided it
    taken = "taken"  # another moderator holds the claim
    closed = "closed"  # already decided (or withdrawn) before this press
    gone = "gone"  # no such item, or its answer was deleted


@dataclass(frozen=True)
class Outcome:
    result: ReviewResult
    item: ReviewItem | None = None
    claimed_by: int | None = None


def needs_overlap(item_id: int, share: float) -> bool:
    """A stable, even spread of `share` of the items (by id) that two moderators decide."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"overlap:{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def flag(
    *,
    session: Session,
    interaction_id: int,
    reason: str,
    note: str | None = None,
) -> ReviewItem:
    """Put an answer in the queue for `reason` (idempotent: one item per answer and reason)."""
    query = select(ReviewItem).where(
        ReviewItem.interaction_id == interaction_id, ReviewItem.reason == reason
    )
    existing = session.exec(query).first()
    if existing is not None:
        return existing
    interaction = session.get(Interaction, interaction_id)
    item = ReviewItem(
        interaction_id=interaction_id,
        reason=reason,
        status=ReviewStatus.pending,
        note=note[:512] if note else None,
        assistant=interaction.assistant if interaction else "",
    )
    try:
        with session.begin_nested():
            session.add(item)
            session.flush()
    except IntegrityError:  # flagged at the same moment elsewhere
        found = session.exec(query).first()
        assert found is not None
        return found
    log.info("review.flagged interaction_id=%s reason=%s", interaction_id, reason)
    return item


def pending_count(*, session: Session) -> int:
    query = select(func.count()).select_from(ReviewItem)
    return int(session.exec(query.where(ReviewItem.status == ReviewStatus.pending)).one())


# --- claims -----------------------------------------------------------------------------------


def _claimable(moderator_id: int, now: datetime) -> ColumnElement[bool]:
    return or_(
        col(ReviewItem.claimed_by).is_(None),
        col(ReviewItem.claimed_by) == moderator_id,
        col(ReviewItem.claim_expires_at) < now,
    )


def claim(
    *, session: Session, item_id: int, moderator_id: int, seconds: int, now: datetime | None = None
) -> Outcome:
    """Claim an item for `seconds` (renewing one's own claim). One conditional UPDATE, so
    of two moderators claiming at once exactly one wins."""
    now = now or utcnow()
    result = session.execute(
        update(ReviewItem)
        .where(
            col(ReviewItem.id) == item_id,
            col(ReviewItem.status) == ReviewStatus.pending,
            _claimable(moderator_id, now),
        )
        .values(claimed_by=moderator_id, claim_expires_at=now + timedelta(seconds=seconds))
        # The WHERE is the database's to judge: no in-Python re-evaluation against loaded
        # objects (SQLite hands back naive datetimes, `now` is aware).
        .execution_options(synchronize_session=False)
    )
    item = session.get(ReviewItem, item_id, populate_existing=True)
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return Outcome(ReviewResult.recorded, item, moderator_id)
    if item is None:
        return Outcome(ReviewResult.gone)
    if item.status != ReviewStatus.pending:
        return Outcome(ReviewResult.closed, item)
    return Outcome(ReviewResult.taken, item, item.claimed_by)


def release(*, session: Session, item_id: int, moderator_id: int, skip: bool = False) -> None:
    """Give a claim back (⏭ skip also keeps the item from coming back to this moderator)."""
    item = session.get(ReviewItem, item_id)
    if item is None or item.claimed_by != moderator_id:
        return
    item.claimed_by = None
    item.claim_expires_at = None
    if skip and moderator_id not in item.skipped_by:
        item.skipped_by = [*item.skipped_by, moderator_id]
    session.add(item)
    session.flush()


def next_for(
    *, session: Session, moderator_id: int, seconds: int, now: datetime | None = None
) -> ReviewItem | None:
    """Claim the oldest pending item this moderator may take (not skipped or decided by
    them, not claimed by someone else); None when the queue is empty for them."""
    now = now or utcnow()
    decided = select(ReviewDecision.review_item_id).where(
        ReviewDecision.moderator_id == moderator_id
    )
    query = (
        select(ReviewItem.id)
        .where(ReviewItem.status == ReviewStatus.pending)
        .where(_claimable(moderator_id, now))
        .where(col(ReviewItem.id).not_in(decided))
        .order_by(col(ReviewItem.id))
    )
    # Skips are checked here, not in SQL (a JSON list); every claimable id is a candidate, so
    # a moderator who skipped many items still reaches the newer ones.
    for item_id in session.exec(query).all():
        item = session.get(ReviewItem, item_id)
        if item is None or moderator_id in (item.skipped_by or []):
            continue
        outcome = claim(
            session=session,
            item_id=item_id or 0,
            moderator_id=moderator_id,
            seconds=seconds,
            now=now,
        )
        if outcome.result == ReviewResult.recorded:
            return outcome.item
    return None


# --- decisions --------------------------------------------------------------------------------


def check_correction(session: Session, interaction: Interaction, text: str, limit: int) -> str:
    """The correction as it will be stored: the text for free-text assistants, the
    canonical JSON for labels and verdicts ("label" or "label: reason")."""
    text = text.strip()
    if not text or len(text) > limit:
        raise CorrectionError(
            "correction empty or too long", key="review-correction-length", limit=limit
        )
    if interaction.assistant == "moderate":
        name, _, reason = text.partition(":")
        try:
            label = ModerationLabel(name.strip().lower())
        except ValueError as exc:
            allowed = ", ".join(label.value for label in ModerationLabel)
            raise CorrectionError(f"unknown label {name!r}", labels=allowed) from exc
        action = ModerationAction.none if label is ModerationLabel.ok else ModerationAction.review
        verdict = Verdict(
            label=label,
            confidence=1.0,
            reason=_reason(reason) or "Moderator's decision.",
            action=action,
        )
        return verdict.canonical()
    if interaction.assistant == "label":
        name, _, reason = text.partition(":")
        labels = label_set_names(session, interaction.label_set_id)
        if name.strip().lower() not in labels:
            raise CorrectionError(f"unknown label {name!r}", labels=", ".join(labels))
        return LabelResult(
            label=name.strip().lower(), confidence=1.0, reason=_reason(reason)
        ).canonical()
    return text


def decide(
    *,
    session: Session,
    item_id: int,
    moderator_id: int,
    decision: Decision,
    correction: str | None = None,
    max_correction_chars: int = 4000,
    correction_weight: float = 3.0,
    overlap: float = 0.0,
    now: datetime | None = None,
) -> Outcome:
    """Record one moderator's decision and, when it is the deciding one, apply the outcome.

    The item row is locked (Postgres) for the decision, so two moderators deciding at the
    same moment are serialised: the second finds it decided (or counts as the overlap's
    second opinion)."""
    now = now or utcnow()
    # Taking the claim is the first statement: a conditional UPDATE, so on Postgres the row
    # is locked and on SQLite the write lock is held until this decision commits. The other
    # moderator's UPDATE waits, then finds the item decided (or claimed) and gets no row.
    taken = claim(session=session, item_id=item_id, moderator_id=moderator_id, seconds=60, now=now)
    item = taken.item
    if item is None:
        return Outcome(ReviewResult.gone)
    mine = session.exec(
        select(ReviewDecision).where(
            ReviewDecision.review_item_id == item_id, ReviewDecision.moderator_id == moderator_id
        )
    ).first()
    if mine is not None:
        _unclaim(session, item, moderator_id)
        return Outcome(ReviewResult.duplicate, item)
    if taken.result != ReviewResult.recorded:
        return taken  # closed, or another moderator holds the claim
    interaction = session.get(Interaction, item.interaction_id)
    if interaction is None:
        return Outcome(ReviewResult.gone, item)
    stored = None
    if decision == Decision.correct:
        stored = check_correction(session, interaction, correction or "", max_correction_chars)
    session.add(
        ReviewDecision(
            review_item_id=item_id,
            moderator_id=moderator_id,
            decision=decision.value,
            correction=stored,
        )
    )
    crud.audit(
        session=session,
        actor_id=moderator_id,
        action=f"review.{decision.value}",
        target_type="review_item",
        target_id=str(item_id),
        details={"interaction_id": item.interaction_id},
    )
    session.flush()
    decisions = session.exec(
        select(ReviewDecision)
        .where(ReviewDecision.review_item_id == item_id)
        .order_by(col(ReviewDecision.id))
    ).all()
    item.claimed_by = None
    item.claim_expires_at = None
    if len(decisions) == 1 and item.required_reviews == 1 and needs_overlap(item_id, overlap):
        item.required_reviews = 2  # decided on the first decision, stable by item id
    final = _final_decision(item, list(decisions))
    if final is None:
        session.add(item)
        session.flush()
        return Outcome(ReviewResult.recorded, item)
    _apply(session, item, interaction, final, moderator_id, correction_weight, now)
    return Outcome(ReviewResult.decided, item)


def _unclaim(session: Session, item: ReviewItem, moderator_id: int) -> None:
    if item.claimed_by == moderator_id:
        item.claimed_by = None
        item.claim_expires_at = None
        session.add(item)
        session.flush()


def _final_decision(item: ReviewItem, decisions: list[ReviewDecision]) -> ReviewDecision | None:
    """The decision that closes the item, or None while more opinions are needed."""
    if len(decisions) < item.required_reviews:
        return None
    counts: dict[str, list[ReviewDecision]] = {}
    for d in decisions:
        counts.setdefault(d.decision, []).append(d)
    agreeing = max(counts.values(), key=lambda ds: (len(ds), ds[-1].id or 0))
    if len(agreeing) * 2 > len(decisions):
        return agreeing[-1]
    if item.required_reviews < MAX_REVIEWS:
        item.required_reviews += 1
        disagree = "moderators disagree: a third opinion decides"
        item.note = f"{item.note} · {disagree}"[:512] if item.note else disagree
        return None
    return decisions[-1]  # no majority even of three: the latest word stands


def _apply(
    session: Session,
    item: ReviewItem,
    interaction: Interaction,
    final: ReviewDecision,
    moderator_id: int,
    correction_weight: float,
    now: datetime,
) -> None:
    decision = Decision(final.decision)
    item.status = STATUS_OF[decision]
    item.reviewer_id = final.moderator_id
    item.correction = final.correction
    item.decided_at = now
    session.add(item)
    answered = interaction.status == InteractionStatus.ok and interaction.answer.strip()
    if decision == Decision.correct and final.correction:
        if answered:
            session.add(
                PreferencePair(
                    pair_key=f"correction:{item.id}",
                    assistant=interaction.assistant,
                    prompt=interaction.prompt,
                    chosen=final.correction,
                    rejected=interaction.answer,
                    rejected_interaction_id=interaction.id,
                    source=PairSource.correction,
                    weight=correction_weight,
                    user_id=final.moderator_id,
                )
            )
        _confirm_label(session, interaction, final.correction, final.moderator_id)
    elif answered:
        _moderator_rating(
            session, interaction, final.moderator_id, +1 if decision == Decision.approve else -1
        )
        if decision == Decision.approve:
            _confirm_label(session, interaction, interaction.answer, final.moderator_id)
    session.flush()
    log.info(
        "review.decided item_id=%s interaction_id=%s decision=%s moderator_id=%s",
        item.id,
        interaction.id,
        decision.value,
        moderator_id,
    )


def _moderator_rating(
    session: Session, interaction: Interaction, moderator_id: int, value: int
) -> None:
    rating = session.exec(
        select(Rating).where(
            Rating.interaction_id == interaction.id, Rating.user_id == moderator_id
        )
    ).first()
    if rating is None:
        rating = Rating(interaction_id=interaction.id or 0, user_id=moderator_id, value=value)
    rating.value = value
    rating.source = "review"
    rating.updated_at = utcnow()
    session.add(rating)


def _confirm_label(
    session: Session, interaction: Interaction, answer: str, moderator_id: int
) -> None:
    if interaction.assistant != "label":
        return
    try:
        result = parse_structured(answer, LabelResult)
    except InvalidOutput:
        return
    labeling.confirm_label(
        session=session,
        label_set_id=interaction.label_set_id,
        text=interaction.prompt,
        label=result.label,
        source="review",
        interaction_id=interaction.id,
        confirmed_by=moderator_id,
    )


def _reason(text: str) -> str:
    """A moderator's reason as the schemas allow it (at most 300 characters)."""
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:299] + "…"


def label_set_names(session: Session, label_set_id: int | None) -> list[str]:
    return labeling.label_set(session, label_set_id)[1].names


# --- cards (what a moderator sees) ------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    item: ReviewItem
    interaction: Interaction | None
    user_reason: str | None
    user_comment: str | None
    labels: list[str]  # the labels a correction may use (label / moderate), else empty
    sources: list[str] = field(default_factory=list)  # knowledge-base documents it cited


def card(*, session: Session, item_id: int) -> Card | None:
    item = session.get(ReviewItem, item_id)
    if item is None:
        return None
    interaction = session.get(Interaction, item.interaction_id)
    reason = comment = None
    labels: list[str] = []
    if interaction is not None:
        rating = session.exec(
            select(Rating).where(
                Rating.interaction_id == interaction.id, Rating.user_id == interaction.user_id
            )
        ).first()
        if rating is not None:
            reason, comment = rating.reason, rating.comment
        if interaction.assistant == "label":
            labels = label_set_names(session, interaction.label_set_id)
        elif interaction.assistant == "moderate":
            labels = [label.value for label in ModerationLabel]
        sources = _source_names(session, list(interaction.retrieved_chunk_ids or []))
        return Card(item, interaction, reason, comment, labels, sources)
    return Card(item, interaction, reason, comment, labels)


def _source_names(session: Session, chunk_ids: list[str]) -> list[str]:
    if not chunk_ids:
        return []
    rows = session.exec(
        select(Document.name)
        .join(Chunk, col(Chunk.document_id) == col(Document.id))
        .where(col(Chunk.id).in_(chunk_ids))
    ).all()
    return sorted(set(rows))


def unposted(*, session: Session, limit: int = 20) -> list[int]:
    """Pending items whose card has not been posted to the moderators' chat yet."""
    query = (
        select(ReviewItem.id)
        .where(ReviewItem.status == ReviewStatus.pending)
        .where(col(ReviewItem.card_chat_id).is_(None))
        .order_by(col(ReviewItem.id))
        .limit(limit)
    )
    return [i for i in session.exec(query).all() if i is not None]


def reserve_card(*, session: Session, item_id: int, chat_id: int) -> bool:
    """Mark the item as being posted (one poster wins when several bot replicas run)."""
    result = session.execute(
        update(ReviewItem)
        .where(col(ReviewItem.id) == item_id, col(ReviewItem.card_chat_id).is_(None))
        .values(card_chat_id=chat_id)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def set_card(*, session: Session, item_id: int, message_id: int | None) -> None:
    """Record the posted card (None: posting failed, let a later round try again)."""
    item = session.get(ReviewItem, item_id)
    if item is None:
        return
    item.card_message_id = message_id
    if message_id is None:
        item.card_chat_id = None
    session.add(item)
