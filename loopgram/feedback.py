"""Ratings, regenerate choices and review flags: the writes that fill the reward buffer.

Everything here is idempotent: the same feedback applied twice leaves one row, so a task
that is redelivered (acks_late) or replayed from the spool is harmless. And the order does
not matter: a press older (`pressed_at`) than the one stored changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, any_, bindparam, delete, func, text, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, SQLModel, col, select

from loopgram import crud, labeling, privacy
from loopgram.assistants.label import LabelResult
from loopgram.assistants.structured import InvalidOutput, parse_structured
from loopgram.db import ID_MAX, ID_MIN
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
    """One rating event. `reason`/`comment` None means "leave as stored".

    `pressed_at`: when the bot received the press (UTC). The order of the presses: the
    update_id is not one (Telegram restarts it at random after a week without updates).
    None (producers that do not stamp, messages queued before stamps): applied as the latest.
    """

    interaction_id: int
    user_id: int
    value: int
    reason: str | None = None
    comment: str | None = None
    source: str = "button"
    update_id: int | None = None
    pressed_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.value not in (1, -1):
            raise ValueError(f"rating value must be +1 or -1, got {self.value!r}")
        if self.reason is not None and self.reason not in REASONS:
            raise ValueError(f"unknown reason {self.reason!r}")
        if self.pressed_at is not None:
            if self.pressed_at.tzinfo is None:  # a naive time cannot be ordered with the rest
                raise ValueError("pressed_at must carry a time zone")
            object.__setattr__(self, "pressed_at", self.pressed_at.astimezone(UTC))

    def to_payload(self) -> dict[str, Any]:
        # By hand: `dataclasses.asdict` deep-copies every field (a third of a press's cost
        # in the bot when ratings are published by the hundred).
        return {
            "interaction_id": self.interaction_id,
            "user_id": self.user_id,
            "value": self.value,
            "reason": self.reason,
            "comment": self.comment,
            "source": self.source,
            "update_id": self.update_id,
            "pressed_at": None if self.pressed_at is None else self.pressed_at.isoformat(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Feedback:
        fields: dict[str, Any] = {k: payload[k] for k in cls.__dataclass_fields__ if k in payload}
        # A task payload is just data: an id that is not a 64-bit int, or text that is not a
        # string, would fail the whole batch it came in (requeued again and again), not itself.
        for name in ("interaction_id", "user_id"):
            value = fields.get(name)
            if type(value) is not int or not ID_MIN <= value <= ID_MAX:
                raise ValueError(f"{name} must be a 64-bit integer, got {value!r}")
        for name in ("reason", "comment", "source"):
            if name in fields and not isinstance(fields[name], str | None):
                raise ValueError(f"{name} must be a string, got {type(fields[name]).__name__}")
        stamp = fields.get("pressed_at")
        if stamp is not None:
            if not isinstance(stamp, str):
                raise ValueError(f"pressed_at must be an ISO 8601 string, got {stamp!r}")
            fields["pressed_at"] = datetime.fromisoformat(stamp)
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
    if rating is None:
        return _stale(feedback)
    flagged = _sync_review_flag(session, interaction, rating)
    pairs = _sync_regenerate_pairs(session, interaction, rating)
    sync_confirmed_labels(session=session, feedbacks=[feedback])
    return FeedbackResult(stored=True, rating_id=rating.id, pairs=pairs, flagged=flagged)


def sync_confirmed_labels(*, session: Session, feedbacks: Sequence[Feedback]) -> int:
    """A 👍 on a label answer confirms the label (a few-shot example from then on); a 👎
    on it withdraws that person's confirmation. Returns how many examples changed."""
    final = {f.interaction_id: f for f in feedbacks}  # the last press per answer wins
    if not final:
        return 0
    rows = session.exec(
        select(Interaction).where(
            col(Interaction.id).in_(list(final)), Interaction.assistant == "label"
        )
    ).all()
    changed = 0
    for interaction in rows:
        press = final[interaction.id or 0]
        if press.user_id != interaction.user_id or interaction.status != InteractionStatus.ok:
            continue
        if press.value > 0:
            try:
                result = parse_structured(interaction.answer, LabelResult)
            except InvalidOutput:
                continue
            labeling.confirm_label(
                session=session,
                label_set_id=interaction.label_set_id,
                text=interaction.prompt,
                label=result.label,
                source="user",
                interaction_id=interaction.id,
                confirmed_by=press.user_id,
            )
            changed += 1
        else:
            changed += labeling.withdraw_label(session=session, interaction_id=interaction.id or 0)
    return changed


