"""The one rate limiter: GCRA buckets in memory and in Redis (same cases, a controllable
clock), Redis shared by replicas and falling back to memory, and the session middleware
(waits, order, 429 honoured and retried, optional previews skipped, not delayed)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Chat, Message

from bot.rate_limit import (
    Bucket,
    Limiter,
    MemoryLimiter,
    OutgoingRateLimit,
    Rate,
    RateLimited,
    RedisLimiter,
    optional_requests,
    telegram_buckets,
)
from bot.throttling import ModelQueue, UserThrottle
from loopgram.settings import LimitSettings


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def clocked(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Limiter, FakeClock]]:
    clock = FakeClock()
    limiter: Limiter
    if request.param == "memory":
        limiter = MemoryLimiter(clock)
    else:
        limiter = RedisLimiter(request.getfixturevalue("redis_url"), clock=clock)
    yield limiter, clock
    await limiter.close()


CHAT = Bucket("chat:1", Rate(1.0))
GROUP = Bucket("chat:-5", Rate(20 / 60))
ALL = Bucket("all", Rate(30.0))


async def test_reservations_are_spaced_by_the_rate(clocked: tuple[Limiter, FakeClock]) -> None:
    limiter, _ = clocked
    waits = [await limiter.acquire([CHAT]) for _ in range(4)]
    assert waits == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-6)
    assert await limiter.delay([CHAT]) == pytest.approx(4.0, abs=1e-6)  # a peek takes nothing
    assert await limiter.delay([CHAT]) == pytest.approx(4.0, abs=1e-6)
    assert await limiter.acquire([GROUP, ALL]) == pytest.approx(0.0, abs=1e-6)
    assert await limiter.acquire([GROUP, ALL]) == pytest.approx(3.0, abs=1e-6)
    # A joint reservation is at the latest of the buckets' times, and counts in both.
    assert await limiter.acquire([CHAT, ALL]) == pytest.approx(4.0, abs=1e-6)
    assert await limiter.delay([ALL]) == pytest.approx(4.0 + 1 / 30, abs=1e-6)


async def test_the_global_bucket_spaces_different_chats(clocked: tuple[Limiter, FakeClock]) -> None:
    limiter, clock = clocked
    waits = [await limiter.acquire([Bucket(f"chat:{i}", Rate(1.0)), ALL]) for i in range(60)]
    assert waits[0] == pytest.approx(0.0, abs=1e-6)
    assert waits[-1] == pytest.approx(59 / 30, abs=1e-6)  # 30 per second, evenly
    # Time passes: the buckets refill and nothing waits.
    clock.advance(10)
    assert await limiter.acquire([CHAT, ALL]) == pytest.approx(0.0, abs=1e-6)


async def test_burst_allows_that_many_at_once(clocked: tuple[Limiter, FakeClock]) -> None:
    limiter, clock = clocked
    user = Bucket("user:7", Rate(10 / 60, burst=10))
    assert [await limiter.acquire([user], wait=False) for _ in range(10)] == [0.0] * 10
    refused = await limiter.acquire([user], wait=False)
    assert refused == pytest.approx(6.0, abs=1e-6)
    clock.advance(6.0)
    assert await limiter.acquire([user], wait=False) == 0.0
    assert await limiter.acquire([user], wait=False) == pytest.approx(6.0, abs=1e-6)


async def test_try_takes_nothing_when_refused(clocked: tuple[Limiter, FakeClock]) -> None:
    limiter, clock = clocked
    assert await limiter.acquire([CHAT, ALL], wait=False) == 0.0
    for _ in range(5):  # refusals do not push the slot further away
        assert await limiter.acquire([CHAT, ALL], wait=False) == pytest.approx(1.0, abs=1e-6)
    # ...and a refused chat does not use up the global bucket for others.
    others = [
        await limiter.acquire([Bucket(f"c{i}", Rate(1.0)), ALL], wait=False) for i in range(3)
    ]
    assert others == pytest.approx([1 / 30] * 3, abs=1e-6)
    clock.advance(1 / 30)
    assert await limiter.acquire([Bucket("c1", Rate(1.0)), ALL], wait=False) == 0.0
    clock.advance(1.0)
    assert await limiter.acquire([CHAT, ALL], wait=False) == 0.0


async def test_block_holds_the_bucket_for_retry_after(clocked: tuple[Limiter, FakeClock]) -> None:
    limiter, clock = clocked
    await limiter.block(CHAT, 5.0)
    assert await limiter.acquire([CHAT, ALL], wait=False) == pytest.approx(5.0, abs=1e-6)
    assert await limiter.acquire([CHAT, ALL]) == pytest.approx(5.0, abs=1e-6)
    clock.advance(5.0)
    assert await limiter.acquire([CHAT, ALL]) == pytest.approx(1.0, abs=1e-6)
    # Other chats were never blocked.
    assert await limiter.acquire([Bucket("chat:2", Rate(1.0))]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.integration
async def test_redis_buckets_are_shared_by_replicas(redis_url: str) -> None:
    clock = FakeClock()
    one, two = RedisLimiter(redis_url, clock=clock), RedisLimiter(redis_url, clock=clock)
    try:
        waits = [await (one if i % 2 else two).acquire([CHAT, ALL]) for i in range(4)]
        assert waits == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-6)
        await one.block(Bucket("chat:9", Rate(1.0)), 4.0)
        assert await two.acquire([Bucket("chat:9", Rate(1.0))], wait=False) == pytest.approx(4.0)
    finally:
        await one.close()
        await two.close()


@pytest.mark.integration
async def test_redis_server_clock_and_key_expiry(redis_url: str) -> None:
    """Without an injected clock the script uses Redis' TIME; keys expire by themselves."""
    import redis.asyncio as redis_asyncio

    limiter = RedisLimiter(redis_url, prefix="t")
    client = redis_asyncio.Redis.from_url(redis_url)
    try:
        assert await limiter.acquire([Bucket("fast", Rate(20.0))]) == 0.0
        second = await limiter.acquire([Bucket("fast", Rate(20.0))])
        assert 0.0 < second <= 0.05
        ttl = await client.pttl("t:fast")
        assert 0 < ttl <= 1_200
    finally:
        await client.aclose()
        await limiter.close()


