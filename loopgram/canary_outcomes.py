"""What the canary counts: the outcome of each first answer an arm gave.

An answer's outcome is its asker's 👍 or 👎, or a 👎 when the asker pressed 🔄 for another
answer instead. Answers to a 🔄 are not counted: the asker's choice between the versions is
a preference pair for training, not a verdict on the arm. Counting those ratings pulls every
arm's rate toward one half, because each choice adds a 👍 and a 👎 to the arm that served
both versions. With the closed-loop simulation's people, an arm whose answers they like 25%
of the time is expected to score 0.46 that way and one at 51% 0.56: a 26-point gain shows
as 10. Counted by first answer: 0.23 and 0.42.

Outcomes are ordered by their first event (the rating or the 🔄), so a look at N outcomes
is the arm's first N. A look sees each outcome as it stood then: a 👍 followed later by a 🔄
counts as a 👍 until the 🔄.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from loopgram.canary import Tally
from loopgram.models import Interaction, Rating

OutcomeCutoff = tuple[datetime, int]
"""An outcome's (first event time, answer id): the outcomes up to and including it."""


@dataclass(frozen=True)
class Outcome:
    answer_id: int
    user_id: int
    rating: tuple[datetime, int] | None
    """(when, value) of the asker's 👍/👎 on this answer."""
    regenerated_at: datetime | None
    """When the asker first pressed 🔄 on it."""

    @property
    def key(self) -> OutcomeCutoff:
        times = [t for t in (self.regenerated_at, self.rating[0] if self.rating else None) if t]
        return (min(times), self.answer_id)

    def value(self, until: OutcomeCutoff | None = None) -> int:
        """+1 or -1, as it stood at `until` (now when None)."""
        at = until[0] if until is not None else None
        if self.regenerated_at is not None and (at is None or self.regenerated_at <= at):
            return -1
        assert self.rating is not None  # the key is the earliest event, so one is set
        return self.rating[1]


def arm_outcomes(
    *, session: Session, assistant: str, adapter: str | None, since: datetime | None
) -> list[Outcome]:
    """The outcomes of first answers this adapter (None = base model) gave since `since`,
    in the order they became known."""
    first = Interaction
    conditions: list[ColumnElement[bool]] = [
        col(first.assistant) == assistant,
        col(first.parent_interaction_id).is_(None),
        col(first.adapter) == adapter if adapter else col(first.adapter).is_(None),
    ]
    if since is not None:
        conditions.append(col(first.created_at) >= since)
    rated = session.exec(
        select(col(first.id), first.user_id, Rating.value, Rating.created_at)
        .join(Rating, col(Rating.interaction_id) == col(first.id))
        .where(*conditions)
        .where(col(Rating.user_id) == col(first.user_id))
        .where(col(Rating.value).in_((1, -1)))
    ).all()
    again = aliased(Interaction)
    regenerated = session.exec(
        select(col(first.id), first.user_id, func.min(again.created_at))
        .join(again, col(again.parent_interaction_id) == col(first.id))
        .where(*conditions)
        .where(col(again.user_id) == col(first.user_id))
        .group_by(col(first.id), col(first.user_id))
    ).all()
    ratings = {i: (int(u), (at, int(v))) for i, u, v, at in rated if i is not None}
    regenerations = {i: (int(u), at) for i, u, at in regenerated if i is not None}
    outcomes = [
        Outcome(
            answer_id=answer_id,
            user_id=(ratings.get(answer_id) or regenerations[answer_id])[0],
            rating=ratings[answer_id][1] if answer_id in ratings else None,
            regenerated_at=regenerations[answer_id][1] if answer_id in regenerations else None,
        )
        for answer_id in ratings.keys() | regenerations.keys()
    ]
    return sorted(outcomes, key=lambda outcome: outcome.key)


def tally(outcomes: list[Outcome], until: OutcomeCutoff | None = None) -> Tally:
    """👍 and all outcomes, per person too (the canary's interval allows for people who rate
    a lot); with `until`, only those known up to that one, valued as they stood then."""
    people: dict[int, list[int]] = {}
    for outcome in outcomes:
        if until is not None and outcome.key > until:
            continue
        person = people.setdefault(outcome.user_id, [0, 0])
        person[0] += outcome.value(until) > 0
        person[1] += 1
    by_person = tuple((up, total) for up, total in sorted(people.values()))
    return Tally(
        up=sum(up for up, _ in by_person),
        total=sum(total for _, total in by_person),
        by_person=by_person,
    )


def nth_cutoff(outcomes: list[Outcome], n: int) -> OutcomeCutoff | None:
    """The `n`-th outcome's cutoff (1-based, in the order they became known), if any."""
    return outcomes[n - 1].key if 0 < n <= len(outcomes) else None