def _is_stale(stored: datetime | None, feedback: Feedback) -> bool:
    """Pressed before the press already stored: applying it would undo a newer one."""
    if stored is None or feedback.pressed_at is None:
        return False
    if stored.tzinfo is None:  # SQLite gives the stored UTC time back without its zone
        stored = stored.replace(tzinfo=UTC)
    return feedback.pressed_at < stored


def _stale(feedback: Feedback) -> FeedbackResult:
    # Expected (a redelivered message, a retried batch, two workers): not a warning.
    log.info(
        "feedback.stale_press interaction_id=%s user_id=%s pressed_at=%s",
        feedback.interaction_id,
        feedback.user_id,
        feedback.pressed_at,
    )
    return FeedbackResult(stored=False, note="stale press")


def _upsert_rating(session: Session, feedback: Feedback) -> Rating | None:
    """The stored rating after the press; None if the press is older than the stored one."""
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
            reason=feedback.reason,
            comment=feedback.comment,
            pressed_at=feedback.pressed_at,
        )
        try:
            with session.begin_nested():
                session.add(rating)
                session.flush()
            # Inserted complete: no second UPDATE (the common case, one statement less).
            return rating
        except IntegrityError:
            # A concurrent worker inserted the same (interaction, user) first.
            rating = session.exec(query).one()
    if _is_stale(rating.pressed_at, feedback):
        return None
    _merge_press(rating, feedback)
    rating.updated_at = utcnow()
    session.add(rating)
    session.flush()
    return rating


def _merge_press(rating: Rating | _RatingRow, feedback: Feedback) -> None:
    """A new press on a rated answer: a changed verdict drops the old reason and comment."""
    if rating.value != feedback.value:
        rating.reason = None
        rating.comment = None
    rating.value = feedback.value
    rating.source = feedback.source
    if feedback.reason is not None:
        rating.reason = feedback.reason
    if feedback.comment is not None:
        rating.comment = feedback.comment
    if feedback.pressed_at is not None:  # an unstamped press keeps the newest stamp seen
        rating.pressed_at = feedback.pressed_at


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
                            assistant=interaction.assistant,
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


# --- Many ratings in one transaction -------------------------------------------------------
#
# `apply_feedback_many` gives exactly the result of `apply_feedback` called once per item, in
# order (later presses by the same user win), but with a handful of statements per batch
# instead of ~8 ORM round trips per rating: it reads what the batch touches (interactions,
# their regenerate siblings, ratings, review flags, pairs) in one SELECT each, replays the
# batch in memory with the same rules, and writes the end state set-based (one upsert of the
# ratings; review flags and pairs only where something changed).

_RATING = SQLModel.metadata.tables["rating"]
_INTERACTION = SQLModel.metadata.tables["interaction"]
_REVIEW = SQLModel.metadata.tables["review_item"]
_PAIR = SQLModel.metadata.tables["preference_pair"]
_CHUNK = 500  # rows per multi-row statement (SQLite allows 32,766 bound parameters)
WITHDRAWN_NOTE = "user changed the rating to +1"


@dataclass(frozen=True)
class _Answer:
    id: int
    user_id: int
    parent_id: int | None
    status: str
    assistant: str
    prompt: str
    answer: str


@dataclass
class _RatingRow:
    value: int
    source: str
    reason: str | None
    comment: str | None
    pressed_at: datetime | None = None
    id: int | None = None
    dirty: bool = False


@dataclass
class _ReviewRow:
    status: str
    note: str | None
    id: int | None = None  # None: created by this batch
    dirty: bool = False


@dataclass
class _PairRow:
    assistant: str
    prompt: str
    chosen: str
    rejected: str
    chosen_id: int | None
    rejected_id: int | None
    user_id: int | None
    consumed: bool = False
    in_db: bool = False  # the row exists in the database right now (before the writes)
    fresh: bool = False  # created by this batch (after a delete, if it existed)
    dirty: bool = False


