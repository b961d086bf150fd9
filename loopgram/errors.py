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


class ModelNotServedError(ModelUnavailableError):
    """The model server answered 404 for the requested model: an adapter that is no longer
    loaded (a canary rolled back, an adapter unloaded) while a bot still routed to it."""


class InputTooLongError(LoopgramError):
    key = "error-input-too-long"


class NotAllowedError(LoopgramError):
    key = "error-not-allowed"


class NotFoundError(LoopgramError):
    key = "error-not-found"


class FileUnsupportedError(LoopgramError):
    """A file type the bot cannot read (see `loopgram.documents.SUPPORTED_SUFFIXES`)."""

    key = "file-unsupported"


class FileTooBigError(LoopgramError):
    """A file (or what it unpacks to) over a size limit; carries `limit_kb` for the text."""

    key = "file-too-big"


class FileBrokenError(LoopgramError):
    """A file of a known type that cannot be opened: corrupt, truncated or mislabelled."""

    key = "file-broken"


class FileEncryptedError(FileBrokenError):
    """A password-protected file: a PDF with a user password, a Word file with a password."""

    key = "file-encrypted"


class FileEmptyError(LoopgramError):
    """A file with nothing in it (zero bytes, or only whitespace)."""

    key = "file-empty"


class FileNoTextError(FileEmptyError):
    """A file that opens but holds no text, e.g. a scanned PDF without a text layer."""

    key = "file-no-text"


class FileNotUtf8Error(LoopgramError):
    """A text file in an encoding we cannot recognise."""

    key = "file-not-utf8"


class UnknownEmbeddingModelError(LoopgramError):
    """`EMBEDDING_MODEL` (or a caller) named an embedding model this build does not know.

    An operator's configuration mistake, not the user's: they see the generic error text.
    """

    key = "error-generic"
