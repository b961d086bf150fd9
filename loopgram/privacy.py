"""A person's own data: `/export_me` gives it to them, `/forget` deletes it.

What `/forget` does (`forget_user`), and why:

- **Deleted**: every interaction the person had (questions and answers, in any chat, group
  moderation verdicts included, and the best-of-n candidates each answer was picked from),
  every rating on those answers, the ratings and comments
  they gave, review items about their answers (with the moderators' decisions on them),
  confirmed label examples taken from their messages, preference pairs built from their
  answers that no training run has used yet, their private chat's settings and label sets.
- **Anonymised, not deleted**: preference pairs built from their answers that a training
  run already consumed. The adapter trained on them cannot unlearn them, and the pair is
  the record of what that run saw; so the pair loses every link to the person (user id,
  interaction ids, its key) and its texts go through `loopgram.pii.scrub` (phones, e-mails,
  cards, tokens). Group conversations: verbatim copies of their questions and answers in
  other people's stored prompts (the history the model was sent) become `[deleted]`.
- **Kept**: the user row when it carries a ban or a role (so `/forget` cannot be used to
  shake off a ban, and a moderator stays one), with the name and username removed; other
  users' rows are deleted outright. What they did as a moderator on *other* people's answers
  (review decisions, corrections, review ratings) is the moderation record and stays; their
  id is cleared from knowledge-base documents, label sets and confirmed examples they added.
  The audit log keeps its rows and gets one more (`privacy.forget`, counts only).

Confirmation buttons carry an HMAC of (user id, time) keyed by a secret of the deployment,
so callback data cannot be forged or replayed by someone else, nor reused after `CONFIRM_TTL`.

This module is plain Python over SQLModel: the bot's handler (`bot/handlers/privacy.py`)
only asks, confirms and sends.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import logging
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from sqlalchemy import ColumnElement, text, update
from sqlmodel import Session, col, delete, or_, select

from loopgram import crud
from loopgram.models import (
    AnswerCandidate,
    AuditLog,
    Chat,
    Document,
    Interaction,
    LabeledExample,
    LabelSet,
    PairSource,
    PreferencePair,
    Rating,
    ReviewDecision,
    ReviewItem,
    Role,
    User,
    utcnow,
)
from loopgram.pii import scrub

log = logging.getLogger(__name__)

# Telegram's limit for a document a bot sends (Bot API, cloud server).
TELEGRAM_DOCUMENT_LIMIT = 50 * 1024 * 1024
CONFIRM_TTL = 600  # seconds a /forget confirmation stays valid
EXPORT_FORMAT = "loopgram-user-export"
EXPORT_VERSION = 1
REDACTED = "[deleted]"
FORGET_ACTION = "privacy.forget"
_CHUNK = 500  # ids per IN (...) list
_ROWS_PER_FETCH = 500

T = TypeVar("T")


# --- the confirmation ---------------------------------------------------------------------


def _derived_key(purpose: bytes, secret: str) -> bytes:
    # One key per purpose, never the secret itself: a leaked signature or pseudonym says
    # nothing about the secret or about the other purpose's key.
    return hashlib.sha256(b"loopgram/" + purpose + b"\x00" + secret.encode()).digest()


def confirmation_key(secret: str) -> bytes:
    """A key for confirmation signatures, derived from a secret of the deployment (the bot
    token)."""
    return _derived_key(b"forget-confirmation", secret)


def end_user_key(secret: str) -> bytes:
    """The key of `end_user_id`, derived from a secret of the deployment (the bot token)."""
    return _derived_key(b"end-user", secret)


def end_user_id(key: bytes, user_id: int) -> str:
    """The pseudonym sent as the OpenAI `user` field: stable per person and deployment, and
    not the Telegram id (an unkeyed hash of a small integer is reversed by enumeration)."""
    return hmac.new(key, f"user:{user_id}".encode(), hashlib.sha256).hexdigest()[:24]


def confirmation_signature(key: bytes, user_id: int, issued_at: int) -> str:
    message = f"forget:{user_id}:{issued_at}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:20]


def confirmation_genuine(key: bytes, user_id: int, issued_at: int, signature: str) -> bool:
    """The button was made by this deployment for this user (constant-time comparison)."""
    expected = confirmation_signature(key, user_id, issued_at)
    return hmac.compare_digest(expected, signature)


def confirmation_fresh(issued_at: int, now: float, ttl: int = CONFIRM_TTL) -> bool:
    return 0 <= now - issued_at <= ttl


# --- /forget --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForgetReport:
    """What `forget_user` did, in counts (no personal data: this goes to the audit log)."""

    interactions: int = 0
    candidates: int = 0
    ratings: int = 0
    comments: int = 0
    review_items: int = 0
    pairs_deleted: int = 0
    pairs_anonymised: int = 0
    labeled_examples: int = 0
    history_redacted: int = 0
    user_row: str = "absent"  # deleted, kept (ban or role), absent
    # Where the review cards of deleted items were posted: (chat id, message id), to close.
    review_cards: tuple[tuple[int, int], ...] = field(default=())

    def counts(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("review_cards")
        return data


def _chunks(ids: Sequence[T]) -> Iterator[list[T]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def forget_user(*, session: Session, user_id: int, actor_id: int | None = None) -> ForgetReport:
    """Delete what is stored about `user_id` (see the module docstring); one transaction."""
    # Before anything is read, so that an answer being stored right now either commits
    # first (and is deleted below) or waits and sees this forget (`forgotten_since`): the
    # person's lock, and the audit row written first (on SQLite, a transaction's first write
    # takes the database's write lock). Its counts are filled in at the end.
    lock_people(session, [user_id], exclusive=True)
    entry = AuditLog(
        actor_id=actor_id if actor_id is not None else user_id,
        action=FORGET_ACTION,
        target_type="user",
        target_id=str(user_id),
    )
    session.add(entry)
    session.flush()
    interactions = session.exec(
        select(Interaction.id, Interaction.chat_id, Interaction.prompt, Interaction.answer).where(
            Interaction.user_id == user_id
        )
    ).all()
    ids = sorted(row[0] for row in interactions if row[0] is not None)
    id_set = set(ids)
    # Texts that other people's stored prompts may carry as group history.
    group_texts: dict[int, set[str]] = {}
    first_in_chat: dict[int, int] = {}
    for iid, chat_id, prompt, answer in interactions:
        if chat_id == user_id or iid is None:
            continue  # a private chat has no one else's history in it
        group_texts.setdefault(chat_id, set()).update(t for t in (prompt, answer) if t.strip())
        first_in_chat[chat_id] = min(first_in_chat.get(chat_id, iid), iid)

    review_items, cards = _delete_review_items(session, ids)
    pairs_deleted, pairs_anonymised = _settle_pairs(session, user_id, id_set)
    ratings, comments = _delete_ratings(session, user_id, ids)
    labeled = candidates = 0
    for chunk in _chunks(ids):
        # The foreign key cascades too; deleted here so the count is known whatever the engine.
        candidates += _rowcount(
            session.exec(
                delete(AnswerCandidate).where(col(AnswerCandidate.interaction_id).in_(chunk))
            )
        )
        labeled += _rowcount(
            session.exec(
                delete(LabeledExample).where(col(LabeledExample.interaction_id).in_(chunk))
            )
        )
        # Someone else's 🔄 of one of these answers (not made by the bot today): unlink it.
        session.exec(
            update(Interaction)
            .where(col(Interaction.parent_interaction_id).in_(chunk))
            .where(col(Interaction.user_id) != user_id)
            .values(parent_interaction_id=None)
        )
    redacted = _redact_group_history(session, user_id, group_texts, first_in_chat)
    deleted = 0
    # Regenerations first: a row is deleted only after the rows that point at it.
    for chunk in _chunks(ids[::-1]):
        deleted += _rowcount(
            session.exec(delete(Interaction).where(col(Interaction.id).in_(chunk)))
        )
    labeled += _forget_private_chat(session, user_id)
    _clear_authorship(session, user_id)
    user_row = _settle_user_row(session, user_id)
    report = ForgetReport(
        interactions=deleted,
        candidates=candidates,
        ratings=ratings,
        comments=comments,
        review_items=review_items,
        pairs_deleted=pairs_deleted,
        pairs_anonymised=pairs_anonymised,
        labeled_examples=labeled,
        history_redacted=redacted,
        user_row=user_row,
        review_cards=tuple(cards),
    )
    entry.details = report.counts()
    session.add(entry)
    session.flush()
    log.info(
        "privacy.forget user_id=%s %s",
        user_id,
        " ".join(f"{k}={v}" for k, v in report.counts().items()),
    )
    return report


# PostgreSQL advisory locks that serialise a forget with the writes about the same person
# (see `lock_people`): (namespace, user id modulo a bucket count), so a batch of ratings from a
# thousand people takes a bounded number of locks; two people of one bucket only ever wait
# for each other's short transactions.
_LOCK_NAMESPACE = 0x4C47
_LOCK_BUCKETS = 1024
_LOCK_EXCLUSIVE = text(
    "SELECT pg_advisory_xact_lock(:namespace, b) FROM unnest(CAST(:buckets AS INTEGER[])) AS b"
)
_LOCK_SHARED = text(
    "SELECT pg_advisory_xact_lock_shared(:namespace, b)"
    " FROM unnest(CAST(:buckets AS INTEGER[])) AS b"
)


def lock_people(session: Session, user_ids: Iterable[int], *, exclusive: bool) -> None:
    """Lock these people until the transaction ends: exclusive for a forget, shared for a
    write of their data (an answer, a rating), so a write either commits before a forget
    reads what to delete or waits and finds the forget done. PostgreSQL only: SQLite has
    one writer at a time (answers are stored by the group-commit writer, whose transactions
    take the write lock before they read, and a forget writes first)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    buckets = sorted({user_id % _LOCK_BUCKETS for user_id in user_ids})
    if not buckets:
        return
    statement = _LOCK_EXCLUSIVE if exclusive else _LOCK_SHARED
    session.connection().execute(statement, {"namespace": _LOCK_NAMESPACE, "buckets": buckets})


