"""Who may do what: the role is read from the database for the person acting, every time
(never from the chat a button or command was used in)."""

from __future__ import annotations

from loopgram.models import Role, User


def is_admin(user_record: User | None) -> bool:
    return user_record is not None and not user_record.banned and user_record.role == Role.admin


def is_moderator(user_record: User | None) -> bool:
    """Moderators and admins review answers."""
    return (
        user_record is not None
        and not user_record.banned
        and user_record.role in (Role.moderator, Role.admin)
    )
