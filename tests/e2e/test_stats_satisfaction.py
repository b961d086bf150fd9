"""The satisfaction estimate in the admins' /stats, through the real bot and the Bot API
emulator: the predicted and observed 👍 rate per assistant and adapter, and the calibration
chart as a second photo."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.emulated import EmulatedBot, emulated_bot
from loopgram import adapters
from loopgram.db import Database
from loopgram.models import AdapterKind, AnswerScore, Rating
from tests.factories import add_interaction

ADMIN = 8300
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def running(bot_settings) -> AsyncIterator[EmulatedBot]:  # type: ignore[no-untyped-def]
    async with emulated_bot(bot_settings(ADMIN_IDS=str(ADMIN)), with_model=False) as env:
        yield env


def add_reward_model(db: Database, assistant: str) -> str:
    def register(*, session: Any) -> str:
        rm = adapters.register(
            session=session,
            assistant=assistant,
            path="/nowhere",
            base_model="/nowhere",
            method="reward",
            kind=AdapterKind.reward,
        )
        adapters.activate_reward_model(session=session, name=rm.name)
        return rm.name

    return db.call(register)


def scored_history(db: Database, model: str) -> None:
    """40 rated base-model answers whose 👍 follows the score, and 20 unrated answers of
    adapter chat-v1 with high scores."""
    rows: list[Any] = []
    for i in range(40):
        score = (i % 8) - 3.5
        iid = add_interaction(db, user_id=9000 + i, answer=f"answer {i}")
        liked = (score > 0) != (i % 9 == 0)
        rows.append(AnswerScore(interaction_id=iid, reward_model=model, score=score))
        rows.append(Rating(interaction_id=iid, user_id=9000 + i, value=1 if liked else -1))
    for i in range(20):
        iid = add_interaction(db, adapter="chat-v1", answer=f"tuned answer {i}")
        rows.append(AnswerScore(interaction_id=iid, reward_model=model, score=3.0))

    def store(*, session: Any) -> None:
        session.add_all(rows)

    db.call(store)


async def stats(env: EmulatedBot, lang: str) -> tuple[str, list[dict[str, Any]]]:
    """The admin's /stats: the text, and the photos that follow it."""
    emu = env.emulator
    admin = emu.user(ADMIN, "Ada", language_code=lang)
    await admin.send_text("/stats")
    text = await emu.wait_for_bot_message(ADMIN, lambda m: "📋" in m.get("text", ""))
    await emu.wait_for_bot_message(ADMIN, lambda m: "photo" in m)
    return text["text"], [m for m in emu.bot_messages(ADMIN) if "photo" in m]


async def test_stats_show_the_estimate_per_adapter_and_a_calibration_chart(
    running: EmulatedBot,
) -> None:
    db, emu = running.stack.db, running.emulator
    scored_history(db, add_reward_model(db, "chat"))
    add_reward_model(db, "paraphrase")  # no answer scored yet
    text, _ = await stats(running, "en")
    assert (
        "😊 Satisfaction estimate, chat (reward model chat-rm-v1), calibrated on 40 ratings: "
        "Brier 0." in text
    )
    lines = text.splitlines()
    base = next(line for line in lines if line.startswith("• base:"))
    tuned = next(line for line in lines if line.startswith("• chat-v1:"))
    # 20 positive scores liked, minus i=36 (flipped), plus i=0, 9, 18, 27 (flipped): 23/40.
    assert "(40 answers) · observed 57% (40 rated)" in base
    assert (
        tuned.startswith("• chat-v1: predicted 👍 rate ")
        and "(20 answers) · observed — (0 rated)" in tuned
    )
    predicted = int(tuned.split("predicted 👍 rate ")[1].split("%")[0])
    assert predicted > 70, "the tuned adapter's answers all score high"
    assert "paraphrase (reward model paraphrase-rm-v1): no answers scored yet" in text

    await emu.wait_for(lambda: len([m for m in emu.bot_messages(ADMIN) if "photo" in m]) == 2)
    chart, calibration = [m for m in emu.bot_messages(ADMIN) if "photo" in m]
    assert chart["caption"].startswith("👍 rate per assistant")
    assert calibration["caption"].startswith("🎯 Calibration of the satisfaction estimate")
    png = emu.file_bytes(calibration["photo"][-1]["file_id"])
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


async def test_stats_in_russian_say_when_there_are_too_few_ratings(running: EmulatedBot) -> None:
    db = running.stack.db
    model = add_reward_model(db, "chat")
    iid = add_interaction(db, user_id=9100, answer="one answer")

    def store(*, session: Any) -> None:
        session.add(AnswerScore(interaction_id=iid, reward_model=model, score=1.0))
        session.add(Rating(interaction_id=iid, user_id=9100, value=1))

    db.call(store)
    text, _ = await stats(running, "ru")
    assert (
        "😊 Оценка удовлетворённости, chat (модель вознаграждения chat-rm-v1): мало оценок для "
        "калибровки (оценок: 1, нужно 20, и 👍, и 👎)." in text
    )
    assert "• base: оценено ответов: 1 · наблюдаемая доля 👍 100% (оценок: 1)" in text
    await asyncio.sleep(0.5)  # the calibration chart would follow the first at once
    photos = [m for m in running.emulator.bot_messages(ADMIN) if "photo" in m]
    assert len(photos) == 1, "no calibration chart before there is a calibration"


async def test_stats_without_a_reward_model_say_how_to_get_one(running: EmulatedBot) -> None:
    text, _ = await stats(running, "en")
    assert "😊 Satisfaction estimate: no assistant has a reward model yet" in text


def test_stats_list_the_most_recent_adapters_and_count_the_rest() -> None:
    from bot.stats_satisfaction import MAX_ADAPTERS, satisfaction_lines
    from loopgram.satisfaction import Observation, estimate

    # Adapter chat-v{k} served answers k*10..k*10+9: the higher k, the more recent.
    answers = [Observation(k * 10 + i, f"chat-v{k}", float(i)) for k in range(8) for i in range(10)]
    lines = satisfaction_lines(
        {"chat": estimate("chat", "chat-rm-v1", answers)}, "en", check_seconds=900
    )
    shown = [line.split(":")[0] for line in lines if line.startswith("• chat-v")]
    assert shown == [f"• chat-v{k}" for k in range(7, 7 - MAX_ADAPTERS, -1)]
    assert lines[-1].startswith("• … and 3 older adapters")
    assert len("\n".join(lines)) < 1500
