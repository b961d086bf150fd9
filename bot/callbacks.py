"""Typed callback data. All of it is untrusted: handlers re-check ownership and role."""

from __future__ import annotations

from enum import StrEnum

from aiogram.filters.callback_data import CallbackData


class RateAction(StrEnum):
    up = "u"
    down = "d"
    regenerate = "g"
    retry = "t"


class RateCb(CallbackData, prefix="r"):
    action: RateAction
    iid: int


class ReasonCb(CallbackData, prefix="rr"):
    iid: int
    reason: str


class AssistantCb(CallbackData, prefix="as"):
    name: str


class OptionCb(CallbackData, prefix="o"):
    """Answer again with one option changed (a paraphrase's style, a summary's format)."""

    iid: int
    group: str
    value: str


class MeaningCb(CallbackData, prefix="mc"):
    """Check that a paraphrase kept the original's meaning."""

    iid: int


class ReviewAction(StrEnum):
    approve = "a"
    reject = "r"
    correct = "c"
    skip = "s"


class ReviewCb(CallbackData, prefix="rv"):
    """A moderator's button on a review card; the role is re-checked on every press."""

    item: int
    action: ReviewAction


class SourcesCb(CallbackData, prefix="src"):
    """📚 under an answer grounded in the knowledge base: show its sources."""

    iid: int


class ForgetCb(CallbackData, prefix="fg"):
    """Yes/No under the /forget question. `sig` is an HMAC of (uid, ts) made by this
    deployment (`loopgram.privacy.confirmation_signature`): only valid for `uid`, for a while."""

    yes: bool
    uid: int
    ts: int
    sig: str
