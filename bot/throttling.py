"""How much one user may ask, and the line in front of the model.

* :class:`UserThrottle`: at most ``USER_RATE_LIMIT`` model requests per user per
  ``USER_RATE_WINDOW`` (a GCRA bucket in the same limiter as Telegram's limits, so in Redis
  when configured); a refused user is told once per wait, not once per message.
* :class:`ModelQueue`: at most ``MODEL_CONCURRENCY`` answers are generated at once in this
  process; the others wait first come, first served, and whoever still waits after
  ``MODEL_QUEUE_NOTICE_AFTER`` seconds learns their place in line, once (a queue that moves
  fast costs no messages: under a burst Telegram's budget goes to answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from bot.rate_limit import Bucket, Limiter, Rate
from loopgram.settings import LimitSettings

log = logging.getLogger(__name__)


class UserThrottle:
    def __init__(
        self,
        limiter: Limiter,
        settings: LimitSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = limiter
        self.rate = (
            Rate(
                settings.user_rate_limit / settings.user_rate_window, burst=settings.user_rate_limit
            )
            if settings.user_rate_limit > 0
            else None
        )
        self.clock = clock
        self._told_until: dict[int, float] = {}

    async def check(self, bot_id: int, user_id: int) -> float:
        """0.0 when the user may ask now (the request is counted), else seconds to wait."""
        if self.rate is None:
            return 0.0
        return await self.limiter.acquire(
            [Bucket(f"user:{bot_id}:{user_id}", self.rate)], wait=False
        )

    def should_tell(self, user_id: int, wait: float) -> bool:
        """Say "slow down" once per wait: the refusals after it are silent."""
        now = self.clock()
        if len(self._told_until) > 10_000:
            self._told_until = {u: t for u, t in self._told_until.items() if t > now}
        if self._told_until.get(user_id, 0.0) > now:
            return False
        self._told_until[user_id] = now + wait
        return True


class ModelQueue:
    """A first-come, first-served semaphore that knows each waiter's place (0 = no limit)."""

    def __init__(self, limit: int, notice_after: float = 0.0) -> None:
        self.limit = limit
        self.notice_after = notice_after
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(not f.done() for f in self._waiters)

    @contextlib.asynccontextmanager
    async def turn(
        self, on_wait: Callable[[int], Awaitable[None]] | None = None
    ) -> AsyncIterator[None]:
        """Hold one of the `limit` places; `on_wait(position)` is awaited once if this call
        still waits after `notice_after` seconds (position 1 = next)."""
        if self.limit <= 0:
            yield
            return
        if self.active < self.limit and not self._waiters:
            self.active += 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            try:
                done, _ = await asyncio.wait({future}, timeout=self.notice_after)
                if not done and on_wait is not None:
                    position = self._position(future)
                    try:
                        await on_wait(position)
                    except Exception as exc:  # telling the place is a courtesy
                        log.info("queue.notice_failed position=%s error=%s", position, exc)
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # the place was handed over just now: pass it on
                else:
                    future.cancel()
                raise
        try:
            yield
        finally:
            self._release()

    def _position(self, future: asyncio.Future[None]) -> int:
        ahead = itertools.takewhile(lambda f: f is not future, self._waiters)
        return 1 + sum(not f.done() for f in ahead)

    def _release(self) -> None:
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)  # the place goes straight to the next in line
                return
        self.active -= 1