def forgotten_since(*, session: Session, user_id: int, since: datetime) -> bool:
    """`/forget` deleted the person's data at or after `since`.

    An answer to a question asked before a forget and finished after it must not be stored:
    it would outlive the forget the person was told was done. Call this in the transaction
    that stores: it waits for a forget still running, and a forget that starts later waits
    for that transaction (and then deletes what it stored)."""
    lock_people(session, [user_id], exclusive=False)
    found = session.exec(
        select(AuditLog.id)
        .where(AuditLog.action == FORGET_ACTION)
        .where(AuditLog.target_type == "user")
        .where(AuditLog.target_id == str(user_id))
        .where(col(AuditLog.created_at) >= since)
        .limit(1)
    ).first()
    return found is not None


def _delete_review_items(session: Session, ids: list[int]) -> tuple[int, list[tuple[int, int]]]:
    count = 0
    cards: list[tuple[int, int]] = []
    for chunk in _chunks(ids):
        items = session.exec(
            select(ReviewItem.id, ReviewItem.card_chat_id, ReviewItem.card_message_id).where(
                col(ReviewItem.interaction_id).in_(chunk)
            )
        ).all()
        item_ids = [item_id for item_id, _, _ in items if item_id is not None]
        cards.extend((c, m) for _, c, m in items if c is not None and m is not None)
        for item_chunk in _chunks(item_ids):
            session.exec(
                delete(ReviewDecision).where(col(ReviewDecision.review_item_id).in_(item_chunk))
            )
            count += _rowcount(
                session.exec(delete(ReviewItem).where(col(ReviewItem.id).in_(item_chunk)))
            )
    return count, cards


