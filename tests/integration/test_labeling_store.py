"""Label sets and confirmed labels in a real database (SQLite and Postgres): storing sets,
confirming and withdrawing labels (directly and through 👍/👎), picking few-shot neighbours;
plus group moderation's decisions and the review queue's idempotence."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import delete
from sqlmodel import Session, col, select

from loopgram import crud, labeling, review
from loopgram.assistants import Example
from loopgram.assistants.label import default_label_set, parse_label_list
from loopgram.assistants.moderate import ModerationAction, ModerationLabel, Verdict
from loopgram.db import Database
from loopgram.embeddings import get_embedder
from loopgram.feedback import Feedback, apply_feedback, apply_feedback_many
from loopgram.group_moderation import decide_action, needs_review
from loopgram.models import (
    AuditLog,
    Chat,
    Interaction,
    InteractionStatus,
    LabeledExample,
    LabelSet,
    Rating,
    ReviewItem,
    ReviewStatus,
)
from tests.factories import add_interaction
from tests.integration.test_feedback_many import OWNER, STRANGER

CHAT_ID = -100123
ADMIN = 42
ANSWER = '{"label": "question", "confidence": 0.9, "reason": ""}'
PROMPT = "How do I reset my password?"


def examples(db: Database) -> list[tuple[Any, ...]]:
    """Every confirmed example, comparable across databases and paths."""

    def read(*, session: Session) -> list[tuple[Any, ...]]:
        rows = session.exec(select(LabeledExample).order_by(col(LabeledExample.id))).all()
        return [
            (r.label_set_id, r.text, r.label, r.source, r.interaction_id, r.confirmed_by)
            for r in rows
        ]

    return db.call(read)


def audit(db: Database, action: str) -> list[AuditLog]:
    def read(*, session: Session) -> list[AuditLog]:
        query = select(AuditLog).where(AuditLog.action == action).order_by(col(AuditLog.id))
        return list(session.exec(query).all())

    return db.call(read)


def new_set(db: Database, text: str = "bug, feature: asks for something new, question") -> int:
    """A stored label set (not assigned to any chat); returns its id."""
    row = db.call(labeling.save_label_set, chat=None, spec=parse_label_list(text), actor_id=ADMIN)
    assert row.id is not None
    return row.id


# ------------------------------------------------------------------------------ label sets


def test_a_chat_without_its_own_set_uses_the_default(db: Database) -> None:
    with db.session() as session:
        chat = crud.get_or_create_chat(session=session, chat_id=CHAT_ID, chat_type="group")
        row, spec = labeling.chat_label_set(session=session, chat=chat)
        assert row is None
        assert spec == default_label_set()
        assert spec.names == ["question", "complaint", "praise", "request", "other"]


def test_save_label_set_makes_it_the_chats(db: Database) -> None:
    spec = parse_label_list("Bug: something is broken, feature, question")
    with db.session() as session:
        chat = crud.get_or_create_chat(session=session, chat_id=CHAT_ID, chat_type="group")
        row = labeling.save_label_set(session=session, chat=chat, spec=spec, actor_id=ADMIN)
        set_id = row.id
    assert set_id is not None
    with db.session() as session:
        chat = session.get(Chat, CHAT_ID)
        assert chat is not None and chat.label_set_id == set_id
        row, loaded = labeling.chat_label_set(session=session, chat=chat)
        assert row is not None and row.id == set_id
        assert row.chat_id == CHAT_ID and row.created_by == ADMIN and row.name == "custom"
        assert row.labels == [
            {"name": "bug", "description": "something is broken"},
            {"name": "feature", "description": ""},
            {"name": "question", "description": ""},
        ]
        assert loaded == spec
        assert labeling.current_spec(session=session, chat_id=CHAT_ID, chat_type="group") == spec
    [entry] = audit(db, "labels.define")
    assert (entry.actor_id, entry.target_type, entry.target_id) == (ADMIN, "chat", str(CHAT_ID))
    assert entry.details == {"label_set_id": set_id, "labels": ["bug", "feature", "question"]}


def test_save_label_set_without_a_chat(db: Database) -> None:
    set_id = new_set(db)
    [entry] = audit(db, "labels.define")
    assert (entry.target_type, entry.target_id) == ("label_set", str(set_id))
    with db.session() as session:
        row = session.get(LabelSet, set_id)
        assert row is not None and row.chat_id is None
        assert labeling.spec_of(row).names == ["bug", "feature", "question"]


def test_assign_a_set_then_back_to_the_default(db: Database) -> None:
    first = parse_label_list("bug, feature")
    second = parse_label_list("spam, ham, eggs")
    assigned = db.call(
        labeling.assign_label_set, chat_id=CHAT_ID, chat_type="group", spec=first, actor_id=ADMIN
    )
    assert assigned == first
    with db.session() as session:
        chat = session.get(Chat, CHAT_ID)
        assert chat is not None
        first_id = chat.label_set_id
    assert first_id is not None

    # A new set is a new row: the old one is kept unchanged for the examples under it.
    db.call(labeling.assign_label_set, chat_id=CHAT_ID, chat_type="group", spec=second, actor_id=7)
    spec = db.call(labeling.current_spec, chat_id=CHAT_ID, chat_type="group")
    assert spec == second
    with db.session() as session:
        chat = session.get(Chat, CHAT_ID)
        assert chat is not None and chat.label_set_id not in (None, first_id)
        old = session.get(LabelSet, first_id)
        assert old is not None and labeling.spec_of(old) == first

    back = db.call(
        labeling.assign_label_set, chat_id=CHAT_ID, chat_type="group", spec=None, actor_id=ADMIN
    )
    assert back == default_label_set()
    assert db.call(labeling.current_spec, chat_id=CHAT_ID, chat_type="group") == back
    with db.session() as session:
        chat = session.get(Chat, CHAT_ID)
        assert chat is not None and chat.label_set_id is None
    [entry] = audit(db, "labels.default")
    assert (entry.actor_id, entry.target_type, entry.target_id) == (ADMIN, "chat", str(CHAT_ID))
    assert len(audit(db, "labels.define")) == 2


def test_assign_creates_the_chat_when_it_is_new(db: Database) -> None:
    spec = parse_label_list("yes please, no thanks")
    db.call(labeling.assign_label_set, chat_id=555, chat_type="private", spec=spec, actor_id=555)
    with db.session() as session:
        chat = session.get(Chat, 555)
        assert chat is not None and chat.type == "private"
        assert labeling.chat_label_set(session=session, chat=chat)[1] == spec


# --------------------------------------------------------------------- confirmed labels


def test_confirm_label_is_one_row_per_set_and_text(db: Database) -> None:
    set_id = new_set(db)
    first = db.call(
        labeling.confirm_label,
        label_set_id=set_id,
        text="The app crashes on start",
        label="bug",
        source="user",
        confirmed_by=1,
    )
    again = db.call(
        labeling.confirm_label,
        label_set_id=set_id,
        text="  the APP crashes\non start ",  # the same text, other case and spacing
        label="question",
        source="review",
        confirmed_by=2,
    )
    assert again.id == first.id
    # The latest word wins; the text stays as first written.
    assert examples(db) == [(set_id, "The app crashes on start", "question", "review", None, 2)]
    # Confirming the very same label again changes nothing.
    db.call(
        labeling.confirm_label,
        label_set_id=set_id,
        text="The app crashes on start",
        label="question",
        source="review",
        confirmed_by=2,
    )
    assert len(examples(db)) == 1


def test_confirm_label_keeps_sets_apart(db: Database) -> None:
    set_a, set_b = new_set(db), new_set(db, "bug, other")
    text = "The app crashes on start"
    for set_id, label in ((set_a, "bug"), (set_b, "other"), (None, "complaint")):
        db.call(labeling.confirm_label, label_set_id=set_id, text=text, label=label, source="gold")
    # None (the default set) is a set of its own, and is idempotent too.
    db.call(labeling.confirm_label, label_set_id=None, text=text, label="question", source="gold")
    got = {(e[0], e[2]) for e in examples(db)}
    assert got == {(set_a, "bug"), (set_b, "other"), (None, "question")}
    with db.session() as session:
        only_a = labeling.confirmed_examples(session=session, label_set_id=set_a)
        default = labeling.confirmed_examples(session=session, label_set_id=None)
    assert [e.label for e in only_a] == ["bug"]
    assert [e.label for e in default] == ["question"]


def test_confirmed_examples_newest_first_and_limited(db: Database) -> None:
    set_id = new_set(db)
    for i in range(5):
        db.call(
            labeling.confirm_label,
            label_set_id=set_id,
            text=f"item number {i}",
            label="bug",
            source="gold",
        )
    with db.session() as session:
        rows = labeling.confirmed_examples(session=session, label_set_id=set_id, limit=3)
    assert [r.text for r in rows] == ["item number 4", "item number 3", "item number 2"]


def test_withdraw_label_removes_only_user_examples(db: Database) -> None:
    iid = add_interaction(db, assistant="label", prompt="one", answer=ANSWER)
    other = add_interaction(db, assistant="label", prompt="two", answer=ANSWER)
    for text, source, interaction in (
        ("from the user", "user", iid),
        ("from a reviewer", "review", iid),
        ("from a gold file", "gold", iid),
        ("another answer's", "user", other),
    ):
        db.call(
            labeling.confirm_label,
            label_set_id=None,
            text=text,
            label="question",
            source=source,
            interaction_id=interaction,
        )
    assert db.call(labeling.withdraw_label, interaction_id=iid) == 1
    assert {e[1] for e in examples(db)} == {
        "from a reviewer",
        "from a gold file",
        "another answer's",
    }
    assert db.call(labeling.withdraw_label, interaction_id=iid) == 0  # idempotent


# ------------------------------------------------------------------- nearest_examples

QUERY = "the app crashes when I open the settings page"


def test_nearest_examples_pick_the_closest_confirmed_items(db: Database) -> None:
    set_id = new_set(db, "complaint, question, praise")
    items = [
        ("the app crashes when I open the settings page on my phone", "complaint"),
        ("the app crashes when I open the profile page", "complaint"),
        ("how do I change my password", "question"),
        ("thank you for the great app", "praise"),
        ("The app crashes when I open the  settings page", "question"),  # the item itself
        ("the app crashes when I open the settings page!!", "bug"),  # not in the set
    ]
    for text, label in items:
        db.call(labeling.confirm_label, label_set_id=set_id, text=text, label=label, source="gold")
    with db.session() as session:
        confirmed = labeling.confirmed_examples(session=session, label_set_id=set_id)
    embedder = get_embedder("hashing")
    labels = ["complaint", "question", "praise"]

    picked = labeling.nearest_examples(embedder, QUERY, confirmed, labels=labels, k=2)
    assert picked == [
        Example(
            "the app crashes when I open the profile page",
            '{"label": "complaint", "confidence": 1.0, "reason": ""}',
        ),
        # The most similar comes last, right before the item itself.
        Example(
            "the app crashes when I open the settings page on my phone",
            '{"label": "complaint", "confidence": 1.0, "reason": ""}',
        ),
    ]
    everything = labeling.nearest_examples(embedder, QUERY, confirmed, labels=labels, k=10)
    shown = [e.user for e in everything]
    assert len(shown) == 4
    assert "The app crashes when I open the  settings page" not in shown
    assert "the app crashes when I open the settings page!!" not in shown
    assert shown[-2:] == [p.user for p in picked]
    for example in everything:
        assert json.loads(example.assistant)["label"] in labels
    assert labeling.nearest_examples(embedder, QUERY, confirmed, labels=labels, k=0) == []
    assert labeling.nearest_examples(embedder, QUERY, confirmed, labels=["spam"], k=3) == []
    assert labeling.nearest_examples(embedder, QUERY, [], labels=labels, k=3) == []


# ------------------------------------------------- 👍/👎 on label answers (both paths)

Apply = Callable[[Database, Feedback], None]


def one_by_one(db: Database, feedback: Feedback) -> None:
    db.call(apply_feedback, feedback=feedback)


def batched(db: Database, feedback: Feedback) -> None:
    db.call(apply_feedback_many, feedbacks=[feedback])


PATHS = pytest.mark.parametrize("apply", [one_by_one, batched], ids=["single", "many"])


def label_interaction(
    db: Database,
    *,
    answer: str = ANSWER,
    assistant: str = "label",
    label_set_id: int | None = None,
    status: InteractionStatus = InteractionStatus.ok,
    prompt: str = PROMPT,
) -> int:
    with db.session() as session:
        row = Interaction(
            chat_id=OWNER,
            user_id=OWNER,
            assistant=assistant,
            prompt=prompt,
            answer=answer,
            status=status,
            label_set_id=label_set_id,
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id


@PATHS
def test_thumbs_up_confirms_and_thumbs_down_withdraws(db: Database, apply: Apply) -> None:
    iid = label_interaction(db)
    apply(db, Feedback(interaction_id=iid, user_id=OWNER, value=1))
    assert examples(db) == [(None, PROMPT, "question", "user", iid, OWNER)]
    apply(db, Feedback(interaction_id=iid, user_id=OWNER, value=1))  # pressed again
    assert len(examples(db)) == 1
    apply(db, Feedback(interaction_id=iid, user_id=OWNER, value=-1, reason="wrong"))
    assert examples(db) == []
    apply(db, Feedback(interaction_id=iid, user_id=OWNER, value=1))  # and back
    assert examples(db) == [(None, PROMPT, "question", "user", iid, OWNER)]


@PATHS
def test_thumbs_up_under_a_chat_set(db: Database, apply: Apply) -> None:
    set_id = new_set(db, "question, bug")
    iid = label_interaction(db, label_set_id=set_id, answer='{"label": "Bug", "confidence": 0.7}')
    apply(db, Feedback(interaction_id=iid, user_id=OWNER, value=1))
    assert examples(db) == [(set_id, PROMPT, "bug", "user", iid, OWNER)]


@PATHS
def test_thumbs_up_from_someone_else_does_nothing(db: Database, apply: Apply) -> None:
    iid = label_interaction(db)
    apply(db, Feedback(interaction_id=iid, user_id=STRANGER, value=1))
    assert examples(db) == []
    # Nor does their 👎 withdraw the asker's confirmation.
    apply(db, Feedback(interaction_id=iid, user_id=OWNER, value=1))
    apply(db, Feedback(interaction_id=iid, user_id=STRANGER, value=-1))
    assert examples(db) == [(None, PROMPT, "question", "user", iid, OWNER)]


@PATHS
@pytest.mark.parametrize(
    "kwargs",
    [
        {"assistant": "chat"},  # the same JSON, but not a label answer
        {"assistant": "moderate"},
        {"status": InteractionStatus.failed},  # a failed label answer
        {"answer": "I think it is a question."},  # no JSON: nothing to confirm
        {"answer": '{"label": "question", "confidence": 7}'},  # invalid JSON
    ],
)
def test_thumbs_up_on_other_answers_does_nothing(
    db: Database, apply: Apply, kwargs: dict[str, Any]
) -> None:
    iid = label_interaction(db, **kwargs)
    apply(db, Feedback(interaction_id=iid, user_id=OWNER, value=1))
    assert examples(db) == []


def test_both_paths_leave_the_same_examples(db: Database) -> None:
    """A sequence of presses on several answers, applied one by one and as one batch."""
    states = []
    for path in ("single", "many"):
        with db.session() as session:
            for table in (LabeledExample, ReviewItem, Rating, Interaction):
                session.execute(delete(table))
        ids = [
            label_interaction(db, prompt="first item"),
            label_interaction(
                db, prompt="second item", answer='{"label": "other", "confidence": 0}'
            ),
            label_interaction(db, prompt="third item", assistant="chat"),
            label_interaction(db, prompt="fourth item"),
        ]
        a, b, c, d = ids
        presses = [
            Feedback(interaction_id=a, user_id=OWNER, value=1),
            Feedback(interaction_id=b, user_id=OWNER, value=-1),
            Feedback(interaction_id=b, user_id=OWNER, value=1),  # changes their mind: 👍
            Feedback(interaction_id=c, user_id=OWNER, value=1),
            Feedback(interaction_id=d, user_id=OWNER, value=1),
            Feedback(interaction_id=d, user_id=OWNER, value=-1),  # ...and here to 👎
            Feedback(interaction_id=a, user_id=STRANGER, value=-1),
        ]
        if path == "single":
            results = [db.call(apply_feedback, feedback=press) for press in presses]
        else:
            results = db.call(apply_feedback_many, feedbacks=presses)
        assert [r.stored for r in results] == [True] * 6 + [False]
        states.append(
            [(e[1], e[2], e[3], ids.index(e[4]), e[5]) for e in examples(db)]  # ids differ
        )
    assert states[0] == states[1]
    assert states[0] == [
        ("first item", "question", "user", 0, OWNER),
        ("second item", "other", "user", 1, OWNER),
    ]


def test_a_users_change_of_mind_keeps_a_reviewers_label(db: Database) -> None:
    db.call(
        labeling.confirm_label,
        label_set_id=None,
        text=PROMPT,
        label="question",
        source="review",
        confirmed_by=ADMIN,
    )
    iid = label_interaction(db)
    db.call(apply_feedback, feedback=Feedback(interaction_id=iid, user_id=OWNER, value=1))
    db.call(apply_feedback, feedback=Feedback(interaction_id=iid, user_id=OWNER, value=-1))
    assert [(e[1], e[2]) for e in examples(db)] == [(PROMPT, "question")]


# ---------------------------------------------------------------- group moderation rules


def verdict(label: str, confidence: float) -> Verdict:
    return Verdict(
        label=ModerationLabel(label),
        confidence=confidence,
        reason="r",
        action=ModerationAction.review,
    )


@pytest.mark.parametrize(
    ("label", "confidence", "chat_action", "threshold", "expected"),
    [
        ("spam", 0.95, "delete", 0.9, "delete"),
        ("spam", 0.9, "delete", 0.9, "delete"),  # at the threshold
        ("spam", 0.89, "delete", 0.9, "none"),  # below it
        ("abuse", 0.99, "warn", 0.9, "warn"),
        ("threat", 1.0, "none", 0.5, "none"),  # the chat chose no automatic action
        ("adult", 0.99, "review", 0.5, "none"),  # not an action the bot takes alone
        ("other", 0.7, "warn", 0.6, "warn"),
        ("ok", 1.0, "delete", 0.5, "none"),  # harmless, however sure
        ("ok", 0.2, "warn", 0.1, "none"),
    ],
)
def test_decide_action(
    label: str, confidence: float, chat_action: str, threshold: float, expected: str
) -> None:
    chat = Chat(id=1, type="group", moderation_action=chat_action, moderation_threshold=threshold)
    assert decide_action(chat, verdict(label, confidence)) == expected


@pytest.mark.parametrize(
    ("label", "confidence", "low", "expected"),
    [
        ("ok", 0.95, 0.6, False),
        ("ok", 0.6, 0.6, False),  # at the bar: sure enough
        ("ok", 0.59, 0.6, True),  # unsure
        ("spam", 0.99, 0.6, True),  # harmful: always a moderator's look
        ("abuse", 0.1, 0.6, True),
        ("other", 1.0, 0.0, True),
        ("ok", 0.0, 0.0, False),
    ],
)
def test_needs_review(label: str, confidence: float, low: float, expected: bool) -> None:
    assert needs_review(verdict(label, confidence), low_confidence=low) is expected


# ------------------------------------------------------------------------- review queue


def test_flag_is_idempotent_per_answer_and_reason(db: Database) -> None:
    iid = add_interaction(db, assistant="moderate", answer='{"label": "spam"}')
    first = db.call(review.flag, interaction_id=iid, reason=review.MODERATION, note="spam 0.95")
    again = db.call(review.flag, interaction_id=iid, reason=review.MODERATION, note="changed")
    assert again.id == first.id
    assert again.note == "spam 0.95"  # the first flag stands
    other = db.call(review.flag, interaction_id=iid, reason=review.LOW_CONFIDENCE, note="x" * 600)
    assert other.id != first.id
    with db.session() as session:
        items = session.exec(select(ReviewItem).order_by(col(ReviewItem.id))).all()
        assert [(i.interaction_id, i.reason, i.status) for i in items] == [
            (iid, "moderation", ReviewStatus.pending),
            (iid, "low_confidence", ReviewStatus.pending),
        ]
        assert items[1].note == "x" * 512
        assert review.pending_count(session=session) == 2


def test_flag_without_a_note(db: Database) -> None:
    iid = add_interaction(db)
    item = db.call(review.flag, interaction_id=iid, reason=review.MODERATION)
    assert item.note is None and item.status == ReviewStatus.pending
