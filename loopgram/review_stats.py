"""Read-only figures about human review: the queue, the moderators, users' satisfaction.

Plain functions of a session (SQLite and Postgres alike); nothing here writes. Datetimes
come back naive from SQLite and aware from Postgres: both are read as UTC.

- `queue_stats`: what waits, who holds what, how fast items get decided, who decided what.
- `agreement`: each moderator's Cohen's kappa against the other moderators on the items
  they both decided (overlap items).
- `thumbs_up_series`: users' 👍 share per day, assistant and served adapter.
- `list_items`: the queue's rows for `loopgram review list`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func
from sqlmodel import Session, col, select

from loopgram.evaluation.metrics import cohen_kappa
from loopgram.models import Interaction, Rating, ReviewDecision, ReviewItem, ReviewStatus, utcnow

DECISIONS = ("approve", "reject", "correct")
DECIDED_WINDOW = timedelta(days=7)
REVIEW_TIME_WINDOW = timedelta(days=30)
MODERATOR_SOURCE = "review"  # Rating.source of a moderator's decision (loopgram.review)
BASE = "base"  # the adapter name shown for answers of the base model
ALL = "all"
STATUSES = tuple(s.value for s in ReviewStatus)


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes for aware columns; they are UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between closest ranks (numpy's
    default, "inclusive"); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _assistant() -> ColumnElement[str]:
    """The item's assistant, or its answer's for items flagged without one."""
    return func.coalesce(func.nullif(col(ReviewItem.assistant), ""), col(Interaction.assistant))


# ------------------------------------------------------------------------------ the queue


@dataclass(frozen=True)
class QueueStats:
    pending: int
    pending_by_reason: dict[str, int]
    pending_by_assistant: dict[str, int]
    claimed: int  # pending items whose claim has not lapsed
    oldest_pending_seconds: float | None
    decided_last_7_days: int
    reviewed_last_30_days: int  # items the two review-time figures are taken over
    review_seconds_median: float | None  # decided_at - created_at
    review_seconds_p90: float | None
    decisions_by_moderator: dict[int, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["decisions_by_moderator"] = {str(k): v for k, v in self.decisions_by_moderator.items()}
        return data


def queue_stats(*, session: Session, now: datetime | None = None) -> QueueStats:
    """The queue at `now` (default: the current time). Decided counts and review times use
    `decided_at`; decisions per moderator count every row of `review_decision` (all time,
    overlap items included), with approve, reject and correct always present."""
    now = as_utc(now or utcnow())
    pending = col(ReviewItem.status) == ReviewStatus.pending
    by_reason = {
        reason: int(n)
        for reason, n in session.exec(
            select(ReviewItem.reason, func.count())
            .where(pending)
            .group_by(col(ReviewItem.reason))
            .order_by(col(ReviewItem.reason))
        ).all()
    }
    assistant = _assistant()
    by_assistant = {
        str(name): int(n)
        for name, n in session.exec(
            select(assistant, func.count())
            .select_from(ReviewItem)
            .join(Interaction, col(Interaction.id) == col(ReviewItem.interaction_id))
            .where(pending)
            .group_by(assistant)
            .order_by(assistant)
        ).all()
    }
    claimed = session.exec(
        select(func.count())
        .select_from(ReviewItem)
        .where(pending)
        .where(col(ReviewItem.claimed_by).is_not(None))
        .where(col(ReviewItem.claim_expires_at) > now)
    ).one()
    oldest = session.exec(
        select(ReviewItem.created_at).where(pending).order_by(col(ReviewItem.created_at)).limit(1)
    ).first()
    decided_recently = session.exec(
        select(func.count())
        .select_from(ReviewItem)
        .where(col(ReviewItem.decided_at) >= now - DECIDED_WINDOW)
        .where(col(ReviewItem.decided_at) <= now)
    ).one()
    spans = [
        (as_utc(decided) - as_utc(created)).total_seconds()
        for created, decided in session.exec(
            select(ReviewItem.created_at, ReviewItem.decided_at)
            .where(col(ReviewItem.decided_at) >= now - REVIEW_TIME_WINDOW)
            .where(col(ReviewItem.decided_at) <= now)
        ).all()
        if decided is not None
    ]
    decisions: dict[int, dict[str, int]] = {}
    for moderator, decision, n in session.exec(
        select(ReviewDecision.moderator_id, ReviewDecision.decision, func.count())
        .group_by(col(ReviewDecision.moderator_id), col(ReviewDecision.decision))
        .order_by(col(ReviewDecision.moderator_id))
    ).all():
        counts = decisions.setdefault(int(moderator), dict.fromkeys(DECISIONS, 0))
        counts[decision] = counts.get(decision, 0) + int(n)
    return QueueStats(
        pending=sum(by_reason.values()),
        pending_by_reason=by_reason,
        pending_by_assistant=by_assistant,
        claimed=int(claimed),
        oldest_pending_seconds=(now - as_utc(oldest)).total_seconds() if oldest else None,
        decided_last_7_days=int(decided_recently),
        reviewed_last_30_days=len(spans),
        review_seconds_median=percentile(spans, 50),
        review_seconds_p90=percentile(spans, 90),
        decisions_by_moderator=decisions,
    )


# ------------------------------------------------------------------------------ agreement


@dataclass(frozen=True)
class Agreement:
    moderator_id: int
    kappa: float
    shared_items: int  # items this moderator and at least one other decided
    pairs: int  # (this moderator, other moderator) decisions compared; > items with 3 reviews

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def agreement(*, session: Session) -> dict[int, Agreement]:
    """Per moderator, Cohen's kappa of their decisions against the other moderators' on the
    same items (items with at least two decisions). Each other moderator's decision on a
    shared item is one pair, so a three-moderator item gives each of them two pairs.

    A moderator who shares no item with another is absent. `cohen_kappa` defines the case
    where chance agreement is total (every decision on both sides is the same single
    category, e.g. both always approved): 1.0, since they agree on every item (the textbook
    formula is 0/0 there). Kappa is 0.0 at chance level (one always approves, the other
    always rejects) and negative below it."""
    by_item: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for item_id, moderator, decision in session.exec(
        select(ReviewDecision.review_item_id, ReviewDecision.moderator_id, ReviewDecision.decision)
    ).all():
        by_item[item_id].append((int(moderator), decision))
    mine: dict[int, list[str]] = defaultdict(list)
    theirs: dict[int, list[str]] = defaultdict(list)
    items: dict[int, int] = defaultdict(int)
    for decisions in by_item.values():
        if len(decisions) < 2:
            continue
        for moderator, decision in decisions:
            items[moderator] += 1
            for other, other_decision in decisions:
                if other != moderator:
                    mine[moderator].append(decision)
                    theirs[moderator].append(other_decision)
    return {
        moderator: Agreement(
            moderator_id=moderator,
            kappa=cohen_kappa(mine[moderator], theirs[moderator]),
            shared_items=items[moderator],
            pairs=len(mine[moderator]),
        )
        for moderator in sorted(items)
    }


# ------------------------------------------------------------------------ users' 👍 share


@dataclass(frozen=True)
class SeriesPoint:
    day: date  # UTC
    assistant: str
    adapter: str  # the served adapter's name, or "base"
    ratings: int
    thumbs_up: int

    @property
    def share(self) -> float:
        return self.thumbs_up / self.ratings if self.ratings else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "assistant": self.assistant,
            "adapter": self.adapter,
            "ratings": self.ratings,
            "thumbs_up": self.thumbs_up,
            "share": self.share,
        }


def thumbs_up_series(
    *, session: Session, days: int = 30, now: datetime | None = None
) -> list[SeriesPoint]:
    """Users' ratings per UTC day × assistant × adapter over the last `days` days (today
    included), sorted by day, assistant, adapter.

    Each (answer, user) counts once, with its latest verdict, on the day it was last
    given (`Rating.updated_at`). Moderators' ratings (source "review", written by review
    decisions) are left out: this is about the people who asked."""
    if days < 1:
        raise ValueError("days must be at least 1")
    now = as_utc(now or utcnow())
    first_day = now.date() - timedelta(days=days - 1)
    start = datetime.combine(first_day, time.min, tzinfo=UTC)
    rows = session.exec(
        select(Rating, Interaction.assistant, Interaction.adapter)
        .join(Interaction, col(Interaction.id) == col(Rating.interaction_id))
        .where(col(Rating.source) != MODERATOR_SOURCE)
        .where(col(Rating.updated_at) >= start)
        .where(col(Rating.updated_at) <= now)
    ).all()
    # (interaction, user) is unique in `rating` today; keep the latest anyway, so the
    # figure stays right if re-presses ever become rows of their own.
    latest: dict[tuple[int, int], tuple[datetime, int, int, str, str]] = {}
    for rating, assistant, adapter in rows:
        moment, rating_id = as_utc(rating.updated_at), rating.id or 0
        key = (rating.interaction_id, rating.user_id)
        seen = latest.get(key)
        if seen is None or (moment, rating_id) > seen[:2]:
            latest[key] = (moment, rating_id, rating.value, assistant, adapter or BASE)
    counts: dict[tuple[date, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for moment, _, value, assistant, adapter in latest.values():
        bucket = counts[(moment.date(), assistant, adapter)]
        bucket[0] += 1
        bucket[1] += value > 0
    return [
        SeriesPoint(day=day, assistant=assistant, adapter=adapter, ratings=n, thumbs_up=up)
        for (day, assistant, adapter), (n, up) in sorted(counts.items())
    ]


# --------------------------------------------------------------------------- queue rows


@dataclass(frozen=True)
class ReviewRow:
    id: int
    interaction_id: int
    assistant: str
    reason: str
    status: str
    note: str | None
    claimed_by: int | None  # only while the claim holds
    reviewer_id: int | None
    correction: str | None
    created_at: datetime
    decided_at: datetime | None
    prompt: str
    answer: str

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["decided_at"] = self.decided_at.isoformat() if self.decided_at else None
        return data


def list_items(
    *,
    session: Session,
    status: str = ReviewStatus.pending.value,
    assistant: str | None = None,
    limit: int = 50,
    now: datetime | None = None,
) -> list[ReviewRow]:
    """Review items with their answers. `status` is a ReviewStatus value or "all". Pending
    items come in queue order (oldest first, as moderators get them); any other status
    newest first. `claimed_by` is reported only while the claim has not lapsed."""
    if status != ALL and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    now = as_utc(now or utcnow())
    item_assistant = _assistant()
    query = select(ReviewItem, Interaction.prompt, Interaction.answer, item_assistant).join(
        Interaction, col(Interaction.id) == col(ReviewItem.interaction_id)
    )
    if status != ALL:
        query = query.where(col(ReviewItem.status) == status)
    if assistant is not None:
        query = query.where(item_assistant == assistant)
    if status == ReviewStatus.pending.value:
        query = query.order_by(col(ReviewItem.created_at), col(ReviewItem.id))
    else:
        query = query.order_by(col(ReviewItem.created_at).desc(), col(ReviewItem.id).desc())
    rows = []
    for item, prompt, answer, name in session.exec(query.limit(limit)).all():
        expires = item.claim_expires_at
        live = item.claimed_by is not None and expires is not None and as_utc(expires) > now
        rows.append(
            ReviewRow(
                id=item.id or 0,
                interaction_id=item.interaction_id,
                assistant=str(name),
                reason=item.reason,
                status=str(item.status),
                note=item.note,
                claimed_by=item.claimed_by if live else None,
                reviewer_id=item.reviewer_id,
                correction=item.correction,
                created_at=as_utc(item.created_at),
                decided_at=as_utc(item.decided_at) if item.decided_at else None,
                prompt=prompt,
                answer=answer,
            )
        )
    return rows
