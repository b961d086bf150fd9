"""`apply_feedback_many` leaves exactly what `apply_feedback` one by one leaves (SQLite, Postgres)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update
from sqlmodel import Session, select

from loopgram.db import Database
from loopgram.feedback import (
    REASONS,
    Feedback,
    FeedbackResult,
    apply_feedback,
    apply_feedback_many,
)
from loopgram.models import (
    Interaction,
    InteractionStatus,
    PreferencePair,
    Rating,
    ReviewItem,
    ReviewStatus,
)

OWNER, STRANGER = 7, 8

# (parent index, owner, status): a root with three regenerations (one failed), a plain answer,
# a root with one regeneration, someone else's answer, and a regeneration of a regeneration.
LAYOUT: list[tuple[int | None, int, InteractionStatus]] = [
    (None, OWNER, InteractionStatus.ok),  # 0
    (0, OWNER, InteractionStatus.ok),  # 1
    (0, OWNER, InteractionStatus.failed),  # 2
    (0, OWNER, InteractionStatus.ok),  # 3
    (None, OWNER, InteractionStatus.ok),  # 4
    (None, OWNER, InteractionStatus.ok),  # 5
    (5, OWNER, InteractionStatus.ok),  # 6
    (None, STRANGER, InteractionStatus.ok),  # 7
    (1, OWNER, InteractionStatus.ok),  # 8
]
UNKNOWN = len(LAYOUT)  # an index that maps to an id no interaction has

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

press = st.builds(
    lambda target, user, value, reason, comment, source, stamp: (
        target,
        user,
        value,
        reason,
        comment,
        source,
        stamp,
    ),
    st.integers(0, UNKNOWN),
    st.sampled_from([OWNER, OWNER, OWNER, STRANGER]),
    st.sampled_from([1, -1]),
    st.one_of(st.none(), st.sampled_from(REASONS)),
    st.sampled_from([None, None, "shorter", "wrong date"]),
    st.sampled_from(["button", "button", "reply"]),
    # When the bot received it, in ms after T0: a few values, in any order, so presses come
    # stale, repeated (the same stamp) or unstamped (None: old messages, other producers).
    st.one_of(st.none(), st.integers(0, 6)),
)

Press = tuple[int, int, int, str | None, str | None, str, int | None]


def _layout(db: Database) -> list[int]:
    with db.session() as session:
        for table in (PreferencePair, ReviewItem, Rating, Interaction):
            session.execute(delete(table))
    ids: list[int] = []
    for n, (parent, owner, status) in enumerate(LAYOUT):
        with db.session() as session:
            row = Interaction(
                chat_id=owner,
                user_id=owner,
                assistant="chat" if n % 2 else "code",
                prompt=f"prompt {n}",
                answer=f"answer {n}",
                status=status,
                parent_interaction_id=None if parent is None else ids[parent],
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            ids.append(row.id)
    return ids


def _feedback(ids: list[int], p: Press) -> Feedback:
    target, user, value, reason, comment, source, stamp = p
    iid = ids[target] if target < len(ids) else max(ids) + 1000
    return Feedback(
        interaction_id=iid,
        user_id=user,
        value=value,
        reason=reason,
        comment=comment,
        source=source,
        pressed_at=None if stamp is None else T0 + timedelta(milliseconds=stamp),
    )


def _utc(value: datetime | None) -> datetime | None:
    """SQLite gives the stored UTC time back without its zone."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _prepare(
    db: Database, ids: list[int], initial: list[Press], consume: bool, decide: bool
) -> None:
    """Clear the feedback tables and build a starting state one press at a time."""
    with db.session() as session:
        for table in (PreferencePair, ReviewItem, Rating):
            session.execute(delete(table))
    for p in initial:
        db.call(apply_feedback, feedback=_feedback(ids, p))
    with db.session() as session:
        if consume:  # a pair already trained on must never change again
            first = session.exec(select(PreferencePair).order_by(PreferencePair.pair_key)).first()
            if first is not None:
                session.execute(
                    update(PreferencePair)
                    .where(PreferencePair.pair_key == first.pair_key)  # type: ignore[arg-type]
                    .values(consumed_by_run=1)
                )
        if decide:  # a moderator already decided one flag
            item = session.exec(select(ReviewItem).order_by(ReviewItem.interaction_id)).first()
            if item is not None:
                item.status = ReviewStatus.approved
                session.add(item)


