"""One rate limiter for everything the bot sends to Telegram, and the per-user request limit.

Telegram's flood limits (about 1 message/s per chat, 20/min per group, 30/s per bot) are
GCRA buckets (a token bucket kept as one "theoretical arrival time" per key):

* :class:`MemoryLimiter` keeps them in the process (no Redis configured);
* :class:`RedisLimiter` keeps them in Redis behind one Lua script, so that webhook replicas
  share one budget; the script reads Redis' own clock, and the process falls back to its
  memory buckets while Redis is unreachable (the bot keeps answering).

:class:`OutgoingRateLimit` is an aiogram *session* middleware: every Bot API call that puts
or edits a message in a chat waits for its slot (reserved in call order, so messages of a
chat keep their order), and a 429 ``retry_after`` from Telegram blocks the chat's bucket for
every replica and is retried. Calls made inside :func:`optional_requests` (the intermediate
previews of a streaming answer) never wait: when no slot is free they fail at once with
:class:`RateLimited` and the streamer shows a later, longer preview instead — previews are
coalesced, the final answer is always delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import Response, TelegramMethod
from aiogram.methods.base import TelegramType

from loopgram.settings import LimitSettings

if TYPE_CHECKING:
    from aiogram import Bot

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class Rate:
    """`per_second` on average, at most `burst` at once (burst 1 = evenly spaced)."""

    per_second: float
    burst: int = 1

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second

    @property
    def tolerance(self) -> float:
        return (self.burst - 1) * self.interval


@dataclass(frozen=True)
class Bucket:
    key: str
    rate: Rate


class Limiter(Protocol):
    async def acquire(self, buckets: Sequence[Bucket], *, wait: bool = True) -> float:
        """Take one slot in every bucket.

        ``wait=True`` reserves the earliest time all buckets allow and returns the seconds
        until it (the caller sleeps them); ``wait=False`` takes the slot only when it is free
        now, returning 0.0, and otherwise takes nothing and returns the seconds to wait.
        """
        ...

    async def delay(self, buckets: Sequence[Bucket]) -> float:
        """Seconds until every bucket would let one through; nothing is taken."""
        ...

    async def block(self, bucket: Bucket, seconds: float) -> None:
        """Nothing may pass `bucket` for `seconds` (Telegram answered 429 retry_after)."""
        ...

    async def close(self) -> None: ...


class MemoryLimiter:
    """GCRA buckets in a dict; `clock` is injectable for tests."""

    _PRUNE_EVERY = 1000

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}
        self._ops = 0

    async def acquire(self, buckets: Sequence[Bucket], *, wait: bool = True) -> float:
        return self.acquire_now(buckets, wait=wait)

    async def delay(self, buckets: Sequence[Bucket]) -> float:
        return self.acquire_now(buckets, wait=False, take=False)

    def acquire_now(
        self, buckets: Sequence[Bucket], *, wait: bool = True, take: bool = True
    ) -> float:
        now = self.clock()
        self._prune(now)
        tats = [max(self._tat.get(b.key, now), now) for b in buckets]
        at = max([now, *(tat - b.rate.tolerance for tat, b in zip(tats, buckets, strict=True))])
        if not take or (not wait and at > now):
            return at - now
        for tat, bucket in zip(tats, buckets, strict=True):
            self._tat[bucket.key] = max(tat, at) + bucket.rate.interval
        return at - now

    async def block(self, bucket: Bucket, seconds: float) -> None:
        now = self.clock()
        tat = max(self._tat.get(bucket.key, now), now)
        self._tat[bucket.key] = max(tat, now + seconds + bucket.rate.tolerance)

    async def close(self) -> None:
        return None

    def _prune(self, now: float) -> None:
        """A bucket whose time has passed is the same as no bucket: forget it."""
        self._ops += 1
        if self._ops % self._PRUNE_EVERY == 0:
            self._tat = {key: tat for key, tat in self._tat.items() if tat > now}


# KEYS: one bucket each. ARGV[1]: now in seconds ("" = Redis' clock); ARGV[2]: mode
# ("reserve", "try", "peek" or "block"); ARGV[3]: block seconds; then per bucket its emission
# interval and burst tolerance. Returns the seconds to wait, as a string (Lua numbers
# would come back truncated to integers).
_GCRA_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local mode = ARGV[2]
local at = now
local tats = {}
for i = 1, #KEYS do
  local tolerance = tonumber(ARGV[3 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  if mode == 'block' then
    tat = math.max(tat, now + tonumber(ARGV[3]) + tolerance)
    redis.call('SET', KEYS[i], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
  end
  tats[i] = tat
  at = math.max(at, tat - tolerance)
end
if mode == 'block' then return '0' end
if mode == 'peek' or (mode == 'try' and at > now) then return tostring(at - now) end
for i = 1, #KEYS do
  local tat = math.max(tats[i], at) + tonumber(ARGV[2 + 2 * i])
  redis.call('SET', KEYS[i], tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
return tostring(at - now)
"""