def _settle_pairs(session: Session, user_id: int, ids: set[int]) -> tuple[int, int]:
    """Unconsumed pairs of the person's answers go; consumed ones stay, anonymised.

    A moderator's correction pair on someone else's answer is not the moderator's to delete
    (it is the moderation record); it only loses the moderator's id."""
    conditions: list[ColumnElement[bool]] = [
        (col(PreferencePair.user_id) == user_id)
        & (col(PreferencePair.source) != PairSource.correction)
    ]
    sorted_ids = sorted(ids)
    for chunk in _chunks(sorted_ids):
        conditions.append(col(PreferencePair.chosen_interaction_id).in_(chunk))
        conditions.append(col(PreferencePair.rejected_interaction_id).in_(chunk))
    pairs = list(session.exec(select(PreferencePair).where(or_(*conditions))).all())
    deleted = anonymised = 0
    for pair in pairs:
        if pair.consumed_by_run is None:
            session.delete(pair)
            deleted += 1
            continue
        pair.prompt, pair.chosen, pair.rejected = (
            scrub(pair.prompt),
            scrub(pair.chosen),
            scrub(pair.rejected),
        )
        pair.user_id = None
        if pair.chosen_interaction_id in ids:
            pair.chosen_interaction_id = None
        if pair.rejected_interaction_id in ids:
            pair.rejected_interaction_id = None
        # The key named the deleted answers' ids; SQLite may hand those ids out again.
        pair.pair_key = f"forgotten:{pair.id}"
        session.add(pair)
        anonymised += 1
    # Correction pairs this person wrote as a moderator on other people's answers.
    session.exec(
        update(PreferencePair)
        .where(col(PreferencePair.user_id) == user_id)
        .where(col(PreferencePair.source) == PairSource.correction)
        .values(user_id=None)
    )
    session.flush()
    return deleted, anonymised


