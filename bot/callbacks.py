"""Typed callback data. All of it is untrusted: handlers re-check ownership and role."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from aiogram.filters.callback_data import CallbackData
from pydantic import Field

from loopgram.db import ID_MAX, ID_MIN

#: A row id: data naming one beyond 64 bits does not unpack, so the press is an invalid
#: button (`fallback.on_unknown_button`), not a lookup SQLite fails with OverflowError.
RowId = Annotated[int, Field(ge=ID_MIN, le=ID_MAX)]


class RateAction(StrEnum):
    up = "u"
    down = "d"
    regenerate = "g"
    retry = "t"


class RateCb(CallbackData, prefix="r"):
    action: RateAction
    iid: RowId


class ReasonCb(CallbackData, prefix="rr"):
    iid: RowId
    reason: str


class AssistantCb(CallbackData, prefix="as"):
    name: str


class OptionCb(CallbackData, prefix="o"):
    """Answer again with one option changed (a paraphrase's style, a summary's format)."""

    iid: RowId
    group: str
    value: str


class MeaningCb(CallbackData, prefix="mc"):
    """Check that a paraphrase kept the original's meaning."""

    iid: RowId


class ReviewAction(StrEnum):
    approve = "a"
    reject = "r"
    correct = "c"
    skip = "s"


class ReviewCb(CallbackData, prefix="rv"):
    """A moderator's button on a review card; the role is re-checked on every press."""

    item: RowId
    action: ReviewAction


class SourcesCb(CallbackData, prefix="src"):
    """📚 under an answer grounded in the knowledge base: show its sources."""

    iid: RowId


class ForgetCb(CallbackData, prefix="fg"):
    """Yes/No under the /forget question. `sig` is an HMAC of (uid, ts) made by this
    deployment (`loopgram.privacy.confirmation_signature`): only valid for `uid`, for a while."""

    yes: bool
    uid: int
    ts: int
    sig: str
