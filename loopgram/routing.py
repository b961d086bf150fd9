"""Which served model answers a request: the active adapter, or the canary for its share.

A user is routed to the canary by a stable hash of (user, canary name), so one person sees
one version during a canary instead of a mix, and each new canary samples fresh users.
The registry is read at most every `cache_seconds` per assistant.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from sqlmodel import Session

from loopgram.adapters import serving


@dataclass(frozen=True)
class Route:
    model: str
    adapter: str | None


def in_canary(user_id: int, canary_name: str, share: float) -> bool:
    digest = hashlib.sha256(f"{user_id}:{canary_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class AdapterRouter:
    def __init__(self, *, base_model: str, canary_share: float, cache_seconds: float = 5.0):
        self.base_model = base_model
        self.canary_share = canary_share
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, str | None, str | None]] = {}
        self._lock = threading.Lock()

    def route(self, *, session: Session, assistant: str, user_id: int) -> Route:
        active, canary = self._serving(session, assistant)
        if canary is not None and in_canary(user_id, canary, self.canary_share):
            return Route(canary, canary)
        if active is not None:
            return Route(active, active)
        return Route(self.base_model, None)

    def _serving(self, session: Session, assistant: str) -> tuple[str | None, str | None]:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(assistant)
            if cached is not None and now - cached[0] < self.cache_seconds:
                return cached[1], cached[2]
        active, canary = serving(session=session, assistant=assistant)
        names = (active.name if active else None, canary.name if canary else None)
        with self._lock:
            self._cache[assistant] = (now, *names)
        return names

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()