def _delete_ratings(session: Session, user_id: int, ids: list[int]) -> tuple[int, int]:
    """Ratings on the person's answers (anyone's) and the ratings the person gave, except
    the ratings a moderator's review decision made on someone else's answer."""
    own = (col(Rating.user_id) == user_id) & (col(Rating.source) != "review")
    comments = session.exec(
        select(Rating.id).where(own).where(col(Rating.comment).is_not(None))
    ).all()
    count = _rowcount(session.exec(delete(Rating).where(own)))
    for chunk in _chunks(ids):
        count += _rowcount(
            session.exec(delete(Rating).where(col(Rating.interaction_id).in_(chunk)))
        )
    return count, len(comments)


def _redact_group_history(
    session: Session,
    user_id: int,
    texts: dict[int, set[str]],
    first_in_chat: dict[int, int],
) -> int:
    """Other people's stored prompts in a group carry earlier turns as history: verbatim
    copies of the person's questions and answers there become `[deleted]`."""
    redacted = 0
    for chat_id, gone in texts.items():
        query = (
            select(Interaction)
            .where(Interaction.chat_id == chat_id)
            .where(Interaction.user_id != user_id)
            .where(col(Interaction.id) > first_in_chat[chat_id])
            .order_by(col(Interaction.id))
            .execution_options(yield_per=_ROWS_PER_FETCH)
        )
        changed: list[Interaction] = []
        for other in session.exec(query):
            messages = other.prompt_messages or []

            def theirs(message: dict[str, Any], gone: set[str] = gone) -> bool:
                content = message.get("content")
                return (
                    message.get("role") != "system"
                    and isinstance(content, str)
                    and (content in gone)
                )

            if not any(theirs(m) for m in messages):
                continue
            other.prompt_messages = [
                {**m, "content": REDACTED} if theirs(m) else dict(m) for m in messages
            ]
            changed.append(other)
        for other in changed:
            session.add(other)
            redacted += 1
    session.flush()
    return redacted


def _forget_private_chat(session: Session, user_id: int) -> int:
    """The private chat's settings (assistant, options) and its label sets (a private chat's
    id is the person's id; groups have negative ids)."""
    chat = session.get(Chat, user_id)
    if chat is not None:
        session.delete(chat)
        session.flush()
    set_ids = [
        i for i in session.exec(select(LabelSet.id).where(LabelSet.chat_id == user_id)).all() if i
    ]
    examples = 0
    for chunk in _chunks(set_ids):
        examples += _rowcount(
            session.exec(delete(LabeledExample).where(col(LabeledExample.label_set_id).in_(chunk)))
        )
        session.exec(delete(LabelSet).where(col(LabelSet.id).in_(chunk)))
    return examples


def _clear_authorship(session: Session, user_id: int) -> None:
    """Shared records the person added stay, without their id."""
    session.exec(update(Document).where(col(Document.added_by) == user_id).values(added_by=None))
    session.exec(
        update(LabelSet).where(col(LabelSet.created_by) == user_id).values(created_by=None)
    )
    session.exec(
        update(LabeledExample)
        .where(col(LabeledExample.confirmed_by) == user_id)
        .values(confirmed_by=None)
    )


def _settle_user_row(session: Session, user_id: int) -> str:
    user = session.get(User, user_id)
    if user is None:
        return "absent"
    if user.banned or user.role != Role.user:
        # The ban (and a granted role) must outlive /forget; nothing else personal does.
        user.first_name = None
        user.username = None
        session.add(user)
        session.flush()
        return "kept"
    session.delete(user)
    session.flush()
    return "deleted"


# --- /export_me -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    path: Path
    size: int
    interactions: int
    ratings: int
    comments: int


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def _profile(user: User | None) -> dict[str, Any] | None:
    if user is None:
        return None
    return {
        "id": user.id,
        "first_name": user.first_name,
        "username": user.username,
        "language": user.language,
        "role": str(user.role),
        "banned": user.banned,
        "created_at": _iso(user.created_at),
    }


def _interaction_row(row: Interaction) -> dict[str, Any]:
    return {
        "id": row.id,
        "chat_id": row.chat_id,
        "assistant": row.assistant,
        "prompt": row.prompt,
        "answer": row.answer,
        "status": str(row.status),
        "created_at": _iso(row.created_at),
        "regenerated_from": row.parent_interaction_id,
        "model": row.model,
        "adapter": row.adapter,
    }


