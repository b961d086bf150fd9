"""answerCallbackQuery."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import QUERY_TOO_OLD, bad_request
from .registry import api_method

if TYPE_CHECKING:
    from ..core import EmulatorCore
    from ..params import Params

ANSWER_WINDOW = 15 * 60  # seconds a callback query stays answerable


@api_method("answerCallbackQuery")
async def answer_callback_query(core: EmulatorCore, p: Params) -> bool:
    query = core.state.callback_queries.get(p.text("callback_query_id") or "")
    if query is None or query.answered or core.clock.monotonic() - query.created_at > ANSWER_WINDOW:
        raise bad_request(QUERY_TOO_OLD)
    text = p.text("text")
    if text is not None and len(text) > 200:
        raise bad_request("MESSAGE_TOO_LONG")
    query.answered = True
    core.state.callback_answers.append(
        {
            "callback_query_id": query.id,
            "text": text,
            "show_alert": p.flag("show_alert"),
            "url": p.text("url"),
            "cache_time": p.integer("cache_time") or 0,
            "data": query.data,
            "user_id": query.user_id,
            "chat_id": query.chat_id,
            "message_id": query.message_id,
        }
    )
    return True
