"""reply_markup validation with the server's error texts.

Only inline keyboards become part of a Message; reply keyboards, ReplyKeyboardRemove and
ForceReply are accepted and returned separately so the emulator can show them.
"""

from __future__ import annotations

from typing import Any

from .errors import bad_request
from .links import normalize_url

JsonDict = dict[str, Any]

_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_DECORATIONS = ("style", "icon_custom_emoji_id")
_BAD_MARKUP = "can't parse reply keyboard markup JSON object"
_BUTTON = "can't parse inline keyboard button: "


def parse_reply_markup(raw: Any) -> tuple[JsonDict | None, JsonDict | None]:
    """Return (inline keyboard for the Message, other keyboard kinds)."""
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise bad_request(_BAD_MARKUP)
    if "inline_keyboard" in raw:
        return _inline_keyboard(raw["inline_keyboard"]), None
    if "keyboard" in raw:
        _check_reply_keyboard(raw["keyboard"])
        return None, raw
    if raw.get("remove_keyboard") is True or raw.get("force_reply") is True:
        return None, raw
    raise bad_request(_BAD_MARKUP)


def _inline_keyboard(rows: Any) -> JsonDict | None:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request(
            'field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
        )
    normalized = [[_inline_button(button) for button in row] for row in rows]
    normalized = [row for row in normalized if row]
    # An empty keyboard is no keyboard: the Message then has no reply_markup.
    return {"inline_keyboard": normalized} if normalized else None


def _inline_button(button: Any) -> JsonDict:
    if not isinstance(button, dict):
        raise bad_request(_BUTTON + "InlineKeyboardButton should be an Object")
    text = button.get("text")
    if not isinstance(text, str):
        raise bad_request(_BUTTON + 'Field "text" must be of type String')
    if not text.strip():
        raise bad_request("BUTTON_TEXT_INVALID")
    actions = [key for key in _ACTIONS if button.get(key) is not None]
    if not actions:
        raise bad_request(_BUTTON + "Text buttons are unallowed in the inline keyboard")
    if len(actions) > 1:
        # The docs require exactly one; the real server silently uses the first one it knows.
        raise bad_request(_BUTTON + "exactly one of the optional fields must be used")
    action = actions[0]
    value = button[action]
    if action == "callback_data":
        if not isinstance(value, str) or not 1 <= len(value.encode("utf-8")) <= 64:
            raise bad_request("BUTTON_DATA_INVALID")
    elif action == "url":
        if not isinstance(value, str) or normalize_url(value) is None:
            raise bad_request(f"inline keyboard button URL '{value}' is invalid: Wrong HTTP URL")
        value = normalize_url(value)
    result: JsonDict = {"text": text}
    result.update({key: button[key] for key in _DECORATIONS if button.get(key) is not None})
    result[action] = value
    return result


def _check_reply_keyboard(rows: Any) -> None:
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise bad_request(
            'field "keyboard" of the ReplyKeyboardMarkup should be an Array of Arrays'
        )
    for row in rows:
        for button in row:
            text = (
                button
                if isinstance(button, str)
                else (button.get("text") if isinstance(button, dict) else None)
            )
            if not isinstance(text, str):
                raise bad_request(
                    'can\'t parse keyboard button: Field "text" must be of type String'
                )


def find_button(markup: JsonDict | None, wanted: str) -> JsonDict | None:
    """A button on an inline keyboard by its text, else by its callback_data."""
    buttons = [b for row in (markup or {}).get("inline_keyboard", []) for b in row]
    for key in ("text", "callback_data"):
        for button in buttons:
            if isinstance(button, dict) and button.get(key) == wanted:
                return dict(button)
    return None
