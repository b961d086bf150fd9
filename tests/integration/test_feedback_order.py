"""The last press wins, whatever order the presses are applied in (SQLite, Postgres).

A redelivered message, a retried batch or two workers committing in the other order can
apply an older press after a newer one: the bot stamps each press when it receives it and
a press older than the stored one changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from loopgram.db import Database
from loopgram.feedback import Feedback, FeedbackResult, apply_feedback, apply_feedback_many
from loopgram.models import Interaction, PreferencePair, Rating, ReviewItem, ReviewStatus

OWNER = 7
T0 = datetime(2026, 12, 1, 12, 0, 0, 250_000, tzinfo=UTC)

Apply = Callable[[Database, Feedback], FeedbackResult]


def _one(db: Database, feedback: Feedback) -> FeedbackResult:
    return db.call(apply_feedback, feedback=feedback)


def _many(db: Database, feedback: Feedback) -> FeedbackResult:
    (result,) = db.call(apply_feedback_many, feedbacks=[feedback])
    return result


PATHS = pytest.mark.parametrize("apply", [_one, _many], ids=["apply_feedback", "many"])


def _press(iid: int, value: int, at: datetime | None, **extra: Any) -> Feedback:
    # Through the payload, as a worker receives it.
    payload: dict[str, Any] = {"interaction_id": iid, "user_id": OWNER, "value": value, **extra}
    if at is not None:
        payload["pressed_at"] = at.isoformat()
    return Feedback.from_payload(payload)


def _answers(db: Database, n: int = 1, *, regenerations: bool = False) -> list[int]:
    ids: list[int] = []
    for k in range(n):
        with db.session() as session:
            row = Interaction(
                chat_id=OWNER,
                user_id=OWNER,
                assistant="chat",
                prompt="p",
                answer=f"answer {k}",
                parent_interaction_id=ids[0] if regenerations and ids else None,
            )
            session.add(row)
            session.flush()
            ids.append(row.id or 0)
    return ids


def _state(db: Database, iid: int) -> tuple[int, ReviewStatus | None]:
    """The rating's value and its review item's status."""
    with db.session() as session:
        rating = session.exec(select(Rating).where(Rating.interaction_id == iid)).one()
        item = session.exec(select(ReviewItem).where(ReviewItem.interaction_id == iid)).first()
        return rating.value, None if item is None else item.status


def _stamp(db: Database, iid: int) -> datetime | None:
    """The stored press time, in UTC (SQLite returns it without the zone)."""
    with db.session() as session:
        rating = session.exec(select(Rating).where(Rating.interaction_id == iid)).one()
        value = rating.pressed_at
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


@PATHS
def test_an_older_press_applied_again_changes_nothing(db: Database, apply: Apply) -> None:
    (iid,) = _answers(db)
    up1 = _press(iid, 1, T0)
    down = _press(iid, -1, T0 + timedelta(milliseconds=300))
    up2 = _press(iid, 1, T0 + timedelta(milliseconds=600))
    for feedback in (up1, down, up2):
        assert apply(db, feedback).stored
    result = apply(db, down)  # redelivered, retried, or the other worker's batch
    assert _state(db, iid) == (1, ReviewStatus.withdrawn)
    assert (result.stored, result.note) == (False, "stale press")
    assert _stamp(db, iid) == up2.pressed_at


def test_an_older_press_later_in_the_same_batch_changes_nothing(db: Database) -> None:
    (iid,) = _answers(db)
    up1, up2 = _press(iid, 1, T0), _press(iid, 1, T0 + timedelta(seconds=2))
    down = _press(iid, -1, T0 + timedelta(seconds=1), reason="wrong")
    results = db.call(apply_feedback_many, feedbacks=[up1, down, up2, down, up1])
    assert [r.stored for r in results] == [True, True, True, False, False]
    assert _state(db, iid) == (1, ReviewStatus.withdrawn)


@PATHS
def test_a_stale_press_leaves_the_preference_pairs(db: Database, apply: Apply) -> None:
    root, regen = _answers(db, 2, regenerations=True)
    apply(db, _press(root, -1, T0))
    apply(db, _press(regen, 1, T0 + timedelta(seconds=1)))  # regen chosen over root
    apply(db, _press(regen, -1, T0 + timedelta(seconds=3)))  # both 👎: no preference
    before = db.call(lambda *, session: session.exec(select(PreferencePair)).all())
    assert before == []
    assert not apply(db, _press(regen, 1, T0 + timedelta(seconds=2))).stored
    after = db.call(lambda *, session: session.exec(select(PreferencePair)).all())
    assert after == [] and _state(db, regen) == (-1, ReviewStatus.pending)


@PATHS
def test_an_unstamped_press_is_applied_as_the_latest(db: Database, apply: Apply) -> None:
    """Messages queued before the upgrade, and producers that do not stamp."""
    (iid,) = _answers(db)
    apply(db, _press(iid, 1, T0 + timedelta(seconds=5)))
    assert apply(db, _press(iid, -1, None)).stored
    assert _state(db, iid) == (-1, ReviewStatus.pending)
    assert _stamp(db, iid) == T0 + timedelta(seconds=5)  # the newest stamp seen is kept
    assert not apply(db, _press(iid, 1, T0)).stored  # older than that: still stale
    assert apply(db, _press(iid, 1, T0 + timedelta(seconds=6))).stored


@PATHS
def test_a_rating_stored_before_the_upgrade_takes_any_press(db: Database, apply: Apply) -> None:
    (iid,) = _answers(db)
    apply(db, _press(iid, -1, None))
    assert _stamp(db, iid) is None
    assert apply(db, _press(iid, 1, T0)).stored
    assert _state(db, iid) == (1, ReviewStatus.withdrawn)


def test_the_stamp_travels_in_the_payload() -> None:
    press = Feedback(interaction_id=1, user_id=2, value=1, pressed_at=T0)
    assert Feedback.from_payload(press.to_payload()) == press
    old = {"interaction_id": 1, "user_id": 2, "value": 1}  # queued before the upgrade
    assert Feedback.from_payload(old).pressed_at is None
    in_moscow = Feedback.from_payload({**old, "pressed_at": "2026-12-01T15:00:00.25+03:00"})
    assert in_moscow.pressed_at == T0 and in_moscow.pressed_at.tzinfo == UTC
    for bad in ("yesterday", "2026-12-01T12:00:00", 1764590400):  # no zone: no order
        with pytest.raises(ValueError):
            Feedback.from_payload({**old, "pressed_at": bad})
