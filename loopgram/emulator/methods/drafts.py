"""sendMessageDraft: streamed partial messages in private chats."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import errors
from ..errors import bad_request, method_not_found
from ..formatting import MESSAGE_LIMIT, check_length, formatted
from ..state import Draft
from .registry import api_method

if TYPE_CHECKING:
    from ..core import EmulatorCore
    from ..params import Params


@api_method("sendMessageDraft")
async def send_message_draft(core: EmulatorCore, p: Params) -> bool:
    if not core.config.drafts_supported:
        raise method_not_found()  # what a server without the method answers
    chat_ref = p.chat_id()
    draft_id = p.integer("draft_id")
    if not draft_id:
        raise bad_request("draft_id must be non-zero")
    # Empty text is allowed: the client shows a "Thinking…" placeholder (Bot API 10.x).
    text, entities = formatted(p, "text", "parse_mode", "entities")
    check_length(text, MESSAGE_LIMIT, errors.TEXT_TOO_LONG)
    chat = core.state.chat(chat_ref)
    if not chat.chat.is_private:
        raise bad_request("TEXTDRAFT_PEER_INVALID")
    chat = core.chat_for_sending(chat_ref)
    thread_id = p.integer("message_thread_id") or None
    p.flag("can_stop")
    p.flag("keep_on_stop")
    key = (chat.chat.id, draft_id)
    draft = core.state.drafts.get(key)
    if draft is None:
        draft = core.state.drafts[key] = Draft(chat.chat.id, draft_id, thread_id, text, entities)
    draft.text, draft.entities, draft.message_thread_id, draft.active = (
        text,
        entities,
        thread_id,
        True,
    )
    draft.history.append({"text": text, "entities": entities, "time": core.clock.monotonic()})
    return True
