"""What a webhook body must be before it is treated as an Update.

aiogram's model accepts extra fields, so a body with no known update kind, or several,
would validate; Telegram sends exactly one. Strings with U+0000 and integers beyond 64 bits
pass JSON and pydantic but break PostgreSQL later, so they are refused at the door.
"""

from __future__ import annotations

from typing import Any

from aiogram.types import Update

UPDATE_KINDS = frozenset(name for name in Update.model_fields if name != "update_id")
INT64_MAX = 2**63 - 1


def update_body_problem(data: Any) -> str | None:
    """None when `data` may be an Update, else the reason it may not."""
    if not isinstance(data, dict):
        return "body is not a JSON object"
    kinds = UPDATE_KINDS.intersection(data)
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
        elif isinstance(value, int) and abs(value) > INT64_MAX:
            return "an integer does not fit in 64 bits"
    return None
