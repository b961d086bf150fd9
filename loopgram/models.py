"""SQLModel tables (the core records of DESIGN.md). Alembic migrations are the schema authority.

Families follow `XBase` (shared fields) -> `X(XBase, table=True)` -> `XPublic` where a public
shape is needed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(*, index: bool = False) -> Any:
    return Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, index=index),
    )


class Role(StrEnum):
    user = "user"
    moderator = "moderator"
    admin = "admin"


class InteractionStatus(StrEnum):
    ok = "ok"
    failed = "failed"


class ReviewStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    corrected = "corrected"
    withdrawn = "withdrawn"
    closed = "closed"


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"  # trained and passed the gate: an adapter was deployed
    rejected = "rejected"  # trained, but lost to the active adapter at the gate
    failed = "failed"
    refused = "refused"  # would not fit in memory/time: not started


class AdapterStatus(StrEnum):
    candidate = "candidate"
    canary = "canary"
    active = "active"
    retired = "retired"
    rejected = "rejected"


class AdapterKind(StrEnum):
    policy = "policy"  # a LoRA the model server generates with
    reward = "reward"  # a reward model (sequence-classification LoRA): scored, never served


class PairSource(StrEnum):
    regenerate = "regenerate"
    correction = "correction"
    rating = "rating"
    # Best-of-n: the reward model's favourite over its least favourite of one question's
    # candidates. Machine-labelled, so training uses it only when asked (reward_pairs).
    best_of_n = "best_of_n"


class UserBase(SQLModel):
    language: str = Field(default="en", max_length=8)
    role: Role = Field(default=Role.user, sa_type=String(16))
    banned: bool = False
    first_name: str | None = Field(default=None, max_length=256)
    username: str | None = Field(default=None, max_length=64)


class User(UserBase, table=True):
    __tablename__ = "user"

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    created_at: datetime = _ts()


class Chat(SQLModel, table=True):
    """Per-chat state: the chosen assistant and where the conversation history starts."""

    __tablename__ = "chat"

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    type: str = Field(default="private", max_length=16)
    title: str | None = Field(default=None, max_length=256)
    assistant: str = Field(default="chat", max_length=32)
    history_reset_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # {assistant: {option group: choice}} — the options people last picked in this chat.
    assistant_options: dict[str, dict[str, str]] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}")
    )
    disabled_assistants: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    # Group moderation: every message gets a verdict; harmful or unsure ones go to review,
    # and `moderation_action` is taken alone only at or above `moderation_threshold`.
    moderation_enabled: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    moderation_action: str = Field(
        default="none", max_length=16, sa_column_kwargs={"server_default": "none"}
    )
    moderation_threshold: float = Field(default=0.9, sa_column_kwargs={"server_default": "0.9"})
    label_set_id: int | None = Field(default=None, foreign_key="label_set.id", ondelete="SET NULL")
    created_at: datetime = _ts()


class InteractionBase(SQLModel):
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    message_thread_id: int | None = None
    assistant: str = Field(max_length=32, index=True)
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    answer: str = Field(default="", sa_column=Column(Text, nullable=False))
    retrieved_chunk_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    prompt_messages: list[dict[str, str]] = Field(
        default_factory=list,
        sa_column=Column(JSON),
        description="exactly what the model was sent (system, history, question)",
    )
    model: str = Field(default="", max_length=128)
    adapter: str | None = Field(default=None, max_length=128)
    latency_ms: int | None = None
    status: InteractionStatus = Field(default=InteractionStatus.ok, sa_type=String(16))
    error: str | None = Field(default=None, max_length=512)
    telegram_message_id: int | None = Field(default=None, description="message carrying buttons")
    telegram_message_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON))
    request_message_id: int | None = None
    options: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}")
    )
    label_set_id: int | None = Field(
        default=None, foreign_key="label_set.id", ondelete="SET NULL", description="labeling"
    )
    parent_interaction_id: int | None = Field(
        default=None, foreign_key="interaction.id", index=True, ondelete="SET NULL"
    )


class Interaction(InteractionBase, table=True):
    __tablename__ = "interaction"
    # A reaction or a /report names a message of an answer: found by a range read in its chat.
    __table_args__ = (Index("ix_interaction_chat_message", "chat_id", "telegram_message_id"),)

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = _ts(index=True)


class RatingBase(SQLModel):
    interaction_id: int = Field(foreign_key="interaction.id", index=True, ondelete="CASCADE")
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    value: int = Field(description="+1 or -1")
    reason: str | None = Field(default=None, max_length=32)
    comment: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    source: str = Field(default="button", max_length=16)


class Rating(RatingBase, table=True):
    __tablename__ = "rating"
    __table_args__ = (UniqueConstraint("interaction_id", "user_id", name="uq_rating_user"),)

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = _ts(index=True)
    updated_at: datetime = _ts()
    # When the bot received the press now stored: an older press applied later (redelivered,
    # retried, another worker's batch) is ignored. None: stored before presses were stamped.
    pressed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class AnswerCandidate(SQLModel, table=True):
    """One of the n answers best-of-n generated for an interaction; the one sent is `chosen`
    (its text is also the interaction's answer)."""

    __tablename__ = "answer_candidate"
    __table_args__ = (
        UniqueConstraint("interaction_id", "position", name="uq_answer_candidate_position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    interaction_id: int = Field(foreign_key="interaction.id", index=True, ondelete="CASCADE")
    position: int = Field(description="0..n-1, the order the model server returned them in")
    text: str = Field(sa_column=Column(Text, nullable=False))
    reward: float | None = Field(default=None, description="None: the reward model was down")
    reward_model: str | None = Field(default=None, max_length=64)
    chosen: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    created_at: datetime = _ts()


class AnswerScore(SQLModel, table=True):
    """A reward model's score of a sent answer (rated or not): the satisfaction estimate's
    input. Scores of different reward models are on different scales: never mixed."""

    __tablename__ = "answer_score"
    __table_args__ = (
        UniqueConstraint("interaction_id", "reward_model", name="uq_answer_score_model"),
    )

    id: int | None = Field(default=None, primary_key=True)
    interaction_id: int = Field(foreign_key="interaction.id", index=True, ondelete="CASCADE")
    reward_model: str = Field(max_length=64, index=True)
    score: float
    created_at: datetime = _ts(index=True)


class ReviewItem(SQLModel, table=True):
    __tablename__ = "review_item"
    __table_args__ = (UniqueConstraint("interaction_id", "reason", name="uq_review_reason"),)

    id: int | None = Field(default=None, primary_key=True)
    interaction_id: int = Field(foreign_key="interaction.id", index=True, ondelete="CASCADE")
    reason: str = Field(max_length=32, description="why flagged: thumbs_down, report, ...")
    status: ReviewStatus = Field(default=ReviewStatus.pending, sa_type=String(16), index=True)
    reviewer_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    correction: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    note: str | None = Field(default=None, max_length=512)
    assistant: str = Field(default="", max_length=32, sa_column_kwargs={"server_default": ""})
    # One moderator works on an item at a time; the claim lapses so a walked-away
    # moderator does not lock it forever.
    claimed_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    claim_expires_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    required_reviews: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    skipped_by: list[int] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    # Where the item's card was posted (the moderators' chat), to edit it when decided.
    card_chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    card_message_id: int | None = None
    created_at: datetime = _ts()
    decided_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class ReviewDecision(SQLModel, table=True):
    """One moderator's decision on a review item (two for overlap items): the audit trail
    and the data for agreement (Cohen's kappa)."""

    __tablename__ = "review_decision"
    __table_args__ = (UniqueConstraint("review_item_id", "moderator_id"),)

    id: int | None = Field(default=None, primary_key=True)
    review_item_id: int = Field(foreign_key="review_item.id", index=True, ondelete="CASCADE")
    moderator_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    decision: str = Field(max_length=16, description="approve, reject, correct")
    correction: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = _ts(index=True)


class PreferencePair(SQLModel, table=True):
    """One chosen/rejected pair of the reward buffer."""

    __tablename__ = "preference_pair"

    id: int | None = Field(default=None, primary_key=True)
    pair_key: str = Field(max_length=96, unique=True, description="source + the two ids")
    assistant: str = Field(max_length=32, index=True)
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    chosen: str = Field(sa_column=Column(Text, nullable=False))
    rejected: str = Field(sa_column=Column(Text, nullable=False))
    chosen_interaction_id: int | None = Field(
        default=None, foreign_key="interaction.id", ondelete="CASCADE"
    )
    rejected_interaction_id: int | None = Field(
        default=None, foreign_key="interaction.id", ondelete="CASCADE"
    )
    source: PairSource = Field(sa_type=String(16))
    weight: float = 1.0
    user_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    consumed_by_run: int | None = Field(default=None, index=True)
    created_at: datetime = _ts(index=True)


class TrainingRun(SQLModel, table=True):
    """One training attempt for one assistant, with what it saw and how it was judged."""

    __tablename__ = "training_run"

    id: int | None = Field(default=None, primary_key=True)
    assistant: str = Field(max_length=32, index=True)
    method: str = Field(max_length=16, description="dpo, kto, orpo, reward")
    status: RunStatus = Field(default=RunStatus.queued, sa_type=String(16), index=True)
    examples: int = 0
    train_examples: int = 0
    eval_examples: int = 0
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    evaluation: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    adapter_id: int | None = Field(default=None, foreign_key="adapter.id", ondelete="SET NULL")
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = _ts(index=True)
    started_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class Adapter(SQLModel, table=True):
    """A LoRA adapter version; served under `name` (`<assistant>-v<N>`, never reused).

    `kind` reward rows are reward models (`<assistant>-rm-v<N>`, their own version sequence):
    the same registry, but never loaded into the model server.
    """

    __tablename__ = "adapter"
    __table_args__ = (
        UniqueConstraint("assistant", "kind", "version", name="uq_adapter_kind_version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    assistant: str = Field(max_length=32, index=True)
    version: int
    name: str = Field(max_length=64, unique=True)
    path: str = Field(max_length=1024)
    base_model: str = Field(max_length=256)
    method: str = Field(max_length=16)
    kind: AdapterKind = Field(
        default=AdapterKind.policy,
        sa_type=String(16),
        index=True,
        sa_column_kwargs={"server_default": AdapterKind.policy.value},
    )
    status: AdapterStatus = Field(default=AdapterStatus.candidate, sa_type=String(16), index=True)
    training_run_id: int | None = Field(default=None, index=True)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = _ts()
    deployed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    retired_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    actor_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    action: str = Field(max_length=64)
    target_type: str = Field(max_length=32)
    target_id: str = Field(max_length=64)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = _ts(index=True)


class ProcessedUpdate(SQLModel, table=True):
    """Update ids already handled, so a re-delivered update is processed once."""

    __tablename__ = "processed_update"

    update_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    created_at: datetime = _ts(index=True)


class LabelSet(SQLModel, table=True):
    """Labels an admin defined for a chat (`/labels`, a YAML file, or `loopgram label`)."""

    __tablename__ = "label_set"

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    name: str = Field(max_length=64)
    labels: list[dict[str, str]] = Field(default_factory=list, sa_column=Column(JSON))
    created_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = _ts()


class LabeledExample(SQLModel, table=True):
    """An item whose label a person confirmed: few-shot material and training data."""

    __tablename__ = "labeled_example"
    __table_args__ = (UniqueConstraint("label_set_id", "text_hash"),)

    id: int | None = Field(default=None, primary_key=True)
    label_set_id: int | None = Field(
        default=None, foreign_key="label_set.id", index=True, ondelete="CASCADE"
    )
    text: str = Field(sa_column=Column(Text, nullable=False))
    text_hash: str = Field(max_length=64)
    label: str = Field(max_length=32)
    source: str = Field(max_length=16, description="user, review, gold")
    interaction_id: int | None = Field(
        default=None, foreign_key="interaction.id", ondelete="SET NULL"
    )
    confirmed_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = _ts()


class Document(SQLModel, table=True):
    """A knowledge-base document. Its chunks' vectors live in Qdrant, keyed by chunk id."""

    __tablename__ = "document"

    id: int | None = Field(default=None, primary_key=True)
    source_key: str = Field(max_length=64, unique=True, description="sha256(source, scope)")
    name: str = Field(max_length=256)
    source: str = Field(max_length=1024, description="a path, or telegram:<file_unique_id>")
    kind: str = Field(max_length=16)
    content_hash: str = Field(max_length=64, index=True)
    lang: str = Field(default="en", max_length=8)
    assistant: str | None = Field(default=None, max_length=32, description="scope; None = all")
    chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    status: str = Field(default="indexing", max_length=16, description="indexing, ready, failed")
    chunks: int = 0
    findings: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    error: str | None = Field(default=None, max_length=512)
    added_by: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Chunk(SQLModel, table=True):
    """A piece of a document as indexed: the text cited in answers, by chunk id."""

    __tablename__ = "chunk"

    id: str = Field(primary_key=True, max_length=36, description="UUID; the Qdrant point id")
    document_id: int = Field(foreign_key="document.id", index=True, ondelete="CASCADE")
    index: int
    text: str = Field(sa_column=Column(Text, nullable=False))
    section: str | None = Field(default=None, max_length=512)
    page: int | None = None
    lang: str = Field(default="en", max_length=8)
    tokens: int = 0