@dataclass
class _BatchState:
    answers: dict[int, _Answer]
    ratings: dict[tuple[int, int], _RatingRow]
    reviews: dict[int, _ReviewRow]
    pairs: dict[str, _PairRow | None]  # None: known not to exist (or deleted by the batch)
    deleted_pairs: set[str]
    groups: dict[int, list[_Answer]] = field(default_factory=dict)  # by root: ok answers

    def index_groups(self) -> None:
        """Group the loaded answers by their root once (they do not change in a batch)."""
        self.groups = {}
        for a in sorted(self.answers.values(), key=lambda a: a.id):
            if a.status == InteractionStatus.ok:
                # An answer is the root of its own group and a member of its parent's.
                self.groups.setdefault(a.id, []).append(a)
                if a.parent_id is not None:
                    self.groups.setdefault(a.parent_id, []).append(a)

    def group(self, answer: _Answer) -> list[_Answer]:
        """`crud.siblings` filtered to ok answers, from the loaded rows."""
        return self.groups.get(answer.parent_id or answer.id, [])


def apply_feedback_many(*, session: Session, feedbacks: Sequence[Feedback]) -> list[FeedbackResult]:
    """`apply_feedback` for each item in order, as a few set-based statements.

    One result per feedback, in order. On PostgreSQL the batch's interactions are locked
    (FOR NO KEY UPDATE, in id order) so two workers applying batches that touch the same
    answer do so one after the other, each seeing the other's end state.
    """
    if not feedbacks:
        return []
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return [apply_feedback(session=session, feedback=f) for f in feedbacks]
    conn = session.connection()
    if dialect == "postgresql":
        # Plan each statement with its arrays in hand: a generic plan of `= ANY($1)` cannot
        # hash the array and, on a table without statistics yet (a new deployment), compares
        # every row with every element (a 1000-rating batch took 100+ ms for one SELECT).
        conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
    # A /forget running now is waited for (its answers are then gone: nothing is stored),
    # and one starting now waits for this batch, then deletes what it stored: a 👍 on a
    # label answer confirms an example of the person's text that must not outlive them.
    privacy.lock_people(session, {f.user_id for f in feedbacks}, exclusive=False)
    state = _load_state(conn, dialect, feedbacks)
    results: list[tuple[FeedbackResult, tuple[int, int] | None]] = []
    for feedback in feedbacks:
        results.append(_replay_one(state, feedback))
    ids = _write_state(conn, dialect, state)
    labels = [
        f
        for f, (r, _) in zip(feedbacks, results, strict=True)
        if r.stored and state.answers[f.interaction_id].assistant == "label"
    ]
    if labels:  # only label answers confirm labels: no query for the others
        sync_confirmed_labels(session=session, feedbacks=labels)
    return [
        result if key is None else replace(result, rating_id=ids.get(key))
        for result, key in results
    ]


def _among(column: Any, values: Sequence[int], dialect: str) -> ColumnElement[bool]:
    """`column IN values`; on PostgreSQL `= ANY(<one array parameter>)`, so the statement text
    is the same for every batch size (no 500-placeholder SQL to build and parse)."""
    if dialect == "postgresql":
        array = bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        return column == any_(array)  # type: ignore[no-any-return]
    return column.in_(list(values))  # type: ignore[no-any-return]


