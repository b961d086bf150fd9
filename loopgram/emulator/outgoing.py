"""The parts every bot-sent message shares: keyboard, reply target, thread, protection,
flood control, and storing the resulting Message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import bad_request
from .keyboards import parse_reply_markup
from .params import Params
from .state import ChatState, StoredMessage
from .utf16 import utf16_len

if TYPE_CHECKING:
    from .core import EmulatorCore

JsonDict = dict[str, Any]
REPLY_MARKUP_INVALID = "can't parse reply keyboard markup JSON object"


@dataclass
class Envelope:
    inline_markup: JsonDict | None
    other_markup: JsonDict | None
    reply_to: int | None
    allow_without_reply: bool
    quote: str | None
    thread_id: int | None
    protect: bool


def read_envelope(p: Params) -> Envelope:
    """Validate the common send parameters before the chat is looked up, like the server."""
    inline, other = parse_reply_markup(p.json_value("reply_markup", REPLY_MARKUP_INVALID))
    reply_to: int | None = None
    allow = False
    quote = None
    parameters = p.json_value("reply_parameters", "can't parse reply parameters JSON object")
    if parameters is not None:
        if not isinstance(parameters, dict) or not isinstance(parameters.get("message_id"), int):
            raise bad_request("can't parse reply parameters JSON object")
        reply_to = parameters["message_id"]
        allow = bool(parameters.get("allow_sending_without_reply"))
        quote = parameters.get("quote")
    else:
        reply_to = p.integer("reply_to_message_id") or None  # the pre-7.0 parameters
        allow = p.flag("allow_sending_without_reply")
    p.flag("disable_notification")  # only recorded: a notification is not observable here
    return Envelope(
        inline,
        other,
        reply_to,
        allow,
        quote,
        p.integer("message_thread_id") or None,
        p.flag("protect_content"),
    )


def send(
    core: EmulatorCore, chat: ChatState, envelope: Envelope, content: JsonDict
) -> StoredMessage:
    """Build, store and return a bot message with ``content`` (text or media fields)."""
    reply = _reply_target(chat, envelope)
    core.check_flood(chat)
    data: JsonDict = {"message_id": chat.allocate_message_id()}
    if envelope.thread_id is not None:
        data["message_thread_id"] = envelope.thread_id
        if chat.chat.is_forum:
            data["is_topic_message"] = True
    data["from"] = dict(core.config.bot_user)
    data["chat"] = chat.chat.to_api()
    data["date"] = core.clock.unix()
    if reply is not None:
        data["reply_to_message"] = reply
        if envelope.quote:
            data["quote"] = _quote(reply, envelope.quote)
    data.update(content)
    if envelope.inline_markup is not None:
        data["reply_markup"] = envelope.inline_markup
    if envelope.protect:
        data["has_protected_content"] = True
    return core.store_bot_message(chat, data, envelope.other_markup)


def _reply_target(chat: ChatState, envelope: Envelope) -> JsonDict | None:
    if envelope.reply_to is None:
        return None
    target = chat.get(envelope.reply_to)
    if target is None:
        if envelope.allow_without_reply:
            return None
        raise bad_request("message to be replied not found")
    # Telegram nests one level only: the replied message comes without its own reply.
    return {k: v for k, v in target.data.items() if k != "reply_to_message"}


def _quote(reply: JsonDict, quote: str) -> JsonDict:
    source = reply.get("text") or reply.get("caption") or ""
    index = source.find(quote)
    if index < 0:
        raise bad_request("QUOTE_TEXT_INVALID")
    return {"text": quote, "position": utf16_len(source[:index]), "is_manual": True}
