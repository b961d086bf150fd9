"""Plain, keyword-only CRUD functions over the core records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select, update

from loopgram.models import (
    AuditLog,
    Chat,
    Interaction,
    InteractionStatus,
    ProcessedUpdate,
    Role,
    User,
    utcnow,
)


def upsert_user(
    *,
    session: Session,
    user_id: int,
    language: str,
    first_name: str | None = None,
    username: str | None = None,
    initial_role: Role = Role.user,
) -> User:
    """Create the user on first contact; keep name and language fresh afterwards.

    `initial_role` comes from ADMIN_IDS / MODERATOR_IDS: it can raise a role, never lower
    one granted since (revoking is an admin's audited action).
    """
    user = session.get(User, user_id)
    if user is None:
        try:
            with session.begin_nested():
                user = User(id=user_id, language=language, first_name=first_name, username=username)
                session.add(user)
                session.flush()
        except IntegrityError:
            # Two first updates of a new user handled at once: the other one inserted it.
            user = session.get(User, user_id, populate_existing=True)
            assert user is not None
    if user.language != language or user.first_name != first_name or user.username != username:
        user.language = language
        user.first_name = first_name
        user.username = username
    if _rank(initial_role) > _rank(user.role):
        audit(
            session=session,
            actor_id=None,
            action="role.bootstrap",
            target_type="user",
            target_id=str(user_id),
            details={"from": str(user.role), "role": str(initial_role), "source": "environment"},
        )
        user.role = initial_role
    session.flush()
    return user


def audit(
    *,
    session: Session,
    actor_id: int | None,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Record who did what to which record (the audit log)."""
    session.add(
        AuditLog(
            actor_id=actor_id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details or {},
        )
    )


def _rank(role: Role) -> int:
    return {Role.user: 0, Role.moderator: 1, Role.admin: 2}[role]


def get_or_create_chat(
    *, session: Session, chat_id: int, chat_type: str, title: str | None = None
) -> Chat:
    chat = session.get(Chat, chat_id)
    if chat is None:
        try:
            with session.begin_nested():
                chat = Chat(id=chat_id, type=chat_type, title=title)
                session.add(chat)
                session.flush()
        except IntegrityError:  # created by a concurrent update of the same chat
            chat = session.get(Chat, chat_id, populate_existing=True)
            assert chat is not None
    return chat


def set_chat_assistant(*, session: Session, chat_id: int, chat_type: str, assistant: str) -> Chat:
    chat = get_or_create_chat(session=session, chat_id=chat_id, chat_type=chat_type)
    chat.assistant = assistant
    session.add(chat)
    return chat


def set_chat_option(
    *, session: Session, chat_id: int, chat_type: str, assistant: str, group: str, value: str
) -> Chat:
    """Remember an option (e.g. summary format) as the chat's choice for that assistant."""
    chat = get_or_create_chat(session=session, chat_id=chat_id, chat_type=chat_type)
    options = {k: dict(v) for k, v in (chat.assistant_options or {}).items()}
    options.setdefault(assistant, {})[group] = value
    chat.assistant_options = options  # a new object, so the JSON column is seen as changed
    session.add(chat)
    return chat


def set_assistant_enabled(
    *, session: Session, chat_id: int, chat_type: str, assistant: str, enabled: bool, actor_id: int
) -> Chat:
    """Enable or disable an assistant in a chat (audited). Disabling the chat's current
    assistant switches the chat back to the default one."""
    chat = get_or_create_chat(session=session, chat_id=chat_id, chat_type=chat_type)
    disabled = [name for name in chat.disabled_assistants or [] if name != assistant]
    if not enabled:
        disabled.append(assistant)
        if chat.assistant == assistant:
            chat.assistant = "chat"
    chat.disabled_assistants = sorted(disabled)
    session.add(chat)
    audit(
        session=session,
        actor_id=actor_id,
        action="assistant.enable" if enabled else "assistant.disable",
        target_type="chat",
        target_id=str(chat_id),
        details={"assistant": assistant},
    )
    return chat


def set_moderation(
    *,
    session: Session,
    chat_id: int,
    chat_type: str,
    actor_id: int,
    enabled: bool | None = None,
    action: str | None = None,
    threshold: float | None = None,
) -> Chat:
    chat = get_or_create_chat(session=session, chat_id=chat_id, chat_type=chat_type)
    changes: dict[str, object] = {}
    if enabled is not None:
        chat.moderation_enabled = changes["enabled"] = enabled
    if action is not None:
        chat.moderation_action = changes["action"] = action
    if threshold is not None:
        chat.moderation_threshold = changes["threshold"] = threshold
    session.add(chat)
    audit(
        session=session,
        actor_id=actor_id,
        action="moderation.configure",
        target_type="chat",
        target_id=str(chat_id),
        details=changes,
    )
    return chat


def reset_history(*, session: Session, chat_id: int, chat_type: str) -> Chat:
    chat = get_or_create_chat(session=session, chat_id=chat_id, chat_type=chat_type)
    chat.history_reset_at = utcnow()
    session.add(chat)
    return chat


def recent_turns(
    *,
    session: Session,
    chat_id: int,
    message_thread_id: int | None,
    since: datetime | None,
    limit: int,
    before_id: int | None = None,
    assistant: str | None = None,
) -> list[tuple[str, str]]:
    """The last `limit` answered (prompt, answer) turns of a chat, oldest first.

    Regenerated answers are left out: the conversation continues from the original turn.
    With `assistant`, only that assistant's turns count (a group's moderation verdicts are
    not part of its conversation).
    """
    if limit <= 0:
        return []
    query = (
        select(Interaction)
        .where(Interaction.chat_id == chat_id)
        .where(Interaction.status == InteractionStatus.ok)
        .where(col(Interaction.parent_interaction_id).is_(None))
    )
    if message_thread_id is not None:
        query = query.where(Interaction.message_thread_id == message_thread_id)
    if since is not None:
        query = query.where(Interaction.created_at > since)
    if before_id is not None:
        query = query.where(col(Interaction.id) < before_id)
    if assistant is not None:
        query = query.where(Interaction.assistant == assistant)
    rows = session.exec(query.order_by(col(Interaction.id).desc()).limit(limit)).all()
    return [(row.prompt, row.answer) for row in reversed(rows)]


def add_interaction(*, session: Session, interaction: Interaction) -> Interaction:
    # Every column is set on the Python side and the flush fills in the id: nothing to
    # read back (a refresh was a second query per answer).
    session.add(interaction)
    session.flush()
    return interaction


def get_interaction(*, session: Session, interaction_id: int) -> Interaction | None:
    return session.get(Interaction, interaction_id)


def update_interaction(*, session: Session, interaction: Interaction) -> Interaction:
    merged = session.merge(interaction)
    session.flush()
    return merged


def set_interaction_messages(
    *, session: Session, interaction_id: int, message_ids: list[int]
) -> None:
    """Record the Telegram messages that carry an answer (the last one has the buttons):
    one UPDATE of those two columns, no read and no write of the rest of the row."""
    session.exec(
        update(Interaction)
        .where(col(Interaction.id) == interaction_id)
        .values(
            telegram_message_ids=list(message_ids),
            telegram_message_id=message_ids[-1] if message_ids else None,
        )
    )


def interaction_by_message(
    *, session: Session, chat_id: int, message_id: int
) -> Interaction | None:
    """The answer one of whose messages is `message_id`: a long answer is several messages
    with the buttons on the last, and a reply or reaction may be on any of them."""
    # Message ids grow within a chat and an answer's parts are sent one after another, so
    # its last message is among the first at or after `message_id` (a few, in case
    # another process answered in the same chat at the same time).
    candidates = session.exec(
        select(Interaction)
        .where(
            Interaction.chat_id == chat_id,
            col(Interaction.telegram_message_id) >= message_id,
        )
        .order_by(col(Interaction.telegram_message_id))
        .limit(4)
    )
    for interaction in candidates:
        if message_id == interaction.telegram_message_id or message_id in (
            interaction.telegram_message_ids or []
        ):
            return interaction
    return None


def siblings(*, session: Session, interaction: Interaction) -> Sequence[Interaction]:
    """All answers to the same prompt: the original and its regenerations (🔄)."""
    root_id = interaction.parent_interaction_id or interaction.id
    query = select(Interaction).where(
        (Interaction.id == root_id) | (Interaction.parent_interaction_id == root_id)
    )
    return session.exec(query.order_by(col(Interaction.id))).all()


def mark_update_processed(*, session: Session, update_id: int) -> bool:
    """Record an update id; False when it was already there (a re-delivery)."""
    # One statement where the dialect has it (no savepoint, no flush); RETURNING says
    # whether the row went in (psycopg reports no rowcount for it).
    dialect = session.get_bind().dialect.name
    row = {"update_id": update_id, "created_at": utcnow()}
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        statement = (
            insert(ProcessedUpdate)
            .values(row)
            .on_conflict_do_nothing()
            .returning(col(ProcessedUpdate.update_id))
        )
        return session.exec(statement).first() is not None
    try:
        with session.begin_nested():
            session.add(ProcessedUpdate(update_id=update_id))
            session.flush()
    except IntegrityError:
        return False
    return True


def prune_processed_updates(*, session: Session, older_than: timedelta) -> int:
    cutoff = utcnow() - older_than
    result = session.exec(delete(ProcessedUpdate).where(col(ProcessedUpdate.created_at) < cutoff))
    return int(result.rowcount or 0)