def _load_state(conn: Connection, dialect: str, feedbacks: Sequence[Feedback]) -> _BatchState:
    a = _INTERACTION.c
    columns = (a.id, a.user_id, a.parent_interaction_id, a.status, a.assistant, a.prompt, a.answer)
    wanted = sorted({f.interaction_id for f in feedbacks})
    query = sa_select(*columns).where(_among(a.id, wanted, dialect)).order_by(a.id)
    if dialect == "postgresql":
        query = query.with_for_update(key_share=True)
    answers = {row[0]: _Answer(*row) for row in conn.execute(query)}
    roots = sorted({x.parent_id or x.id for x in answers.values()})
    if roots:
        # The other members of their regenerate groups: the roots not loaded yet, and the
        # roots' children (none for most answers: this usually returns no row).
        missing = [r for r in roots if r not in answers]
        among = _among(a.parent_interaction_id, roots, dialect)
        if missing:
            among = among | _among(a.id, missing, dialect)
        for row in conn.execute(sa_select(*columns).where(among)):
            answers.setdefault(row[0], _Answer(*row))
    state = _BatchState(answers=answers, ratings={}, reviews={}, pairs={}, deleted_pairs=set())
    state.index_groups()
    valid = [
        f for f in feedbacks if (x := answers.get(f.interaction_id)) and x.user_id == f.user_id
    ]
    if not valid:
        return state

    users = sorted({f.user_id for f in valid})
    r = _RATING.c
    for rated in conn.execute(
        # The stored press times come with the ratings: a stale press is known without a query.
        sa_select(
            r.id, r.interaction_id, r.user_id, r.value, r.source, r.reason, r.comment, r.pressed_at
        ).where(
            _among(r.interaction_id, sorted(answers), dialect), _among(r.user_id, users, dialect)
        )
    ):
        state.ratings[(rated.interaction_id, rated.user_id)] = _RatingRow(
            value=rated.value,
            source=rated.source,
            reason=rated.reason,
            comment=rated.comment,
            pressed_at=rated.pressed_at,
            id=rated.id,
        )

    v = _REVIEW.c
    for item in conn.execute(
        sa_select(v.id, v.interaction_id, v.status, v.note).where(
            _among(v.interaction_id, sorted({f.interaction_id for f in valid}), dialect),
            v.reason == THUMBS_DOWN_REVIEW_REASON,
        )
    ):
        state.reviews[item.interaction_id] = _ReviewRow(
            status=item.status, note=item.note, id=item.id
        )

    keys: set[str] = set()
    for f in valid:
        answer = answers[f.interaction_id]
        group = state.group(answer)
        if len(group) >= 2:
            keys.update(_pair_key(answer.id, o.id) for o in group if o.id != answer.id)
    if keys:
        p = _PAIR.c
        state.pairs = dict.fromkeys(keys)
        for pair in conn.execute(
            sa_select(
                p.pair_key,
                p.assistant,
                p.prompt,
                p.chosen,
                p.rejected,
                p.chosen_interaction_id,
                p.rejected_interaction_id,
                p.user_id,
                p.consumed_by_run,
            ).where(p.pair_key.in_(sorted(keys)))
        ):
            state.pairs[pair.pair_key] = _PairRow(
                assistant=pair.assistant,
                prompt=pair.prompt,
                chosen=pair.chosen,
                rejected=pair.rejected,
                chosen_id=pair.chosen_interaction_id,
                rejected_id=pair.rejected_interaction_id,
                user_id=pair.user_id,
                consumed=pair.consumed_by_run is not None,
                in_db=True,
            )
    return state