def _candidate_row(row: AnswerCandidate) -> dict[str, Any]:
    return {
        "interaction_id": row.interaction_id,
        "position": row.position,
        "text": row.text,
        "reward": row.reward,
        "reward_model": row.reward_model,
        "chosen": row.chosen,
        "created_at": _iso(row.created_at),
    }


def _rating_row(row: Rating) -> dict[str, Any]:
    return {
        "interaction_id": row.interaction_id,
        "rating": row.value,
        "reason": row.reason,
        "comment": row.comment,
        "source": row.source,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
    }


def _write_array(out: IO[str], name: str, rows: Iterable[dict[str, Any]], *, last: bool) -> int:
    out.write(f'  "{name}": [')
    count = 0
    for row in rows:
        out.write(",\n    " if count else "\n    ")
        out.write(json.dumps(row, ensure_ascii=False))
        count += 1
    out.write("\n  ]" if count else "]")
    out.write("\n" if last else ",\n")
    return count


def write_user_export(*, session: Session, user_id: int, out: IO[str]) -> dict[str, int]:
    """Everything stored about `user_id`, as one JSON document written piece by piece (rows
    are fetched in batches and never all held in memory). Returns the counts."""
    user = session.get(User, user_id)
    out.write("{\n")
    head = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": _iso(utcnow()),
        "user_id": user_id,
        "profile": _profile(user),
    }
    for key, value in head.items():
        out.write(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},\n")
    interactions = session.exec(
        select(Interaction)
        .where(Interaction.user_id == user_id)
        .order_by(col(Interaction.id))
        .execution_options(yield_per=_ROWS_PER_FETCH)
    )
    n_interactions = _write_array(
        out, "interactions", (_interaction_row(r) for r in interactions), last=False
    )
    # Best-of-n: every answer the model wrote to their questions, the one sent marked chosen.
    candidates = session.exec(
        select(AnswerCandidate)
        .join(Interaction, col(Interaction.id) == col(AnswerCandidate.interaction_id))
        .where(Interaction.user_id == user_id)
        .order_by(col(AnswerCandidate.interaction_id), col(AnswerCandidate.position))
        .execution_options(yield_per=_ROWS_PER_FETCH)
    )
    _write_array(out, "answer_candidates", (_candidate_row(r) for r in candidates), last=False)
    ratings_query = (
        select(Rating)
        .where(Rating.user_id == user_id)
        .order_by(col(Rating.id))
        .execution_options(yield_per=_ROWS_PER_FETCH)
    )
    n_ratings = _write_array(
        out, "ratings", (_rating_row(r) for r in session.exec(ratings_query)), last=False
    )
    comments = (
        {
            "interaction_id": r.interaction_id,
            "comment": r.comment,
            "created_at": _iso(r.updated_at),
        }
        for r in session.exec(ratings_query.where(col(Rating.comment).is_not(None)))
    )
    n_comments = _write_array(out, "comments", comments, last=True)
    out.write("}\n")
    return {"interactions": n_interactions, "ratings": n_ratings, "comments": n_comments}


def export_user_to_file(*, session: Session, user_id: int, path: Path) -> ExportResult:
    """`write_user_export` into `path` (audited: the export is a disclosure)."""
    with path.open("w", encoding="utf-8") as out:
        counts = write_user_export(session=session, user_id=user_id, out=out)
    size = path.stat().st_size
    crud.audit(
        session=session,
        actor_id=user_id,
        action="privacy.export",
        target_type="user",
        target_id=str(user_id),
        details={**counts, "bytes": size},
    )
    log.info(
        "privacy.export user_id=%s bytes=%s interactions=%s ratings=%s",
        user_id,
        size,
        counts["interactions"],
        counts["ratings"],
    )
    return ExportResult(path=path, size=size, **counts)


def fit_for_telegram(path: Path, limit: int = TELEGRAM_DOCUMENT_LIMIT) -> Path | None:
    """The file to send: `path` when it fits Telegram's document limit, else a gzip of it
    (JSON shrinks several times) when that fits, else None (the caller says it is too big)."""
    if path.stat().st_size <= limit:
        return path
    packed = path.with_name(path.name + ".gz")
    with path.open("rb") as source, gzip.open(packed, "wb", compresslevel=6) as target:
        shutil.copyfileobj(source, target, length=1024 * 1024)
    if packed.stat().st_size <= limit:
        return packed
    packed.unlink(missing_ok=True)
    return None
