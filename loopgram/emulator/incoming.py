"""Updates caused by people: messages, edits, button presses, reactions, raw updates.

Group messages are filtered like Telegram's privacy mode when it is on: a bot that is not an
admin sees only commands, replies to its own messages and service messages.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from .formatting import format_text
from .keyboards import find_button
from .state import CallbackQuery, ChatState, EmulatedChat, StoredMessage

if TYPE_CHECKING:
    from .core import EmulatorCore

JsonDict = dict[str, Any]


def user_message(
    core: EmulatorCore,
    user: JsonDict,
    chat: ChatState,
    content: JsonDict,
    reply_to: int | None = None,
    thread_id: int | None = None,
) -> JsonDict:
    """Store a message a user sent and queue its ``message`` update."""
    data: JsonDict = {"message_id": chat.allocate_message_id()}
    if thread_id is not None:
        data["message_thread_id"] = thread_id
    data.update({"from": dict(user), "chat": chat.chat.to_api(), "date": core.clock.unix()})
    if reply_to is not None:
        target = chat.get(reply_to)
        if target is None:
            raise ValueError(f"message {reply_to} not found in chat {chat.chat.id}")
        data["reply_to_message"] = {k: v for k, v in target.data.items() if k != "reply_to_message"}
    data.update(content)
    message = chat.add(StoredMessage(data, from_bot=False))
    if chat.chat.is_private:
        chat.started = True
    if _bot_sees(core, chat, data):
        core.updates.push({"message": copy.deepcopy(data)})
    return copy.deepcopy(message.data)


def text_content(text: str, entities: list[JsonDict] | None = None) -> JsonDict:
    """A user's text with the entities the client and server would attach."""
    plain, found = format_text(text, None, entities)
    content: JsonDict = {"text": plain}
    if found:
        content["entities"] = found
    return content


def user_edit(
    core: EmulatorCore, user: JsonDict, chat: ChatState, message_id: int, text: str
) -> JsonDict:
    message = chat.get(message_id)
    if message is None or message.from_bot or message.data["from"]["id"] != user["id"]:
        raise ValueError(f"user {user['id']} has no message {message_id} in chat {chat.chat.id}")
    message.record_edit()
    message.data.pop("entities", None)
    message.data.update(text_content(text))
    message.data["edit_date"] = core.clock.unix()
    if _bot_sees(core, chat, message.data):
        core.updates.push({"edited_message": copy.deepcopy(message.data)})
    return copy.deepcopy(message.data)


def press_button(
    core: EmulatorCore, user: JsonDict, chat: ChatState, message_id: int, wanted: str
) -> str:
    """Create a callback_query for the button with this text or data; unknown data is sent
    as is (forged), since real clients can be made to send anything."""
    message = chat.get(message_id)
    if message is None:
        raise ValueError(f"message {message_id} not found in chat {chat.chat.id}")
    button = find_button(message.data.get("reply_markup"), wanted)
    if button is not None and "callback_data" not in button:
        raise ValueError(f"button {wanted!r} has no callback_data: {button}")
    data = button["callback_data"] if button is not None else wanted
    query_id = f"{abs(int(user['id']))}{len(core.state.callback_queries) + 1:08d}"
    core.state.callback_queries[query_id] = CallbackQuery(
        query_id,
        int(user["id"]),
        chat.chat.id,
        message_id,
        data,
        core.clock.monotonic(),
        forged=button is None,
    )
    core.updates.push(
        {
            "callback_query": {
                "id": query_id,
                "from": dict(user),
                "message": copy.deepcopy(message.data),
                "chat_instance": str(-(abs(chat.chat.id) * 2654435761 % 2**62)),
                "data": data,
            }
        }
    )
    return query_id


def react(
    core: EmulatorCore, user: JsonDict, chat: ChatState, message_id: int, emoji: str | None
) -> JsonDict:
    """Set (or with None, remove) the user's reaction; bots get it only as a group admin."""
    if chat.get(message_id) is None:
        raise ValueError(f"message {message_id} not found in chat {chat.chat.id}")
    key = (message_id, int(user["id"]))
    old = chat.reactions.get(key, [])
    new = [{"type": "emoji", "emoji": emoji}] if emoji else []
    chat.reactions[key] = new
    event = {
        "chat": chat.chat.to_api(),
        "message_id": message_id,
        "user": dict(user),
        "date": core.clock.unix(),
        "old_reaction": old,
        "new_reaction": new,
    }
    if chat.chat.is_private or chat.chat.bot_is_admin:
        core.updates.push({"message_reaction": copy.deepcopy(event)})
    return event


def ingest_raw_update(core: EmulatorCore, update: JsonDict) -> int:
    """Queue a raw Update; messages in it are also stored so the chat history shows them."""
    for key in ("message", "edited_message"):
        message = update.get(key)
        if isinstance(message, dict) and isinstance(message.get("chat"), dict):
            chat = _chat_of(core, message["chat"])
            if key == "message" and isinstance(message.get("message_id"), int):
                chat.add(StoredMessage(copy.deepcopy(message), from_bot=False))
            if chat.chat.is_private:
                chat.started = True
    return core.updates.push(copy.deepcopy(update))


def _chat_of(core: EmulatorCore, chat_json: JsonDict) -> ChatState:
    chat_id = int(chat_json["id"])
    if chat_id in core.state.chats:
        return core.state.chats[chat_id]
    return core.state.add_chat(
        EmulatedChat(
            chat_id,
            str(chat_json.get("type", "private")),
            chat_json.get("title"),
            chat_json.get("username"),
            chat_json.get("first_name"),
            chat_json.get("last_name"),
        )
    )


def _bot_sees(core: EmulatorCore, chat: ChatState, data: JsonDict) -> bool:
    if chat.chat.is_private or not core.config.privacy_mode or chat.chat.bot_is_admin:
        return True
    reply = data.get("reply_to_message")
    if isinstance(reply, dict) and reply.get("from", {}).get("id") == core.bot_id:
        return True
    username = str(core.config.bot_user.get("username", "")).lower()
    text = str(data.get("text") or data.get("caption") or "")
    for entity in data.get("entities") or data.get("caption_entities") or []:
        if entity["type"] == "bot_command" and entity["offset"] == 0:
            command = text[: entity["length"]]
            target = command.partition("@")[2].lower()
            return target in ("", username)
    return False