def _replay_one(
    state: _BatchState, feedback: Feedback
) -> tuple[FeedbackResult, tuple[int, int] | None]:
    """The rules of `apply_feedback` on the in-memory state."""
    answer = state.answers.get(feedback.interaction_id)
    if answer is None:
        log.warning("feedback.unknown_interaction interaction_id=%s", feedback.interaction_id)
        return FeedbackResult(stored=False, note="unknown interaction"), None
    if answer.user_id != feedback.user_id:
        log.warning(
            "feedback.not_owner interaction_id=%s user_id=%s",
            feedback.interaction_id,
            feedback.user_id,
        )
        return FeedbackResult(stored=False, note="not the owner"), None

    # The rating (`_upsert_rating`).
    key = (answer.id, feedback.user_id)
    rating = state.ratings.get(key)
    if rating is not None and _is_stale(rating.pressed_at, feedback):
        return _stale(feedback), None
    if rating is None:
        rating = _RatingRow(
            value=feedback.value,
            source=feedback.source,
            reason=feedback.reason,
            comment=feedback.comment,
            pressed_at=feedback.pressed_at,
        )
        state.ratings[key] = rating
    else:
        _merge_press(rating, feedback)
    rating.dirty = True

    # The review flag (`_sync_review_flag`).
    item = state.reviews.get(answer.id)
    flagged = rating.value < 0
    if flagged:
        if item is None:
            state.reviews[answer.id] = _ReviewRow(
                status=ReviewStatus.pending, note=None, dirty=True
            )
        elif item.status == ReviewStatus.withdrawn:
            item.status = ReviewStatus.pending
            item.dirty = True
    elif item is not None and item.status == ReviewStatus.pending:
        item.status = ReviewStatus.withdrawn
        item.note = WITHDRAWN_NOTE
        item.dirty = True

    # Regenerate pairs (`_sync_regenerate_pairs`).
    written = 0
    group = state.group(answer)
    if len(group) >= 2:
        for other in group:
            if other.id == answer.id:
                continue
            other_rating = state.ratings.get((other.id, feedback.user_id))
            other_value = None if other_rating is None else other_rating.value
            pair_key = _pair_key(answer.id, other.id)
            existing = state.pairs.get(pair_key)
            if other_value == rating.value:
                if existing is not None and not existing.consumed:
                    state.pairs[pair_key] = None
                    if existing.in_db:
                        state.deleted_pairs.add(pair_key)
                continue
            if existing is not None and existing.consumed:
                continue
            chosen, rejected = (answer, other) if rating.value > 0 else (other, answer)
            if existing is None:
                existing = _PairRow(
                    assistant=answer.assistant,
                    prompt=answer.prompt,
                    chosen="",
                    rejected="",
                    chosen_id=None,
                    rejected_id=None,
                    user_id=feedback.user_id,
                    fresh=True,
                )
                state.pairs[pair_key] = existing
            existing.chosen, existing.rejected = chosen.answer, rejected.answer
            existing.chosen_id, existing.rejected_id = chosen.id, rejected.id
            existing.dirty = True
            written += 1
    result = FeedbackResult(stored=True, pairs=written, flagged=flagged)
    return result, key


def _insert(dialect: str, table: Table) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


def _write_state(conn: Connection, dialect: str, state: _BatchState) -> dict[tuple[int, int], int]:
    """Write the batch's end state; returns the rating ids by (interaction, user)."""
    now = utcnow()
    ids: dict[tuple[int, int], int] = {}
    rows = [
        {
            "interaction_id": iid,
            "user_id": uid,
            "value": row.value,
            "source": row.source,
            "reason": row.reason,
            "comment": row.comment,
            "pressed_at": row.pressed_at,
            "created_at": now,
            "updated_at": now,
        }
        for (iid, uid), row in state.ratings.items()
        if row.dirty
    ]
    if dialect == "postgresql":
        ids.update(_upsert_ratings_pg(conn, rows, now))
    else:
        r = _RATING.c
        for chunk in _chunks(rows):
            statement = _insert(dialect, _RATING).values(chunk)
            excluded = statement.excluded
            statement = statement.on_conflict_do_update(
                index_elements=[r.interaction_id, r.user_id],
                set_={
                    "value": excluded.value,
                    "source": excluded.source,
                    "reason": excluded.reason,
                    "comment": excluded.comment,
                    "pressed_at": excluded.pressed_at,
                    "updated_at": excluded.updated_at,
                },
            ).returning(r.id, r.interaction_id, r.user_id)
            for rid, iid, uid in conn.execute(statement):
                ids[(iid, uid)] = rid

    new_items = [
        {
            "interaction_id": iid,
            "reason": THUMBS_DOWN_REVIEW_REASON,
            "status": item.status,
            "note": item.note,
            "assistant": state.answers[iid].assistant,
            "created_at": now,
        }
        for iid, item in state.reviews.items()
        if item.id is None
    ]
    if dialect == "postgresql":
        _insert_review_items_pg(conn, new_items, now)
    else:
        for chunk in _chunks(new_items):
            # A concurrent single write may have flagged it first: theirs stands (as before).
            conn.execute(
                _insert(dialect, _REVIEW)
                .values(chunk)
                .on_conflict_do_nothing(index_elements=[_REVIEW.c.interaction_id, _REVIEW.c.reason])
            )
    changed = [
        {"item_id": item.id, "new_status": item.status, "new_note": item.note}
        for item in state.reviews.values()
        if item.id is not None and item.dirty
    ]
    if changed:
        conn.execute(
            update(_REVIEW)
            .where(_REVIEW.c.id == bindparam("item_id"))
            .values(status=bindparam("new_status"), note=bindparam("new_note")),
            changed,
        )

    p = _PAIR.c
    if state.deleted_pairs:
        conn.execute(
            delete(_PAIR).where(
                p.pair_key.in_(sorted(state.deleted_pairs)), p.consumed_by_run.is_(None)
            )
        )
    pairs = [
        {
            "pair_key": key,
            "assistant": pair.assistant,
            "prompt": pair.prompt,
            "chosen": pair.chosen,
            "rejected": pair.rejected,
            "chosen_interaction_id": pair.chosen_id,
            "rejected_interaction_id": pair.rejected_id,
            "source": PairSource.regenerate.value,
            "weight": 1.0,
            "user_id": pair.user_id,
            "consumed_by_run": None,
            "created_at": now,
        }
        for key, pair in sorted(state.pairs.items())
        if pair is not None and pair.dirty
    ]
    for chunk in _chunks(pairs):
        statement = _insert(dialect, _PAIR).values(chunk)
        excluded = statement.excluded
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[p.pair_key],
                set_={
                    "chosen": excluded.chosen,
                    "rejected": excluded.rejected,
                    "chosen_interaction_id": excluded.chosen_interaction_id,
                    "rejected_interaction_id": excluded.rejected_interaction_id,
                },
                where=p.consumed_by_run.is_(None),
            )
        )
    return ids


