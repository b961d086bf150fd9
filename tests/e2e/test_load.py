"""A burst of users writing at once, with Telegram's real limits, through the Bot API emulator.

The bot runs with the production defaults of the limiter (1 message/s per private chat,
20/min per group, 30/s overall) against an emulator that enforces Telegram's flood control
itself and refuses a few sends with 429 on top. Every question must get its answer, in
order per chat; the send timestamps the emulator recorded must stay within the limits; the
emulator must never have had to refuse a send for flooding.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections import defaultdict
from typing import Any

import pytest

from bot.emulated import emulated_bot
from bot.rate_limit import COUNTED_METHODS
from loopgram.emulator import BotApiEmulator
from loopgram.emulator.core import ApiCall
from loopgram.i18n import t
from tests.e2e.conftest import has_rating_buttons
from training.model_server.scripted import ScriptedBackend

PRIVATE_USERS = 300
TWICE = 20  # of them ask two questions back to back
GROUPS, PER_GROUP = 2, 3
FIRST_USER, FIRST_GROUP = 810_000, -100_810
INJECTED_429 = 3

# Telegram's limits, as the bot is configured by default.
PRIVATE_INTERVAL, GROUP_INTERVAL, GLOBAL_PER_SECOND = 1.0, 3.0, 30
# The emulator stamps a call when it arrives; a chat's next message leaves one interval
# after the previous was answered, so only timer precision is allowed for.
JITTER = 0.02


def max_in_window(times: list[float], window: float) -> int:
    """The most timestamps that fall in any half-open interval of `window` seconds."""
    times, best, start = sorted(times), 0, 0
    for end, stamp in enumerate(times):
        while stamp - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def chat_of(call: ApiCall) -> int:
    return int(call.params["chat_id"])


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def is_final(call: ApiCall) -> bool:
    return call.ok and "callback_data" in str(call.params.get("reply_markup", ""))


@pytest.mark.slow
async def test_a_burst_of_users_is_answered_within_telegram_limits(
    bot_settings, scripted: ScriptedBackend
) -> None:  # type: ignore[no-untyped-def]
    scripted.reply, scripted.token_delay = "A short, fast answer from the fake model.", 0.002
    settings = bot_settings(
        TELEGRAM_PRIVATE_PER_SECOND=str(1 / PRIVATE_INTERVAL),
        TELEGRAM_GROUP_PER_MINUTE=str(60 / GROUP_INTERVAL),
        TELEGRAM_GLOBAL_PER_SECOND=str(GLOBAL_PER_SECOND),
        USER_RATE_LIMIT="10",
        MODEL_CONCURRENCY="16",
        STREAM_EDIT_INTERVAL="0.2",
    )
    emulator = BotApiEmulator(token="779:BURST", enforce_limits=True)
    await emulator.start()
    try:
        async with emulated_bot(settings, emulator=emulator, with_model=False):
            asked: dict[int, list[tuple[int, float]]] = defaultdict(list)  # chat -> (msg, time)

            async def ask(user: Any, text: str, chat: Any = None) -> None:
                sent = time.monotonic()
                message = await user.send_text(text, chat=chat)
                asked[message["chat"]["id"]].append((message["message_id"], sent))

            people = [
                emulator.user(FIRST_USER + i, f"U{i}", language_code="en")
                for i in range(PRIVATE_USERS)
            ]
            groups = [emulator.group(FIRST_GROUP - g, f"Group {g}") for g in range(GROUPS)]
            emulator.fail_next(
                "sendMessage", 429, "Too Many Requests: retry after 1", 1, INJECTED_429
            )
            started = time.monotonic()
            await asyncio.gather(
                *(ask(p, f"question {i}") for i, p in enumerate(people)),
                *(
                    ask(people[g * PER_GROUP + k], f"@loopgram_bot group question {k}", group)
                    for g, group in enumerate(groups)
                    for k in range(PER_GROUP)
                ),
            )
            await asyncio.gather(*(ask(p, "and a second one") for p in people[:TWICE]))
            expected = sum(len(v) for v in asked.values())

            def finals() -> list[ApiCall]:
                return [c for c in emulator.calls if is_final(c)]

            deadline = time.monotonic() + 90
            while len(finals()) < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
            elapsed = time.monotonic() - started
            calls = emulator.calls
    finally:
        await emulator.stop()

    # Every question got exactly one answer, in the order asked, in its chat.
    answers: dict[int, list[ApiCall]] = defaultdict(list)
    for call in calls:
        if is_final(call):
            answers[chat_of(call)].append(call)
    missing = {chat: len(q) - len(answers[chat]) for chat, q in asked.items()}
    assert not {c: n for c, n in missing.items() if n}, f"unanswered: {missing}"
    for chat, questions in asked.items():
        got = answers[chat]
        if chat > 0:  # private: each answer is a new message replying to its question
            replied = [_json(c.params["reply_parameters"])["message_id"] for c in got]
            assert replied == [m for m, _ in questions], f"out of order in {chat}"

    # Nothing exceeded the limits, per the timestamps the emulator recorded.
    counted = [c for c in calls if c.ok and c.method in COUNTED_METHODS]
    per_chat: dict[int, list[float]] = defaultdict(list)
    for call in counted:
        per_chat[chat_of(call)].append(call.time)
    for chat, times in per_chat.items():
        interval = PRIVATE_INTERVAL if chat > 0 else GROUP_INTERVAL
        gaps = [b - a for a, b in itertools.pairwise(sorted(times))]
        assert min(gaps, default=interval) >= interval - JITTER, (chat, gaps)
    everyone = [c.time for c in counted]
    # Overall, Telegram's own model (the emulator's): a bucket of 30 refilled at 30/s. The
    # bot spaces its sends evenly, but a stall of this loaded loop can deliver a few
    # seconds' worth together; an unlimited bot sends hundreds in the first second.
    worst_second = max_in_window(everyone, 1.0)
    worst_5s = max_in_window(everyone, 5.0)
    assert worst_second <= GLOBAL_PER_SECOND + GLOBAL_PER_SECOND * 1.0
    assert worst_5s <= GLOBAL_PER_SECOND + GLOBAL_PER_SECOND * 5.0
    assert len(everyone) / (max(everyone) - min(everyone)) <= GLOBAL_PER_SECOND
    # The emulator's own flood control never had to step in; the injected 429s were
    # honoured (the chat waited retry_after) and retried.
    assert emulator.limit_violations == 0
    refused = [c for c in calls if c.error and c.error["error_code"] == 429]
    assert len(refused) == INJECTED_429, [
        (c.method, c.params.get("chat_id"), c.error) for c in refused
    ]
    for call in refused:
        later = [t for t in per_chat[chat_of(call)] if t > call.time]
        assert later and min(later) - call.time >= 1.0 - JITTER

    latencies = sorted(
        answer.time - sent
        for chat, questions in asked.items()
        for (_, sent), answer in zip(questions, answers[chat], strict=True)
    )
    p50 = statistics.median(latencies)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(  # the figures of this run, shown with -s
        f"\nburst: {expected} questions answered in {elapsed:.1f}s, failed 0; "
        f"latency p50 {p50:.1f}s p95 {p95:.1f}s; counted sends {len(counted)}, "
        f"worst 1s window {worst_second}, worst 5s window {worst_5s}"
    )


async def test_a_busy_model_tells_the_place_in_line_and_slows_a_fast_asker(
    bot_settings, scripted: ScriptedBackend
) -> None:  # type: ignore[no-untyped-def]
    scripted.reply, scripted.first_token_delay = "Answer.", 0.5
    settings = bot_settings(
        MODEL_CONCURRENCY="1",
        MODEL_QUEUE_NOTICE_AFTER="0.2",
        USER_RATE_LIMIT="2",
        USER_RATE_WINDOW="60",
    )
    async with emulated_bot(settings, with_model=False) as env:
        emu = env.emulator
        people = [emu.user(820_001 + i, f"P{i}", language_code="en") for i in range(3)]
        await asyncio.gather(*(p.send_text(f"question {i}") for i, p in enumerate(people)))
        for p in people:
            await emu.wait_for_bot_message(p.id, has_rating_buttons, timeout=10)
        notices = {
            p.id: [h["text"] for d in emu.drafts(p.id) for h in d["history"] if "⏳" in h["text"]]
            for p in people
        }
        # One of the three was answered at once; the others were told their place, once.
        told = sorted(texts for texts in notices.values() if texts)
        assert told == [
            [t("en", "limits-queue-position", position=1)],
            [t("en", "limits-queue-position", position=2)],
        ]

        fast = emu.user(820_010, "Fast", language_code="ru")
        questions = [await fast.send_text(f"вопрос {i}") for i in range(4)]
        for _ in range(2):
            await emu.wait_for_bot_message(fast.id, has_rating_buttons, timeout=10)
        await asyncio.sleep(0.5)
        texts = [m.get("text", "") for m in emu.bot_messages(fast.id)]
        slow_down = [m for m in emu.bot_messages(fast.id) if m["text"].startswith("⏳")]
        assert len(slow_down) == 1, texts  # told once, not once per extra message
        # the wait left when the third question's turn came (answers to the first two took
        # a moment)
        assert slow_down[0]["text"] in {
            t("ru", "limits-user-throttled", seconds=s) for s in range(25, 31)
        }
        assert slow_down[0]["reply_to_message"]["message_id"] == questions[2]["message_id"]
        assert sum(has_rating_buttons(m) for m in emu.bot_messages(fast.id)) == 2
