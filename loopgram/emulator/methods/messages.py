"""Text messages: sendMessage, editMessageText, editMessageReplyMarkup, deleteMessage, plus
getChat, getChatMember and sendChatAction."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from .. import errors
from ..errors import bad_request
from ..formatting import MESSAGE_LIMIT, check_length, formatted
from ..keyboards import parse_reply_markup
from ..outgoing import REPLY_MARKUP_INVALID, read_envelope, send
from ..state import StoredMessage
from .registry import api_method

if TYPE_CHECKING:
    from ..core import EmulatorCore
    from ..params import Params

JsonDict = dict[str, Any]
_CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_DELETE_WINDOW = 48 * 3600


def _message_text(p: Params) -> tuple[str, list[JsonDict]]:
    text, entities = formatted(p, "text", "parse_mode", "entities")
    if not text:
        raise bad_request(errors.TEXT_EMPTY)
    check_length(text, MESSAGE_LIMIT, errors.TEXT_TOO_LONG)
    return text, entities


def _link_preview(p: Params, entities: list[JsonDict]) -> JsonDict | None:
    options = p.json_value("link_preview_options", "can't parse link preview options JSON object")
    if options is None and p.flag("disable_web_page_preview"):
        options = {"is_disabled": True}
    if not isinstance(options, dict) or not any(
        e["type"] in ("url", "text_link") for e in entities
    ):
        return None  # the server reports preview options only for messages with a link
    return options


@api_method("sendMessage")
async def send_message(core: EmulatorCore, p: Params) -> JsonDict:
    chat_ref = p.chat_id()
    text, entities = _message_text(p)
    envelope = read_envelope(p)
    content: JsonDict = {"text": text}
    if entities:
        content["entities"] = entities
    preview = _link_preview(p, entities)
    if preview is not None:
        content["link_preview_options"] = preview
    message = send(core, core.chat_for_sending(chat_ref), envelope, content)
    return copy.deepcopy(message.data)


def _own_message(core: EmulatorCore, p: Params, not_found: str) -> StoredMessage:
    if p.present("inline_message_id"):
        raise bad_request("MESSAGE_ID_INVALID")  # inline mode is not emulated
    chat_ref = p.chat_id()
    message_id = p.integer("message_id")
    if not message_id:
        raise bad_request("message identifier is not specified")
    message = core.state.chat(chat_ref).get(message_id)
    if message is None:
        raise bad_request(not_found)
    if not message.from_bot:
        raise bad_request("message can't be edited")
    return message


def _apply_edit(core: EmulatorCore, message: StoredMessage, changes: JsonDict) -> JsonDict:
    current = {key: message.data.get(key) for key in changes}
    if current == changes:
        raise bad_request(errors.NOT_MODIFIED)
    message.record_edit()
    for key, value in changes.items():
        if value is None:
            message.data.pop(key, None)
        else:
            message.data[key] = value
    message.data["edit_date"] = core.clock.unix()
    core.state.record_output(int(message.data["chat"]["id"]), "edited", message)
    return copy.deepcopy(message.data)


def _inline_markup(p: Params) -> JsonDict | None:
    inline, other = parse_reply_markup(p.json_value("reply_markup", REPLY_MARKUP_INVALID))
    if other is not None:
        raise bad_request("inline keyboard expected")
    return inline


@api_method("editMessageText")
async def edit_message_text(core: EmulatorCore, p: Params) -> JsonDict:
    text, entities = _message_text(p)
    markup = _inline_markup(p)
    message = _own_message(core, p, "message to edit not found")
    if "text" not in message.data:
        raise bad_request("there is no text in the message to edit")
    # Without reply_markup the server removes the keyboard: a classic source of bugs.
    changes: JsonDict = {"text": text, "entities": entities or None, "reply_markup": markup}
    preview = _link_preview(p, entities)
    if preview is not None:
        changes["link_preview_options"] = preview
    return _apply_edit(core, message, changes)


@api_method("editMessageReplyMarkup")
async def edit_message_reply_markup(core: EmulatorCore, p: Params) -> JsonDict:
    markup = _inline_markup(p)
    message = _own_message(core, p, "message to edit not found")
    return _apply_edit(core, message, {"reply_markup": markup})


@api_method("deleteMessage")
async def delete_message(core: EmulatorCore, p: Params) -> bool:
    chat = core.state.chat(p.chat_id())
    message_id = p.integer("message_id")
    if not message_id:
        raise bad_request("message identifier is not specified")
    message = chat.get(message_id)
    if message is None:
        raise bad_request("message to delete not found")
    if not message.from_bot and not chat.chat.is_private and not chat.chat.bot_is_admin:
        raise bad_request("message can't be deleted")
    if core.clock.unix() - int(message.data["date"]) > _DELETE_WINDOW and not (
        message.from_bot and chat.chat.is_private
    ):
        raise bad_request("message can't be deleted for everyone")
    message.deleted = True
    return True


@api_method("getChat")
async def get_chat(core: EmulatorCore, p: Params) -> JsonDict:
    return core.state.chat(p.chat_id()).chat.full_info()


@api_method("getChatMember")
async def get_chat_member(core: EmulatorCore, p: Params) -> JsonDict:
    chat = core.state.chat(p.chat_id()).chat
    user_id = p.integer("user_id")
    user = core.state.users.get(user_id or 0)
    if user is None:
        raise bad_request("user not found")
    if chat.is_private:
        return {"status": "member", "user": user}
    if user_id in chat.admin_ids:
        rights = dict.fromkeys(_ADMIN_RIGHTS, True)
        return {
            "status": "administrator",
            "user": user,
            "can_be_edited": False,
            "is_anonymous": False,
            **rights,
        }
    return {"status": "member", "user": user}


_ADMIN_RIGHTS = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
    "can_send_welcome_messages",
)


@api_method("sendChatAction")
async def send_chat_action(core: EmulatorCore, p: Params) -> bool:
    chat_ref = p.chat_id()
    action = p.text("action") or ""
    if action not in _CHAT_ACTIONS:
        raise bad_request("wrong parameter action in request")
    chat = core.chat_for_sending(chat_ref)
    core.state.chat_actions.append(
        {
            "chat_id": chat.chat.id,
            "action": action,
            "message_thread_id": p.integer("message_thread_id"),
            "time": core.clock.monotonic(),
        }
    )
    return True
