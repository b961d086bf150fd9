"""The reward-buffer writes, on SQLite and on Postgres."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import select

from loopgram import crud
from loopgram.db import Database
from loopgram.export import iter_feedback, write_export
from loopgram.feedback import Feedback, apply_feedback, reward_buffer_size
from loopgram.models import (
    InteractionStatus,
    PreferencePair,
    Rating,
    ReviewItem,
    ReviewStatus,
)
from tests.factories import add_interaction


def _ratings(db: Database) -> list[Rating]:
    return db.call(lambda *, session: list(session.exec(select(Rating)).all()))


def test_rating_is_stored_once_and_replaced(db: Database) -> None:
    iid = add_interaction(db)
    for _ in range(3):  # a redelivered task must not duplicate
        result = db.call(apply_feedback, feedback=Feedback(interaction_id=iid, user_id=7, value=1))
        assert result.stored
    db.call(
        apply_feedback, feedback=Feedback(interaction_id=iid, user_id=7, value=-1, reason="wrong")
    )
    ratings = _ratings(db)
    assert [(r.value, r.reason) for r in ratings] == [(-1, "wrong")]


def test_thumbs_down_flags_for_review_and_thumbs_up_withdraws(db: Database) -> None:
    iid = add_interaction(db)
    db.call(apply_feedback, feedback=Feedback(interaction_id=iid, user_id=7, value=-1))
    db.call(apply_feedback, feedback=Feedback(interaction_id=iid, user_id=7, value=-1, comment="x"))
    items = db.call(lambda *, session: list(session.exec(select(ReviewItem)).all()))
    assert [(i.reason, i.status) for i in items] == [("thumbs_down", ReviewStatus.pending)]
    db.call(apply_feedback, feedback=Feedback(interaction_id=iid, user_id=7, value=1))
    items = db.call(lambda *, session: list(session.exec(select(ReviewItem)).all()))
    assert items[0].status == ReviewStatus.withdrawn


def test_comment_keeps_reason_and_a_new_value_clears_both(db: Database) -> None:
    iid = add_interaction(db)
    db.call(
        apply_feedback, feedback=Feedback(interaction_id=iid, user_id=7, value=-1, reason="style")
    )
    db.call(
        apply_feedback,
        feedback=Feedback(interaction_id=iid, user_id=7, value=-1, comment="shorter"),
    )
    (rating,) = _ratings(db)
    assert (rating.reason, rating.comment) == ("style", "shorter")
    db.call(apply_feedback, feedback=Feedback(interaction_id=iid, user_id=7, value=1))
    (rating,) = _ratings(db)
    assert (rating.value, rating.reason, rating.comment) == (1, None, None)


def test_foreign_user_and_unknown_interaction_store_nothing(db: Database) -> None:
    iid = add_interaction(db, user_id=7)
    assert not db.call(
        apply_feedback, feedback=Feedback(interaction_id=iid, user_id=8, value=1)
    ).stored
    assert not db.call(
        apply_feedback, feedback=Feedback(interaction_id=99999, user_id=7, value=1)
    ).stored
    assert _ratings(db) == []


def test_rating_one_of_two_versions_records_a_preference_pair(db: Database) -> None:
    first = add_interaction(db, answer="first answer")
    second = add_interaction(db, parent=first, answer="second answer")
    result = db.call(apply_feedback, feedback=Feedback(interaction_id=second, user_id=7, value=1))
    assert result.pairs == 1
    pairs = db.call(lambda *, session: list(session.exec(select(PreferencePair)).all()))
    assert [(p.chosen, p.rejected, p.source) for p in pairs] == [
        ("second answer", "first answer", "regenerate")
    ]
    # Changing one's mind flips the pair instead of adding another.
    db.call(apply_feedback, feedback=Feedback(interaction_id=second, user_id=7, value=-1))
    pairs = db.call(lambda *, session: list(session.exec(select(PreferencePair)).all()))
    assert [(p.chosen, p.rejected) for p in pairs] == [("first answer", "second answer")]
    # The same verdict on both: no preference left.
    db.call(apply_feedback, feedback=Feedback(interaction_id=first, user_id=7, value=-1))
    pairs = db.call(lambda *, session: list(session.exec(select(PreferencePair)).all()))
    assert pairs == []
    assert db.call(reward_buffer_size) == {"pairs": 0, "ratings": 2}


def test_failed_regeneration_is_not_paired(db: Database) -> None:
    first = add_interaction(db)

    add_interaction(db, parent=first, answer="", status=InteractionStatus.failed)
    assert (
        db.call(apply_feedback, feedback=Feedback(interaction_id=first, user_id=7, value=1)).pairs
        == 0
    )


def test_concurrent_presses_leave_one_rating(db: Database) -> None:
    iid = add_interaction(db)

    def press(value: int) -> None:
        db.call(apply_feedback, feedback=Feedback(interaction_id=iid, user_id=7, value=value))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(press, [1, -1] * 6))
    assert len(_ratings(db)) == 1


def test_export_has_the_design_fields(db: Database) -> None:
    iid = add_interaction(db, answer="ответ")
    db.call(
        apply_feedback,
        feedback=Feedback(interaction_id=iid, user_id=7, value=-1, reason="wrong", comment="c"),
    )
    out = io.StringIO()
    with db.session() as session:
        assert write_export(iter_feedback(session=session), out, fmt="jsonl") == 1
    row = json.loads(out.getvalue())
    for field in (
        "interaction_id",
        "user_id",
        "chat_id",
        "assistant",
        "prompt",
        "answer",
        "rating",
        "reason",
        "comment",
        "created_at",
        "adapter",
    ):
        assert field in row
    assert (row["rating"], row["answer"], row["reason"]) == (-1, "ответ", "wrong")
    csv_out = io.StringIO()
    with db.session() as session:
        write_export(iter_feedback(session=session, assistant="other"), csv_out, fmt="csv")
    assert csv_out.getvalue().splitlines() == [",".join(row.keys())]


@pytest.mark.parametrize("value", [0, 2, -5])
def test_invalid_values_are_refused(value: int) -> None:
    with pytest.raises(ValueError):
        Feedback(interaction_id=1, user_id=1, value=value)


def test_dedup_of_updates(db: Database) -> None:
    assert db.call(crud.mark_update_processed, update_id=5)
    assert not db.call(crud.mark_update_processed, update_id=5)
    assert db.call(crud.mark_update_processed, update_id=6)


def test_roles_from_the_environment_are_audited_and_never_lowered(db: Database) -> None:
    from loopgram.models import AuditLog, Role

    user = db.call(crud.upsert_user, user_id=42, language="ru")
    assert user.role == Role.user
    user = db.call(crud.upsert_user, user_id=42, language="en", initial_role=Role.admin)
    assert (user.role, user.language) == (Role.admin, "en")
    user = db.call(crud.upsert_user, user_id=42, language="en", initial_role=Role.user)
    assert user.role == Role.admin
    logs = db.call(lambda *, session: list(session.exec(select(AuditLog)).all()))
    assert [(entry.action, entry.details["role"]) for entry in logs] == [
        ("role.bootstrap", "admin")
    ]


def test_first_updates_of_a_new_user_at_once(db: Database) -> None:
    def first_contact(i: int) -> None:
        db.call(crud.upsert_user, user_id=77, language="ru", first_name=f"n{i}")
        db.call(crud.get_or_create_chat, chat_id=77, chat_type="private")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(first_contact, range(12)))
    from loopgram.models import Chat, User

    assert len(db.call(lambda *, session: list(session.exec(select(User)).all()))) == 1
    assert len(db.call(lambda *, session: list(session.exec(select(Chat)).all()))) == 1


def test_any_message_of_an_answer_finds_it(db: Database) -> None:
    """Replies and reactions may be on any part of a long answer, not only the last."""
    long_answer = add_interaction(db, user_id=42)
    short_answer = add_interaction(db, user_id=42)
    db.call(crud.set_interaction_messages, interaction_id=long_answer, message_ids=[10, 11, 12])
    db.call(crud.set_interaction_messages, interaction_id=short_answer, message_ids=[14])

    def found(message_id: int) -> int | None:
        row = db.call(crud.interaction_by_message, chat_id=42, message_id=message_id)
        return row.id if row else None

    assert [found(m) for m in (9, 10, 11, 12, 13, 14, 15)] == [
        None,
        long_answer,
        long_answer,
        long_answer,
        None,  # the user's own message between the two answers
        short_answer,
        None,
    ]
    assert db.call(crud.interaction_by_message, chat_id=43, message_id=11) is None