def _state(db: Database) -> dict[str, Any]:
    def read(*, session: Session) -> dict[str, Any]:
        ratings = session.exec(select(Rating)).all()
        return {
            "ratings": {
                (r.interaction_id, r.user_id): (
                    r.value,
                    r.source,
                    r.reason,
                    r.comment,
                    _utc(r.pressed_at),
                )
                for r in ratings
            },
            "rating_keys": {r.id: (r.interaction_id, r.user_id) for r in ratings},
            "reviews": {
                (i.interaction_id, i.reason): (i.status, i.note)
                for i in session.exec(select(ReviewItem)).all()
            },
            "pairs": {
                p.pair_key: (
                    p.assistant,
                    p.prompt,
                    p.chosen,
                    p.rejected,
                    p.chosen_interaction_id,
                    p.rejected_interaction_id,
                    p.source,
                    p.weight,
                    p.user_id,
                    p.consumed_by_run,
                )
                for p in session.exec(select(PreferencePair)).all()
            },
        }

    return db.call(read)


def _comparable(results: list[FeedbackResult], keys: dict[Any, Any]) -> list[tuple[Any, ...]]:
    return [
        (r.stored, r.pairs, r.flagged, r.note, keys.get(r.rating_id) if r.stored else None)
        for r in results
    ]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    initial=st.lists(press, max_size=8),
    presses=st.lists(press, min_size=1, max_size=30),
    cuts=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    consume=st.booleans(),
    decide=st.booleans(),
)
def test_batches_equal_one_by_one(
    db: Database,
    initial: list[Press],
    presses: list[Press],
    cuts: list[int],
    consume: bool,
    decide: bool,
) -> None:
    ids = _layout(db)
    feedback = [_feedback(ids, p) for p in presses]

    _prepare(db, ids, initial, consume, decide)
    one_by_one = [db.call(apply_feedback, feedback=f) for f in feedback]
    expected = _state(db)

    _prepare(db, ids, initial, consume, decide)
    batched: list[FeedbackResult] = []
    start, k = 0, 0
    while start < len(feedback):  # the presses split into consecutive batches
        size = cuts[k % len(cuts)]
        batched += db.call(apply_feedback_many, feedbacks=feedback[start : start + size])
        start, k = start + size, k + 1
    got = _state(db)

    assert got["ratings"] == expected["ratings"]
    assert got["reviews"] == expected["reviews"]
    assert got["pairs"] == expected["pairs"]
    assert _comparable(batched, got["rating_keys"]) == _comparable(
        one_by_one, expected["rating_keys"]
    )


def test_one_batch_with_every_rule(db: Database) -> None:
    ids = _layout(db)
    root, regen, plain = ids[0], ids[1], ids[4]
    results = db.call(
        apply_feedback_many,
        feedbacks=[
            Feedback(interaction_id=plain, user_id=OWNER, value=-1, reason="wrong", update_id=1),
            Feedback(interaction_id=plain, user_id=OWNER, value=-1, reason="wrong", update_id=1),
            Feedback(interaction_id=plain, user_id=OWNER, value=-1, comment="too long"),
            Feedback(interaction_id=regen, user_id=OWNER, value=1),
            Feedback(interaction_id=ids[7], user_id=OWNER, value=1),  # not theirs
            Feedback(interaction_id=max(ids) + 1, user_id=OWNER, value=1),  # unknown
            Feedback(interaction_id=plain, user_id=OWNER, value=1),  # changes their mind
        ],
    )
    assert [r.stored for r in results] == [True, True, True, True, False, False, True]
    assert [r.note for r in results[4:6]] == ["not the owner", "unknown interaction"]
    assert results[0].flagged and not results[-1].flagged
    assert results[0].rating_id == results[-1].rating_id is not None
    assert results[3].pairs == 2  # against the original and the other ok regeneration
    state = _state(db)
    assert state["ratings"][(plain, OWNER)] == (1, "button", None, None, None)
    assert state["reviews"] == {
        (plain, "thumbs_down"): (ReviewStatus.withdrawn, "user changed the rating to +1")
    }
    assert {(p[4], p[5]) for p in state["pairs"].values()} == {(regen, root), (regen, ids[3])}


def test_large_batches_are_written_in_chunks(db: Database) -> None:
    with db.session() as session:
        rows = [
            Interaction(chat_id=u, user_id=u, assistant="chat", prompt="p", answer="a")
            for u in range(1, 1201)
        ]
        session.add_all(rows)
        session.flush()
        pairs = [(row.id or 0, row.user_id) for row in rows]
    feedback = [Feedback(interaction_id=i, user_id=u, value=1 - 2 * (u % 2)) for i, u in pairs]
    results = db.call(apply_feedback_many, feedbacks=feedback + feedback[:10])
    assert all(r.stored and r.rating_id for r in results)
    state = _state(db)
    assert len(state["ratings"]) == 1200
    assert len(state["reviews"]) == 600


def test_empty_batch() -> None:
    assert apply_feedback_many(session=None, feedbacks=[]) == []  # type: ignore[arg-type]
