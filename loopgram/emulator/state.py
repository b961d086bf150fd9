"""What the emulated Telegram remembers: chats, messages with edit history, callback queries,
drafts, files, commands. Pending updates live in :mod:`.updates`."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import bad_request
from .files import FileStore

JsonDict = dict[str, Any]


@dataclass
class EmulatedChat:
    """A chat's identity. Private chats have the user's id; groups are supergroups by default."""

    id: int
    type: str
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    is_forum: bool = False
    bot_is_admin: bool = False  # admins see every group message and may delete others' messages
    admin_ids: set[int] = field(default_factory=set)  # users who administer this group

    @property
    def is_private(self) -> bool:
        return self.type == "private"

    def to_api(self) -> JsonDict:
        """The ``Chat`` object embedded in messages."""
        body: JsonDict = {"id": self.id}
        for key in ("title", "username", "first_name", "last_name"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        body["type"] = self.type
        if self.is_forum:
            body["is_forum"] = True
        return body

    def full_info(self) -> JsonDict:
        """The ``ChatFullInfo`` object of getChat."""
        return {
            **self.to_api(),
            "accent_color_id": abs(self.id) % 7,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": True,
                "limited_gifts": True,
                "unique_gifts": True,
                "premium_subscription": True,
                "gifts_from_channels": True,
            },
        }


@dataclass
class StoredMessage:
    data: JsonDict  # the current Message object
    from_bot: bool
    edits: list[JsonDict] = field(default_factory=list)  # earlier versions, oldest first
    deleted: bool = False
    # Reply keyboards are not part of the Message object; kept so tests can inspect them.
    reply_keyboard: JsonDict | None = None

    @property
    def message_id(self) -> int:
        return int(self.data["message_id"])

    def snapshot(self) -> JsonDict:
        view = copy.deepcopy(self.data)
        view["edits"] = copy.deepcopy(self.edits)
        if self.reply_keyboard is not None:
            view["reply_keyboard"] = copy.deepcopy(self.reply_keyboard)
        return view

    def record_edit(self) -> None:
        self.edits.append(copy.deepcopy(self.data))


@dataclass
class ChatState:
    chat: EmulatedChat
    messages: dict[int, StoredMessage] = field(default_factory=dict)
    next_message_id: int = 1
    started: bool = False  # a private chat exists for the bot once the user has written to it
    blocked: bool = False
    reactions: dict[tuple[int, int], list[JsonDict]] = field(default_factory=dict)

    def allocate_message_id(self) -> int:
        message_id = self.next_message_id
        self.next_message_id += 1
        return message_id

    def add(self, message: StoredMessage) -> StoredMessage:
        self.messages[message.message_id] = message
        self.next_message_id = max(self.next_message_id, message.message_id + 1)
        return message

    def get(self, message_id: int) -> StoredMessage | None:
        message = self.messages.get(message_id)
        return None if message is None or message.deleted else message

    def snapshots(self, bot_only: bool = False) -> list[JsonDict]:
        """Current messages in order (deleted ones left out), each with its "edits"."""
        return [
            m.snapshot()
            for m in self.messages.values()
            if not m.deleted and (m.from_bot or not bot_only)
        ]


@dataclass
class Draft:
    chat_id: int
    draft_id: int
    message_thread_id: int | None
    text: str
    entities: list[JsonDict]
    history: list[JsonDict] = field(default_factory=list)
    active: bool = True  # a draft disappears once the bot sends a message to the chat

    def to_dict(self) -> JsonDict:
        return copy.deepcopy(
            {
                "chat_id": self.chat_id,
                "draft_id": self.draft_id,
                "message_thread_id": self.message_thread_id,
                "text": self.text,
                "entities": self.entities,
                "active": self.active,
                "history": self.history,
            }
        )


@dataclass
class CallbackQuery:
    id: str
    user_id: int
    chat_id: int
    message_id: int
    data: str
    created_at: float  # Clock.monotonic()
    forged: bool = False  # data that no button on the message carries
    answered: bool = False


@dataclass
class BotOutput:
    """A message the bot sent or edited, in order, for wait_for_bot_message."""

    chat_id: int
    kind: str  # "sent" | "edited"
    message: JsonDict


class EmulatorState:
    def __init__(self) -> None:
        self.chats: dict[int, ChatState] = {}
        self.users: dict[int, JsonDict] = {}
        self.drafts: dict[tuple[int, int], Draft] = {}
        self.callback_queries: dict[str, CallbackQuery] = {}
        self.callback_answers: list[JsonDict] = []
        self.files = FileStore()
        self.commands: dict[tuple[str, str], list[JsonDict]] = {}
        self.chat_actions: list[JsonDict] = []
        self.outputs: list[BotOutput] = []

    def add_chat(self, chat: EmulatedChat) -> ChatState:
        state = self.chats.get(chat.id)
        if state is None:
            state = self.chats[chat.id] = ChatState(chat)
        else:
            state.chat = chat
        return state

    def chat(self, chat_ref: int | str) -> ChatState:
        """Resolve a chat id or @username the way the server does, or fail "chat not found"."""
        if isinstance(chat_ref, str):
            wanted = chat_ref.lstrip("@").lower()
            for state in self.chats.values():
                if (state.chat.username or "").lower() == wanted:
                    return state
        elif chat_ref in self.chats:
            return self.chats[chat_ref]
        raise bad_request("chat not found")

    def record_output(self, chat_id: int, kind: str, message: StoredMessage) -> None:
        self.outputs.append(BotOutput(chat_id, kind, message.snapshot()))


def commands_key(scope: JsonDict | None, language_code: str | None) -> tuple[str, str]:
    """Commands are stored per (scope, language), as setMyCommands documents."""
    return json.dumps(scope or {"type": "default"}, sort_keys=True), language_code or ""
