"""Errors that carry a user-facing message key (see the locale files)."""

from __future__ import annotations

from typing import Any


class LoopgramError(Exception):
    """A domain error a user can read: handlers localise `key`, the CLI prints it in one line."""

    key = "error-generic"

    def __init__(self, message: str = "", *, key: str | None = None, **params: Any) -> None:
        super().__init__(message or (key or self.key))
        if key is not None:
            self.key = key
        self.params = params


class ModelUnavailableError(LoopgramError):
    key = "error-model-unavailable"


class InputTooLongError(LoopgramError):
    key = "error-input-too-long"


class NotAllowedError(LoopgramError):
    key = "error-not-allowed"


class NotFoundError(LoopgramError):
    key = "error-not-found"
