"""Flood control as Telegram documents it, and fault injection for tests."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .clock import Clock
from .errors import ApiError

# Methods that put a message into a chat and therefore count against the limits.
SENDING_METHODS = frozenset({"sendMessage", "sendPhoto", "sendDocument"})


class TokenBucket:
    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.tokens = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0 when one is available now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.per_second

    def take(self) -> None:
        self.tokens -= 1


class FloodControl:
    """1 message/s per private chat (burst 3), 20/min per group, 30/s overall."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._overall = TokenBucket(30, 30, clock.monotonic())
        self._chats: dict[int, TokenBucket] = {}
        self.violations = 0

    def check(self, chat_id: int, is_private: bool) -> int | None:
        """Consume a send; return retry_after seconds when the send must be refused."""
        now = self._clock.monotonic()
        bucket = self._chats.get(chat_id)
        if bucket is None:
            bucket = TokenBucket(3, 1.0, now) if is_private else TokenBucket(20, 20 / 60, now)
            self._chats[chat_id] = bucket
        wait = max(bucket.wait_time(now), self._overall.wait_time(now))
        if wait > 0:
            self.violations += 1
            return max(1, math.ceil(wait))
        bucket.take()
        self._overall.take()
        return None


@dataclass
class _Fault:
    method: str  # lower-case method name or "*"
    error_code: int
    description: str
    retry_after: int | None
    remaining: int


class FaultInjector:
    def __init__(self) -> None:
        self._faults: list[_Fault] = []

    def add(
        self,
        method: str,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        self._faults.append(_Fault(method.lower(), error_code, description, retry_after, times))

    def take(self, method: str) -> ApiError | None:
        for fault in self._faults:
            if fault.method in (method.lower(), "*"):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return ApiError(fault.error_code, fault.description, fault.retry_after)
        return None