# On PostgreSQL the batch's rows travel as one array per column and are unnested by the
# server: one short statement, prepared once, whatever the batch size (a multi-row VALUES of
# 500 rows costs more to build and parse in Python than the database spends storing it).

_UPSERT_RATINGS_PG = text(
    """
    INSERT INTO rating (interaction_id, user_id, value, source, reason, comment, pressed_at,
                        created_at, updated_at)
    SELECT i, u, v, s, r, c, p, :now, :now
    FROM unnest(CAST(:iids AS INTEGER[]), CAST(:uids AS BIGINT[]), CAST(:vals AS INTEGER[]),
                CAST(:srcs AS VARCHAR[]), CAST(:reasons AS VARCHAR[]),
                CAST(:comments AS TEXT[]), CAST(:pressed AS TIMESTAMPTZ[]))
         AS t(i, u, v, s, r, c, p)
    ON CONFLICT (interaction_id, user_id) DO UPDATE
    SET value = excluded.value, source = excluded.source, reason = excluded.reason,
        comment = excluded.comment, pressed_at = excluded.pressed_at,
        updated_at = excluded.updated_at
    RETURNING id, interaction_id, user_id
    """
)

_INSERT_REVIEW_ITEMS_PG = text(
    """
    INSERT INTO review_item (interaction_id, reason, status, note, assistant, created_at)
    SELECT i, :reason, s, n, a, :now
    FROM unnest(CAST(:iids AS INTEGER[]), CAST(:statuses AS VARCHAR[]),
                CAST(:notes AS VARCHAR[]), CAST(:assistants AS VARCHAR[])) AS t(i, s, n, a)
    ON CONFLICT (interaction_id, reason) DO NOTHING
    """
)


def _upsert_ratings_pg(
    conn: Connection, rows: list[dict[str, Any]], now: Any
) -> dict[tuple[int, int], int]:
    if not rows:
        return {}
    result = conn.execute(
        _UPSERT_RATINGS_PG,
        {
            "now": now,
            "iids": [row["interaction_id"] for row in rows],
            "uids": [row["user_id"] for row in rows],
            "vals": [row["value"] for row in rows],
            "srcs": [row["source"] for row in rows],
            "reasons": [row["reason"] for row in rows],
            "comments": [row["comment"] for row in rows],
            "pressed": [row["pressed_at"] for row in rows],
        },
    )
    return {(iid, uid): rid for rid, iid, uid in result}


def _insert_review_items_pg(conn: Connection, items: list[dict[str, Any]], now: Any) -> None:
    """New 👎 flags; one a concurrent single write created first stands (as before)."""
    if not items:
        return
    conn.execute(
        _INSERT_REVIEW_ITEMS_PG,
        {
            "now": now,
            "reason": THUMBS_DOWN_REVIEW_REASON,
            "iids": [item["interaction_id"] for item in items],
            "statuses": [str(item["status"]) for item in items],
            "notes": [item["note"] for item in items],
            "assistants": [item["assistant"] for item in items],
        },
    )
