"""Label sets and confirmed labels: what the labeling assistant labels against and learns from.

A chat uses the label set an admin defined for it, else the shipped default set. Every
label a person confirms (a 👍 on a label answer, a moderator's review, a gold file) is
stored once per (set, text) — a later confirmation replaces the label — and becomes a
few-shot example: the nearest confirmed items are shown to the model with their labels.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from loopgram import crud
from loopgram.assistants import Example
from loopgram.assistants.label import LabelSetSpec, default_label_set, example_answer
from loopgram.models import Chat, LabeledExample, LabelSet

if TYPE_CHECKING:
    from loopgram.embeddings import Embedder

log = logging.getLogger(__name__)

MAX_EXAMPLES_SCANNED = 2000
TRUSTED_SOURCES = frozenset(
    {"review", "gold"}
)  # the newest confirmed items a neighbour search looks at


def text_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).lower().encode("utf-8")).hexdigest()


def spec_of(label_set: LabelSet) -> LabelSetSpec:
    return LabelSetSpec.model_validate({"name": label_set.name, "labels": label_set.labels})


def label_set(session: Session, label_set_id: int | None) -> tuple[LabelSet | None, LabelSetSpec]:
    """A label set by id (row and spec); (None, the default set) for None or a missing id."""
    row = session.get(LabelSet, label_set_id) if label_set_id is not None else None
    return (row, spec_of(row)) if row is not None else (None, default_label_set())


def chat_label_set(*, session: Session, chat: Chat) -> tuple[LabelSet | None, LabelSetSpec]:
    """The chat's own label set (row and spec), or (None, the default set)."""
    return label_set(session, chat.label_set_id)


def save_label_set(
    *, session: Session, chat: Chat | None, spec: LabelSetSpec, actor_id: int | None
) -> LabelSet:
    """Store a new label set and make it the chat's (sets are never edited in place:
    confirmed examples keep pointing at the labels they were confirmed under)."""
    row = LabelSet(
        chat_id=chat.id if chat else None,
        name=spec.name,
        labels=[label.model_dump() for label in spec.labels],
        created_by=actor_id,
    )
    session.add(row)
    session.flush()
    if chat is not None:
        chat.label_set_id = row.id
        session.add(chat)
    crud.audit(
        session=session,
        actor_id=actor_id,
        action="labels.define",
        target_type="chat" if chat else "label_set",
        target_id=str(chat.id if chat else row.id),
        details={"label_set_id": row.id, "labels": spec.names},
    )
    session.flush()
    return row


def current_spec(*, session: Session, chat_id: int, chat_type: str) -> LabelSetSpec:
    return current_set(session=session, chat_id=chat_id, chat_type=chat_type)[1]


def current_set(
    *, session: Session, chat_id: int, chat_type: str
) -> tuple[int | None, LabelSetSpec]:
    """The chat's label set: its id (None for the default set) and its spec."""
    chat = crud.get_or_create_chat(session=session, chat_id=chat_id, chat_type=chat_type)
    row, spec = chat_label_set(session=session, chat=chat)
    return (row.id if row is not None else None), spec


def assign_label_set(
    *, session: Session, chat_id: int, chat_type: str, spec: LabelSetSpec | None, actor_id: int
) -> LabelSetSpec:
    """Give the chat a new label set, or back the default one (`spec` None); audited."""
    chat = crud.get_or_create_chat(session=session, chat_id=chat_id, chat_type=chat_type)
    if spec is not None:
        save_label_set(session=session, chat=chat, spec=spec, actor_id=actor_id)
        return spec
    chat.label_set_id = None
    session.add(chat)
    crud.audit(
        session=session,
        actor_id=actor_id,
        action="labels.default",
        target_type="chat",
        target_id=str(chat_id),
        details={},
    )
    return default_label_set()


def confirm_label(
    *,
    session: Session,
    label_set_id: int | None,
    text: str,
    label: str,
    source: str,
    interaction_id: int | None = None,
    confirmed_by: int | None = None,
) -> LabeledExample:
    """Record that `text` has `label` under the set (idempotent; the latest word wins)."""
    digest = text_hash(text)
    query = select(LabeledExample).where(LabeledExample.text_hash == digest)
    query = query.where(
        col(LabeledExample.label_set_id).is_(None)
        if label_set_id is None
        else LabeledExample.label_set_id == label_set_id
    )
    example = session.exec(query).first()
    if example is not None and source == "user" and example.source in TRUSTED_SOURCES:
        return example  # a reviewer's or a gold file's label outranks a user's 👍
    if example is None:
        example = LabeledExample(
            label_set_id=label_set_id, text=text, text_hash=digest, label=label, source=source
        )
    example.label = label
    example.source = source
    example.interaction_id = interaction_id
    example.confirmed_by = confirmed_by
    try:
        with session.begin_nested():
            session.add(example)
            session.flush()
    except IntegrityError:  # confirmed at the same moment elsewhere: the other word stands
        existing = session.exec(query).first()
        assert existing is not None
        return existing
    return example


def withdraw_label(*, session: Session, interaction_id: int) -> int:
    """Drop the example a user confirmed from this answer (they changed their mind); labels
    confirmed by reviewers or gold files stay."""
    rows = session.exec(
        select(LabeledExample).where(
            LabeledExample.interaction_id == interaction_id, LabeledExample.source == "user"
        )
    ).all()
    for row in rows:
        session.delete(row)
    session.flush()
    return len(rows)


def confirmed_examples(
    *, session: Session, label_set_id: int | None, limit: int = MAX_EXAMPLES_SCANNED
) -> list[LabeledExample]:
    query = select(LabeledExample).where(
        col(LabeledExample.label_set_id).is_(None)
        if label_set_id is None
        else LabeledExample.label_set_id == label_set_id
    )
    return list(session.exec(query.order_by(col(LabeledExample.id).desc()).limit(limit)).all())


def nearest_examples(
    embedder: Embedder,
    text: str,
    examples: Sequence[LabeledExample],
    *,
    labels: Sequence[str],
    k: int = 4,
) -> list[Example]:
    """The k confirmed items most similar to `text` (labels outside the set are skipped),
    shown to the model most similar last, right before the item itself."""
    usable = [e for e in examples if e.label in labels and e.text_hash != text_hash(text)]
    if not usable or k <= 0:
        return []
    query = embedder.embed_queries([text])[0]
    corpus = embedder.embed_queries([e.text for e in usable])
    scores = corpus @ query
    best = sorted(range(len(usable)), key=lambda i: float(scores[i]), reverse=True)[:k]
    return [Example(usable[i].text, example_answer(usable[i].label)) for i in reversed(best)]
