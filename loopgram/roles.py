"""Roles and bans, managed by admins in the bot (`/grant`, `/revoke`, `/ban`, `/unban`).

ADMIN_IDS / MODERATOR_IDS bootstrap roles at a person's first message; from then on the
database holds them. Every change is written to the audit log with who made it.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, col, select

from loopgram import crud
from loopgram.db import parse_id
from loopgram.errors import NotFoundError
from loopgram.models import Role, User


def find_user(*, session: Session, ref: str) -> User | None:
    """A user by Telegram id ("12345") or by @username (case-insensitive)."""
    ref = ref.strip()
    if ref.removeprefix("-").isdigit():  # an id, or digits no id can be ("²", 20 of them)
        user_id = parse_id(ref)
        return session.get(User, user_id) if user_id is not None else None
    name = ref.lstrip("@").lower()
    if not name:
        return None
    return session.exec(select(User).where(func.lower(col(User.username)) == name)).first()


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"user {user_id} has never written to the bot", key="role-unknown-user")
    return user


def set_role(*, session: Session, actor_id: int, user_id: int, role: Role) -> User:
    user = _user(session, user_id)
    before = user.role
    user.role = role
    session.add(user)
    crud.audit(
        session=session,
        actor_id=actor_id,
        action="role.set",
        target_type="user",
        target_id=str(user_id),
        details={"from": str(before), "role": str(role)},
    )
    session.flush()
    return user


def set_banned(*, session: Session, actor_id: int, user_id: int, banned: bool) -> User:
    user = _user(session, user_id)
    user.banned = banned
    session.add(user)
    crud.audit(
        session=session,
        actor_id=actor_id,
        action="user.ban" if banned else "user.unban",
        target_type="user",
        target_id=str(user_id),
        details={},
    )
    session.flush()
    return user
