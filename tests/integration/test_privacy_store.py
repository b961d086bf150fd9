"""/forget and /export_me on the real databases (SQLite and Postgres): what goes, what stays
(anonymised), that other people's data is untouched, and that nothing cascades too far."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from datetime import timedelta
from typing import Any

from sqlmodel import Session, select

from loopgram import privacy
from loopgram.answering import add_answer_unless_forgotten
from loopgram.assistants.label import LabelResult
from loopgram.db import Database
from loopgram.export import iter_feedback, write_export
from loopgram.feedback import Feedback, apply_feedback_many
from loopgram.models import (
    AuditLog,
    Chat,
    Interaction,
    LabeledExample,
    PreferencePair,
    Rating,
    ReviewDecision,
    ReviewItem,
    Role,
    User,
    utcnow,
)
from loopgram.pii import scrub
from tests.privacy_data import (
    ANNA,
    ANNA_EMAIL,
    ANNA_GROUP_ANSWER,
    ANNA_GROUP_PROMPT,
    ANNA_PHONE,
    ANNA_PROMPT,
    BORIS,
    BORIS_PROMPT,
    CARD,
    GROUP,
    MOD,
    Ids,
    seed,
)
from training.datasets import build_preference_dataset, to_trl_rows


def _all(db: Database, model: Any) -> list[Any]:
    return db.call(lambda *, session: list(session.exec(select(model)).all()))


def test_forget_deletes_the_persons_data_and_nothing_else(db: Database) -> None:
    ids: Ids = db.call(seed)
    report = db.call(privacy.forget_user, user_id=ANNA)

    interactions = {i.id: i for i in _all(db, Interaction)}
    assert set(interactions) == {ids.boris_private, ids.boris_group}
    # Boris's group question kept its own text; Anna's turns in its history are gone.
    history = interactions[ids.boris_group].prompt_messages
    assert [m["content"] for m in history] == [
        "You are a helpful assistant.",
        privacy.REDACTED,
        privacy.REDACTED,
        "And what should I bring?",
    ]
    stored = json.dumps([(i.prompt, i.answer, i.prompt_messages) for i in interactions.values()])
    assert ANNA_GROUP_PROMPT not in stored and ANNA_GROUP_ANSWER not in stored
    ratings = _all(db, Rating)
    assert {(r.interaction_id, r.user_id) for r in ratings} == {
        (ids.boris_private, BORIS),
        (ids.boris_private, MOD),
    }
    assert [i.id for i in _all(db, ReviewItem)] == [ids.boris_item]
    assert _all(db, ReviewDecision) == []
    assert _all(db, LabeledExample) == []

    pairs = {p.id: p for p in _all(db, PreferencePair)}
    # The unconsumed pair of Anna's answers is gone; Boris's pair is untouched.
    assert set(pairs) == {ids.consumed_pair, ids.boris_pair}
    assert pairs[ids.boris_pair].prompt == BORIS_PROMPT and pairs[ids.boris_pair].user_id == MOD
    # The pair a run trained on survives (on Postgres the interaction FK would have cascaded
    # it away), cut from Anna and with her phone and e-mail scrubbed out.
    kept = pairs[ids.consumed_pair]
    assert kept.consumed_by_run == 1 and kept.user_id is None
    assert kept.rejected_interaction_id is None and kept.chosen_interaction_id is None
    assert kept.pair_key == f"forgotten:{kept.id}"
    text = kept.prompt + kept.chosen + kept.rejected
    assert ANNA_PHONE not in text and ANNA_EMAIL not in text
    assert "[PHONE]" in kept.prompt and "[EMAIL]" in kept.prompt

    users = {u.id for u in _all(db, User)}
    assert users == {BORIS, MOD}
    assert {c.id for c in _all(db, Chat)} == {BORIS, -100500}

    assert report.interactions == 3 and report.ratings == 2 and report.comments == 1
    assert (report.pairs_deleted, report.pairs_anonymised) == (1, 1)
    assert report.review_items == 1 and report.history_redacted == 1
    assert report.user_row == "deleted" and report.review_cards == (CARD,)
    audit = [a for a in _all(db, AuditLog) if a.action == "privacy.forget"]
    assert len(audit) == 1 and audit[0].actor_id == ANNA and audit[0].target_id == str(ANNA)
    assert audit[0].details["interactions"] == 3
    assert ANNA_EMAIL not in json.dumps(audit[0].details)

    # A second /forget finds nothing left and still records that it was asked.
    again = db.call(privacy.forget_user, user_id=ANNA)
    assert again.interactions == again.ratings == again.pairs_deleted == 0
    assert again.user_row == "absent"


def test_a_banned_user_stays_banned_and_a_moderator_keeps_the_role(db: Database) -> None:
    db.call(seed, anna_banned=True)
    db.call(privacy.forget_user, user_id=ANNA)
    anna = db.call(lambda *, session: session.get(User, ANNA))
    assert anna is not None and anna.banned
    assert anna.first_name is None and anna.username is None
    assert (
        db.call(
            lambda *, session: session.exec(
                select(Interaction).where(Interaction.user_id == ANNA)
            ).all()
        )
        == []
    )

    mia_before = db.call(lambda *, session: session.get(User, MOD))
    assert mia_before is not None
    report = db.call(privacy.forget_user, user_id=MOD)
    mia = db.call(lambda *, session: session.get(User, MOD))
    assert report.user_row == "kept" and mia is not None and mia.role == Role.moderator
    assert mia.first_name is None
    # Her review rating of Boris's answer is part of the moderation record and stays.
    assert any(r.user_id == MOD and r.source == "review" for r in _all(db, Rating))


def test_anonymised_pairs_still_build_a_dataset_without_personal_data(db: Database) -> None:
    db.call(seed)
    db.call(privacy.forget_user, user_id=ANNA)

    def build(*, session: Session) -> list[Any]:
        return build_preference_dataset(session=session, assistant="chat", include_consumed=True)

    examples = db.call(build)
    dumped = json.dumps(to_trl_rows(examples), ensure_ascii=False)
    assert "[PHONE]" in dumped  # the consumed pair is still there, scrubbed
    assert ANNA_PHONE not in dumped and ANNA_EMAIL not in dumped


def test_export_me_holds_the_persons_data_only(db: Database, tmp_path: Any) -> None:
    ids: Ids = db.call(seed)
    path = tmp_path / "export.json"
    result = db.call(privacy.export_user_to_file, user_id=ANNA, path=path)
    raw = path.read_text(encoding="utf-8")
    data = json.loads(raw)
    assert data["format"] == privacy.EXPORT_FORMAT and data["user_id"] == ANNA
    assert data["profile"]["first_name"] == "Anna" and data["profile"]["role"] == "user"
    assert [i["id"] for i in data["interactions"]] == [
        ids.anna_first,
        ids.anna_regenerated,
        ids.anna_group,
    ]
    first = data["interactions"][0]
    # The person's own data is given back as stored, not scrubbed.
    assert first["prompt"] == ANNA_PROMPT and first["answer"] == "A1"
    assert first["assistant"] == "chat" and first["created_at"].endswith("+00:00")
    assert {(r["interaction_id"], r["rating"]) for r in data["ratings"]} == {
        (ids.anna_first, -1),
        (ids.anna_regenerated, 1),
    }
    assert data["comments"] == [
        {
            "interaction_id": ids.anna_first,
            "comment": f"mail {ANNA_EMAIL}",
            "created_at": data["comments"][0]["created_at"],
        }
    ]
    for foreign in (BORIS_PROMPT, "tasty, thanks", "Boris", "And what should I bring?"):
        assert foreign not in raw
    assert (result.interactions, result.ratings, result.comments) == (3, 2, 1)
    assert result.size == path.stat().st_size
    assert any(a.action == "privacy.export" for a in _all(db, AuditLog))
    # Someone the bot never saw gets an empty but valid document.
    empty = db.call(privacy.export_user_to_file, user_id=424242, path=tmp_path / "e.json")
    nobody = json.loads((tmp_path / "e.json").read_text())
    assert nobody["profile"] is None and nobody["interactions"] == [] and empty.ratings == 0


def test_feedback_export_scrubs_personal_data(db: Database) -> None:
    ids: Ids = db.call(seed)

    def correct(*, session: Session) -> None:
        item = session.get(ReviewItem, ids.boris_item)
        assert item is not None
        item.status, item.correction = (
            "corrected",
            "Call +44 20 7946 0958, card 4111 1111 1111 1111",
        )
        session.add(item)
        rating = session.exec(select(Rating).where(Rating.user_id == BORIS)).one()
        rating.comment = "my token 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ ok"
        session.add(rating)

    db.call(correct)
    for fmt in ("jsonl", "csv"):
        out = io.StringIO()
        with db.session() as session:
            assert write_export(iter_feedback(session=session), out, fmt=fmt) == 4  # type: ignore[arg-type]
        text = out.getvalue()
        for secret in (ANNA_PHONE, ANNA_EMAIL, "7946 0958", "4111 1111", "AAHdqTcvCH1vGWJ"):
            assert secret not in text, (fmt, secret)
        for placeholder in ("[PHONE]", "[EMAIL]", "[CARD]", "[TOKEN]"):
            assert placeholder in text, (fmt, placeholder)
        assert "borscht" in text and "my token [TOKEN] ok" in text  # the prose around stays
    with db.session() as session:
        rows = list(iter_feedback(session=session))
        raw = list(iter_feedback(session=session, scrub_pii=False))
    assert all(scrub(r[k]) == r[k] for r in rows for k in ("prompt", "answer", "comment") if r[k])
    assert any(ANNA_PHONE in r["prompt"] for r in raw)  # the switch is real, not a no-op


def _late_answer() -> Interaction:
    return Interaction(chat_id=ANNA, user_id=ANNA, assistant="chat", prompt="late", answer="A")


def _annas_prompts(db: Database) -> list[str]:
    return sorted(i.prompt for i in _all(db, Interaction) if i.user_id == ANNA)


def test_an_answer_stored_while_a_forget_starts_is_deleted_by_it(db: Database) -> None:
    db.call(seed)
    asked_at = utcnow() - timedelta(seconds=5)
    forgot: list[privacy.ForgetReport] = []
    with Session(db.engine, expire_on_commit=False) as storing:
        # An answer is being stored (not committed yet) when Anna's forget begins.
        stored = add_answer_unless_forgotten(
            session=storing, interaction=_late_answer(), asked_at=asked_at, best_of_n=None
        )
        assert stored is not None
        forget = threading.Thread(
            target=lambda: forgot.append(db.call(privacy.forget_user, user_id=ANNA))
        )
        forget.start()
        forget.join(0.5)
        assert forget.is_alive()  # waits for the answer's transaction
        storing.commit()
    forget.join(10)
    assert forgot and forgot[0].interactions == 4
    assert _annas_prompts(db) == []


async def test_an_answer_finished_while_a_forget_runs_is_not_stored(db: Database) -> None:
    db.call(seed)
    asked_at = utcnow()
    with Session(db.engine, expire_on_commit=False) as forgetting:
        privacy.forget_user(session=forgetting, user_id=ANNA)
        # The answer to a question asked before the forget is finished before it commits.
        storing = asyncio.ensure_future(
            db.run_grouped(
                add_answer_unless_forgotten,
                interaction=_late_answer(),
                asked_at=asked_at,
                best_of_n=None,
            )
        )
        await asyncio.sleep(0.5)
        assert not storing.done()  # waits for the forget
        forgetting.commit()
    assert await asyncio.wait_for(storing, 10) is None
    assert _annas_prompts(db) == []
    # A question asked after the forget is answered and stored as usual.
    later = await db.run_grouped(
        add_answer_unless_forgotten, interaction=_late_answer(), asked_at=utcnow(), best_of_n=None
    )
    assert later is not None and _annas_prompts(db) == ["late"]


def test_a_label_thumbs_up_stored_while_a_forget_starts_is_deleted_by_it(db: Database) -> None:
    db.call(seed)

    def label_answer(*, session: Session) -> int:
        row = Interaction(
            chat_id=GROUP,
            user_id=ANNA,
            assistant="label",
            prompt="Anna's text to label, in the group",
            answer=LabelResult(label="request", confidence=0.9, reason="asks").canonical(),
        )
        session.add(row)
        session.flush()
        assert row.id is not None
        return row.id

    iid = db.call(label_answer)
    with Session(db.engine, expire_on_commit=False) as rating:
        # A worker is storing Anna's 👍 (it confirms her text as a label example) when her
        # forget begins.
        press = Feedback(interaction_id=iid, user_id=ANNA, value=1)
        assert apply_feedback_many(session=rating, feedbacks=[press])[0].stored
        forget = threading.Thread(target=lambda: db.call(privacy.forget_user, user_id=ANNA))
        forget.start()
        forget.join(0.5)
        rating.commit()
    forget.join(10)
    assert not forget.is_alive()
    texts = [e.text for e in _all(db, LabeledExample)]
    assert "Anna's text to label, in the group" not in texts
    assert [r for r in _all(db, Rating) if r.user_id == ANNA] == []