class RedisLimiter:
    """The same buckets in Redis, shared by every replica; memory while Redis is down."""

    RETRY_REDIS_AFTER = 5.0

    def __init__(
        self, url: str, *, clock: Clock | None = None, prefix: str = "loopgram:rl"
    ) -> None:
        import redis.asyncio as redis_asyncio

        self._redis = redis_asyncio.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._script = self._redis.register_script(_GCRA_LUA)
        self.clock = clock
        self.prefix = prefix
        self._local = MemoryLimiter(clock or time.monotonic)
        self._down_until = 0.0

    async def acquire(self, buckets: Sequence[Bucket], *, wait: bool = True) -> float:
        result = await self._run(buckets, "reserve" if wait else "try", 0.0)
        if result is None:
            return await self._local.acquire(buckets, wait=wait)
        return result

    async def delay(self, buckets: Sequence[Bucket]) -> float:
        result = await self._run(buckets, "peek", 0.0)
        if result is None:
            return await self._local.delay(buckets)
        return result

    async def block(self, bucket: Bucket, seconds: float) -> None:
        if await self._run([bucket], "block", seconds) is None:
            await self._local.block(bucket, seconds)

    async def _run(self, buckets: Sequence[Bucket], mode: str, seconds: float) -> float | None:
        from redis.exceptions import RedisError

        if time.monotonic() < self._down_until:
            return None
        args: list[str | float] = ["" if self.clock is None else repr(self.clock()), mode]
        args.append(repr(seconds))
        for bucket in buckets:
            args += [repr(bucket.rate.interval), repr(bucket.rate.tolerance)]
        keys = [f"{self.prefix}:{b.key}" for b in buckets]
        try:
            result = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            log.warning("rate_limit.redis_unavailable error=%s; limiting in memory", exc)
            self._down_until = time.monotonic() + self.RETRY_REDIS_AFTER
            return None
        return float(result)

    async def close(self) -> None:
        await self._redis.aclose()


def create_limiter(redis_url: str | None) -> Limiter:
    return RedisLimiter(redis_url) if redis_url else MemoryLimiter()


# --- the session middleware -----------------------------------------------------------

# Bot API methods that put a message into a chat or change one: Telegram counts them.
COUNTED_METHODS = frozenset(
    {
        "sendMessage",
        "sendMessageDraft",
        "sendPhoto",
        "sendDocument",
        "sendAudio",
        "sendVideo",
        "sendAnimation",
        "sendVoice",
        "sendVideoNote",
        "sendSticker",
        "sendMediaGroup",
        "sendLocation",
        "sendVenue",
        "sendContact",
        "sendPoll",
        "sendDice",
        "sendPaidMedia",
        "sendInvoice",
        "copyMessage",
        "copyMessages",
        "forwardMessage",
        "forwardMessages",
        "editMessageText",
        "editMessageCaption",
        "editMessageMedia",
        "editMessageReplyMarkup",
        "editMessageLiveLocation",
    }
)

_optional: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rate_limit_optional", default=False
)


@contextlib.contextmanager
def optional_requests() -> Iterator[None]:
    """Calls made inside may be skipped: they fail with :class:`RateLimited` instead of
    waiting for a slot (and are not retried on 429)."""
    token = _optional.set(True)
    try:
        yield
    finally:
        _optional.reset(token)


