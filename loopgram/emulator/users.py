"""EmulatedUser: a person talking to the bot, in a private chat or in groups."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import incoming
from .files import document_json, photo_sizes, sticker_json, tiny_png, voice_json
from .state import ChatState, EmulatedChat

if TYPE_CHECKING:
    from .core import EmulatorCore

JsonDict = dict[str, Any]
MessageRef = JsonDict | int
# Enough of an Ogg page header that sniffers recognise the format.
_OGG_STUB = b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead\x01\x01"


class EmulatedUser:
    def __init__(
        self,
        core: EmulatorCore,
        user_id: int,
        first_name: str,
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        is_premium: bool = False,
    ) -> None:
        self._core = core
        self.id = user_id
        self.first_name = first_name
        self.last_name = last_name
        self.username = username
        self.language_code = language_code
        self.is_premium = is_premium
        self.chat = EmulatedChat(
            user_id, "private", username=username, first_name=first_name, last_name=last_name
        )
        core.state.add_chat(self.chat)
        core.state.users[user_id] = self.to_api()

    def to_api(self) -> JsonDict:
        """The ``User`` object."""
        body: JsonDict = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.is_premium:
            body["is_premium"] = True
        return body

    def _chat(self, chat: EmulatedChat | None) -> ChatState:
        return (
            self._core.state.add_chat(chat) if chat is not None else self._core.state.chats[self.id]
        )

    async def send_text(
        self,
        text: str,
        *,
        chat: EmulatedChat | None = None,
        reply_to: MessageRef | None = None,
        entities: list[JsonDict] | None = None,
        message_thread_id: int | None = None,
    ) -> JsonDict:
        """Send text; mention, command, URL and hashtag entities are added automatically."""
        return incoming.user_message(
            self._core,
            self.to_api(),
            self._chat(chat),
            incoming.text_content(text, entities),
            _id(reply_to),
            message_thread_id,
        )

    async def send_sticker(
        self,
        emoji: str = "👍",
        *,
        chat: EmulatedChat | None = None,
        reply_to: MessageRef | None = None,
    ) -> JsonDict:
        stored = self._core.state.files.add("sticker", b"RIFF\x00\x00\x00\x00WEBPVP8 ")
        content = {"sticker": sticker_json(stored, emoji, "LoopgramEmulator")}
        return self._send(content, chat, reply_to)

    async def send_photo(
        self,
        data: bytes | None = None,
        *,
        caption: str | None = None,
        chat: EmulatedChat | None = None,
        reply_to: MessageRef | None = None,
    ) -> JsonDict:
        files = self._core.state.files
        stored = files.add("photo", data if data is not None else tiny_png())
        return self._send(
            {"photo": photo_sizes(stored, files), **_caption(caption)}, chat, reply_to
        )

    async def send_voice(
        self,
        data: bytes | None = None,
        *,
        duration: int = 3,
        chat: EmulatedChat | None = None,
        reply_to: MessageRef | None = None,
    ) -> JsonDict:
        stored = self._core.state.files.add("voice", data if data is not None else _OGG_STUB)
        return self._send({"voice": voice_json(stored, duration)}, chat, reply_to)

    async def send_document(
        self,
        data: bytes,
        file_name: str,
        mime_type: str | None = None,
        *,
        caption: str | None = None,
        chat: EmulatedChat | None = None,
        reply_to: MessageRef | None = None,
    ) -> JsonDict:
        stored = self._core.state.files.add("document", data, file_name, mime_type)
        return self._send({"document": document_json(stored), **_caption(caption)}, chat, reply_to)

    async def edit_text(
        self, message_id: int, text: str, *, chat: EmulatedChat | None = None
    ) -> JsonDict:
        """Edit one of this user's messages; the bot gets an ``edited_message``."""
        return incoming.user_edit(self._core, self.to_api(), self._chat(chat), message_id, text)

    async def press(
        self, message: MessageRef, button: str, *, chat: EmulatedChat | None = None
    ) -> str:
        """Press an inline button (by text or callback_data) on a bot message; a string that
        matches no button is sent as forged callback data. Returns the callback query id."""
        state = self._message_chat(message, chat)
        return incoming.press_button(
            self._core, self.to_api(), state, _id_required(message), button
        )

    async def react(
        self, message: MessageRef, emoji: str | None, *, chat: EmulatedChat | None = None
    ) -> JsonDict:
        """Set a reaction (None removes it); returns the MessageReactionUpdated object."""
        state = self._message_chat(message, chat)
        return incoming.react(self._core, self.to_api(), state, _id_required(message), emoji)

    def delete(self, message: MessageRef, *, chat: EmulatedChat | None = None) -> None:
        """Delete a message, as people do right after sending one; Telegram tells the bot
        nothing, but a reply to it is refused from then on."""
        stored = self._message_chat(message, chat).get(_id_required(message))
        if stored is None:
            raise KeyError(f"no message {_id_required(message)} to delete")
        stored.deleted = True

    def block(self) -> None:
        """Block the bot: its sends to this user fail with 403 like in production."""
        self._core.state.chats[self.id].blocked = True

    def unblock(self) -> None:
        self._core.state.chats[self.id].blocked = False

    def _send(
        self, content: JsonDict, chat: EmulatedChat | None, reply_to: MessageRef | None
    ) -> JsonDict:
        return incoming.user_message(
            self._core, self.to_api(), self._chat(chat), content, _id(reply_to)
        )

    def _message_chat(self, message: MessageRef, chat: EmulatedChat | None) -> ChatState:
        if chat is None and isinstance(message, dict):
            return self._core.state.chat(int(message["chat"]["id"]))
        return self._chat(chat)

    def __repr__(self) -> str:
        return f"EmulatedUser(id={self.id}, first_name={self.first_name!r})"


def _id(message: MessageRef | None) -> int | None:
    if message is None:
        return None
    return _id_required(message)


def _id_required(message: MessageRef) -> int:
    return int(message["message_id"]) if isinstance(message, dict) else int(message)


def _caption(caption: str | None) -> JsonDict:
    if not caption:
        return {}
    content = incoming.text_content(caption)
    result: JsonDict = {"caption": content["text"]}
    if "entities" in content:
        result["caption_entities"] = content["entities"]
    return result
