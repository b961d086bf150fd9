"""Method name -> handler. Names are matched case-insensitively, as the real server does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core import EmulatorCore
    from ..params import Params

Handler = Callable[["EmulatorCore", "Params"], Awaitable[Any]]


@dataclass
class Described:
    """A successful result that also carries a ``description`` (setWebhook does that)."""

    result: Any
    description: str


_METHODS: dict[str, tuple[str, Handler]] = {}


def api_method(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _METHODS[name.lower()] = (name, handler)
        return handler

    return register


def lookup(name: str) -> tuple[str, Handler] | None:
    """(canonical name, handler) for a method name in any letter case."""
    return _METHODS.get(name.lower())