class RateLimited(TelegramRetryAfter):
    """An optional call refused locally, before it reached Telegram; `wait` in seconds."""

    def __init__(self, method: TelegramMethod[Any], wait: float) -> None:
        super().__init__(method, "local rate limit", max(1, math.ceil(wait)))
        self.wait = wait


def telegram_buckets(
    settings: LimitSettings, bot_id: int, chat_id: int | str | None
) -> list[Bucket]:
    """The chat's bucket (private: positive ids; groups and channels: negative or @name)
    and the bot's overall one."""
    everyone = Bucket(f"tg:{bot_id}:all", Rate(settings.telegram_global_per_second))
    if chat_id is None:
        return [everyone]
    private = isinstance(chat_id, int) and chat_id > 0
    rate = (
        Rate(settings.telegram_private_per_second)
        if private
        else Rate(settings.telegram_group_per_minute / 60.0)
    )
    return [Bucket(f"tg:{bot_id}:chat:{chat_id}", rate), everyone]


class OutgoingRateLimit(BaseRequestMiddleware):
    """Register with ``bot.session.middleware(OutgoingRateLimit(limiter, settings))``."""

    def __init__(
        self,
        limiter: Limiter,
        settings: LimitSettings,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.limiter = limiter
        self.settings = settings
        self.sleep = sleep
        # One counted call at a time per chat in this process: messages keep their order.
        self._chat_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.waited = 0.0  # seconds spent waiting for slots, for logs and benches
        self.retried = 0  # 429 answers retried

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if method.__api_method__ not in COUNTED_METHODS:
            return await make_request(bot, method)
        chat_id = getattr(method, "chat_id", None)
        buckets = telegram_buckets(self.settings, bot.id, chat_id)
        lock = self._lock(buckets[0].key)
        if _optional.get():
            if lock.locked():  # a message of this chat is on its way: this preview can wait
                raise RateLimited(method, buckets[0].rate.interval)
            async with lock:
                wait = await self.limiter.acquire(buckets, wait=False)
                if wait > 0:
                    raise RateLimited(method, wait)
                try:
                    result = await make_request(bot, method)
                except TelegramRetryAfter as exc:
                    await self.limiter.block(buckets[0], exc.retry_after)
                    raise
                await self._answered(buckets)
                return result
        async with lock:
            return await self._send(make_request, bot, method, buckets)

    async def _send(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
        buckets: list[Bucket],
    ) -> Response[TelegramType]:
        attempt = 0
        while True:
            # First the chat's own slot, without reserving it: a reservation in the future
            # would hold the bot's overall bucket for everyone else until then. Then the
            # chat and the bot together, at the earliest time the bot allows.
            wait = await self.limiter.delay(buckets[:1])
            if wait > 0 and len(buckets) > 1:
                self.waited += wait
                await self.sleep(wait)
            wait = await self.limiter.acquire(buckets)
            if wait > 0:
                self.waited += wait
                await self.sleep(wait)
            try:
                result = await make_request(bot, method)
            except TelegramRetryAfter as exc:
                attempt += 1
                log.info(
                    "telegram.retry_after method=%s chat_id=%s seconds=%s attempt=%s",
                    method.__api_method__,
                    getattr(method, "chat_id", None),
                    exc.retry_after,
                    attempt,
                )
                if attempt > self.settings.telegram_retry_attempts:
                    raise
                self.retried += 1
                # Every replica holds back for this chat, not only this call.
                await self.limiter.block(buckets[0], exc.retry_after)
                continue
            await self._answered(buckets)
            return result

    async def _answered(self, buckets: list[Bucket]) -> None:
        """The chat's next message goes one interval after Telegram *answered* this one, so
        a request that took long on the way (a busy event loop, the network) cannot arrive
        right before the next."""
        if len(buckets) > 1:
            await self.limiter.block(buckets[0], buckets[0].rate.interval)

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._chat_locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._chat_locks[key] = lock
        return lock