async def test_redis_down_falls_back_to_memory_limits() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        assert await limiter.acquire([CHAT]) == 0.0
        assert await limiter.acquire([CHAT]) == pytest.approx(1.0, abs=0.05)  # still limited
    finally:
        await limiter.close()


def test_buckets_per_chat_kind() -> None:
    settings = LimitSettings()
    private, everyone = telegram_buckets(settings, 42, 1001)
    assert private.rate.interval == pytest.approx(1.0)
    assert everyone.rate.interval == pytest.approx(1 / 30)
    group, _ = telegram_buckets(settings, 42, -100123)
    assert group.rate.interval == pytest.approx(3.0)
    channel, _ = telegram_buckets(settings, 42, "@news")
    assert channel.rate.interval == pytest.approx(3.0)
    assert [b.key for b in telegram_buckets(settings, 42, None)] == ["tg:42:all"]


# --- the session middleware ---------------------------------------------------------------


class RecordingSession(BaseSession):
    """Answers instantly and records (time, method, chat, text); can refuse with 429."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[float, str, Any, Any]] = []
        self.refuse: list[int] = []  # retry_after of the next calls to refuse
        self._ids = itertools.count(1)

    async def close(self) -> None:
        return None

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        name = method.__api_method__
        if self.refuse:
            raise TelegramRetryAfter(method, "Too Many Requests", self.refuse.pop(0))
        chat_id = getattr(method, "chat_id", None)
        self.sent.append((time.monotonic(), name, chat_id, getattr(method, "text", None)))
        if name == "sendMessage":
            chat = Chat(id=chat_id, type="private" if chat_id > 0 else "group")
            result: Any = Message(message_id=next(self._ids), date=0, chat=chat)
            return result  # type: ignore[no-any-return]
        return True  # type: ignore[return-value]

    async def stream_content(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


def limited_bot(**limits: Any) -> tuple[Bot, RecordingSession, OutgoingRateLimit]:
    session = RecordingSession()
    middleware = OutgoingRateLimit(MemoryLimiter(), LimitSettings(**limits))
    session.middleware(middleware)
    return Bot("42:TEST", session=session), session, middleware


async def test_middleware_spaces_sends_per_chat_and_keeps_their_order() -> None:
    bot, session, middleware = limited_bot(telegram_private_per_second=20.0)
    await asyncio.gather(*(bot.send_message(7, f"m{i}") for i in range(6)))
    times = [t for t, *_ in session.sent]
    assert [text for *_, text in session.sent] == [f"m{i}" for i in range(6)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.05 - 0.005, gaps
    # One send of the chat at a time: each waits one interval after the one before.
    assert middleware.waited == pytest.approx(0.05 * 5, rel=0.1)


async def test_middleware_global_limit_across_chats_and_uncounted_methods() -> None:
    bot, session, _ = limited_bot(telegram_global_per_second=50.0, telegram_private_per_second=2)
    started = time.monotonic()
    await asyncio.gather(*(bot.send_message(100 + i, "hi") for i in range(11)))
    assert time.monotonic() - started >= 10 / 50 - 0.01
    # A chat waiting for its own slot does not hold the others up.
    session.sent.clear()
    started = time.monotonic()
    waiting = asyncio.create_task(bot.send_message(110, "again"))  # its last was just now
    await asyncio.gather(*(bot.send_message(200 + i, "hi") for i in range(5)))
    assert time.monotonic() - started < 0.15
    await waiting
    assert session.sent[-1][3] == "again"
    # Chat actions and callback answers are not messages: they never wait.
    started = time.monotonic()
    await asyncio.gather(*(bot.send_chat_action(100 + i, "typing") for i in range(20)))
    assert time.monotonic() - started < 0.1


async def test_middleware_honours_retry_after_and_retries() -> None:
    bot, session, middleware = limited_bot(telegram_private_per_second=100.0)
    session.refuse = [1]
    started = time.monotonic()
    message = await bot.send_message(7, "after the flood")
    assert time.monotonic() - started >= 1.0
    assert message.message_id == 1 and middleware.retried == 1
    # Give up after the configured attempts: the error reaches the caller.
    bot2, session2, _ = limited_bot(telegram_retry_attempts=0)
    session2.refuse = [1]
    with pytest.raises(TelegramRetryAfter):
        await bot2.send_message(7, "no retries")


async def test_optional_previews_are_skipped_not_delayed() -> None:
    bot, session, _ = limited_bot(telegram_private_per_second=1.0)
    await bot.send_message(7, "first")
    started = time.monotonic()
    with optional_requests(), pytest.raises(RateLimited) as refused:
        await bot.send_message_draft(chat_id=7, draft_id=1, text="preview")
    assert time.monotonic() - started < 0.1
    assert 0.5 < refused.value.wait <= 1.0
    assert isinstance(refused.value, TelegramRetryAfter)  # what the streamer already handles
    # A real 429 on a preview is not retried, but it blocks the chat for the final message.
    session.refuse = [1]
    with optional_requests(), pytest.raises(TelegramRetryAfter):
        await bot.send_message_draft(chat_id=8, draft_id=1, text="preview")
    started = time.monotonic()
    await bot.send_message(8, "final")
    assert time.monotonic() - started >= 0.9
    assert [text for *_, text in session.sent] == ["first", "final"]


# --- per-user throttle and the model queue --------------------------------------------------


async def test_user_throttle_counts_per_user_and_tells_once() -> None:
    clock = FakeClock()
    throttle = UserThrottle(
        MemoryLimiter(clock), LimitSettings(user_rate_limit=3, user_rate_window=30), clock=clock
    )
    assert [await throttle.check(1, 7) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await throttle.check(1, 7)
    assert wait == pytest.approx(10.0)
    assert await throttle.check(1, 8) == 0.0  # someone else is not affected
    assert throttle.should_tell(7, wait) is True
    assert throttle.should_tell(7, wait) is False  # the second refusal is silent
    clock.advance(10.0)
    assert await throttle.check(1, 7) == 0.0
    assert throttle.should_tell(7, 5.0) is True
    off = UserThrottle(MemoryLimiter(clock), LimitSettings(user_rate_limit=0))
    assert [await off.check(1, 7) for _ in range(100)] == [0.0] * 100


async def test_model_queue_limits_concurrency_and_reports_positions() -> None:
    queue = ModelQueue(2)
    running, peak, positions = 0, 0, []
    release = asyncio.Event()

    async def ask(i: int) -> int:
        nonlocal running, peak

        async def told(position: int) -> None:
            positions.append((i, position))

        async with queue.turn(told):
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1
        return i

    tasks = [asyncio.create_task(ask(i)) for i in range(5)]
    # Until all five have reached the queue (a fixed sleep was too short on a loaded machine).
    async with asyncio.timeout(10):
        while len(positions) < 3 or running < 2:
            await asyncio.sleep(0.001)
    assert positions == [(2, 1), (3, 2), (4, 3)]
    assert queue.waiting == 3
    tasks[3].cancel()  # someone gives up waiting: the others move on
    await asyncio.sleep(0.01)
    release.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert [d for d in done if isinstance(d, int)] == [0, 1, 2, 4]
    assert peak == 2 and queue.active == 0 and queue.waiting == 0


async def test_model_queue_tells_only_those_who_wait_long() -> None:
    queue = ModelQueue(1, notice_after=0.2)
    told: list[tuple[str, int]] = []

    async def ask(name: str, hold: float) -> None:
        async def tell(position: int) -> None:
            told.append((name, position))

        async with queue.turn(tell):
            await asyncio.sleep(hold)

    # b waits 0.1 s (not told); c and d wait longer: told their place at that moment.
    await asyncio.gather(ask("a", 0.1), ask("b", 0.3), ask("c", 0.05), ask("d", 0.01))
    assert told == [("c", 1), ("d", 2)]
    assert queue.active == 0
