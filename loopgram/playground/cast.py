"""Who is in the playground: the people one can act as, and the group chats they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loopgram.models import Role

TEAM_CHAT_ID = -1001000000001
MODERATORS_CHAT_ID = -1001000000002


@dataclass(frozen=True)
class Identity:
    id: int
    name: str
    role: Role
    language: str
    username: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "language": self.language,
            "username": self.username,
        }


@dataclass(frozen=True)
class PlaygroundChat:
    id: int
    title: str
    bot_is_admin: bool = False
    note_key: str = ""  # the page's string for what this chat is for

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": "supergroup", "title": self.title, "note": self.note_key}


@dataclass(frozen=True)
class Cast:
    identities: tuple[Identity, ...]
    groups: tuple[PlaygroundChat, ...] = field(default_factory=tuple)
    moderator_chat_id: int | None = None

    def identity(self, user_id: int) -> Identity | None:
        return next((i for i in self.identities if i.id == user_id), None)

    def group(self, chat_id: int) -> PlaygroundChat | None:
        return next((g for g in self.groups if g.id == chat_id), None)

    def ids(self, role: Role) -> list[int]:
        return [i.id for i in self.identities if i.role == role]

    @property
    def names(self) -> dict[int, str]:
        return {i.id: i.name for i in self.identities}


_NAMES = {
    "en": ("Anna", "Ben", "Mia (moderator)", "Alex (admin)", "Team chat", "Moderators"),
    "ru": ("Анна", "Борис", "Мия (модератор)", "Алекс (админ)", "Команда", "Модераторы"),
}


def default_cast(lang: str = "en") -> Cast:
    """Two end users, a moderator and an admin; a team group and the moderators' group
    (where review cards are posted: everyone is in it, so a plain user can try the buttons)."""
    anna, ben, mia, alex, team, mods = _NAMES.get(lang, _NAMES["en"])
    return Cast(
        identities=(
            Identity(101, anna, Role.user, lang, "anna"),
            Identity(102, ben, Role.user, lang, "ben"),
            Identity(201, mia, Role.moderator, lang, "mia"),
            Identity(301, alex, Role.admin, lang, "alex"),
        ),
        groups=(
            PlaygroundChat(TEAM_CHAT_ID, team, note_key="chat-note-team"),
            PlaygroundChat(
                MODERATORS_CHAT_ID, mods, bot_is_admin=True, note_key="chat-note-moderators"
            ),
        ),
        moderator_chat_id=MODERATORS_CHAT_ID,
    )
