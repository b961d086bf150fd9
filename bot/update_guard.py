"""What a webhook body must be before it is treated as an Update.

aiogram's model accepts extra fields, so a body with no known update kind, or several,
would validate; Telegram sends exactly one. Strings with U+0000 and integers beyond 64 bits
pass JSON and pydantic but break PostgreSQL later, so they are refused at the door.
"""

from __future__ import annotations

from typing import Any

from aiogram.types import Update

from loopgram.db import ID_MAX

UPDATE_KINDS = frozenset(name for name in Update.model_fields if name != "update_id")


def update_body_problem(data: Any) -> str | None:
    """None when `data` may be an Update, else the reason it may not."""
    if not isinstance(data, dict):
        return "body is not a JSON object"
    # `"message": null` is no message: aiogram validates it and then finds no update kind.
    kinds = [kind for kind in UPDATE_KINDS.intersection(data) if data[kind] is not None]
    if len(kinds) != 1:
        return f"an Update carries exactly one update kind, this one has {len(kinds)}"
    return _bad_scalar(data)


def _bad_scalar(data: Any) -> str | None:
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and "\x00" in value:
            return "a string holds U+0000"
        elif isinstance(value, int) and abs(value) > ID_MAX:
            return "an integer does not fit in 64 bits"
    return None
