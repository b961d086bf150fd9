"""Fuzzing the real bot (hypothesis): forged presses change nothing, random updates crash
nothing.

* Callback data: any string of at most 64 bytes, and structurally valid data of every
  `CallbackData` class in `bot/callbacks.py` with random or real ids and values, pressed by
  people who may not press them — a group member on someone else's answer, a stranger in
  their own chat naming someone else's answer, a plain user on a moderator's review card.
  Every press is answered, no error is logged, and no record changes.
* Updates: random messages, edits and reactions from the emulated people, fed through the
  real dispatcher (`feed_raw_update`); anything that parses as an Update is handled without
  an unhandled exception.

Example counts are modest (`FUZZ_EXAMPLES`, default 40) to keep the folder quick.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pytest
from aiogram.filters.callback_data import CallbackData
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlmodel import select

from bot import callbacks
from bot.emulated import EmulatedBot, emulated_bot
from bot.update_guard import update_body_problem
from loopgram import models
from loopgram.emulator.users import EmulatedUser
from tests.faults.conftest import has_rating_buttons

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("FUZZ_RANDOM") is None,
)
OWNER, INTRUDER, STRANGER, MODERATOR = 7401, 7402, 7403, 7404
GROUP = -1007400

#: Every record a forged press could change (`user`, `chat` and `processed_update` are
#: touched legitimately by any update: the presser's profile, the chat, the dedup mark).
GUARDED = (
    models.Interaction,
    models.Rating,
    models.ReviewItem,
    models.ReviewDecision,
    models.PreferencePair,
    models.AuditLog,
    models.Adapter,
    models.TrainingRun,
    models.LabelSet,
    models.LabeledExample,
    models.Document,
)

CALLBACK_CLASSES = [
    cls
    for _, cls in inspect.getmembers(callbacks, inspect.isclass)
    if issubclass(cls, CallbackData) and cls is not CallbackData
]


class Handled:
    """An outer middleware counting updates whose handling has finished."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, handler: Any, event: Any, data: dict[str, Any]) -> Any:
        try:
            return await handler(event, data)
        finally:
            self.count += 1


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class World:
    env: EmulatedBot
    people: dict[int, EmulatedUser]
    group_answer: dict[str, Any]  # OWNER's answer in the group
    owner_answer: dict[str, Any]  # OWNER's answer in the private chat
    stranger_message: dict[str, Any]  # a bot message in STRANGER's private chat
    review_card: dict[str, Any]  # a review card in the MODERATOR's private chat
    ids: list[int] = field(default_factory=list)  # real interaction and review item ids
    errors: ErrorLog = field(default_factory=ErrorLog)
    handled: Handled = field(default_factory=Handled)

    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return "World(...)"


def _snapshot(session: Any) -> dict[str, list[str]]:
    return {
        model.__name__: sorted(
            repr([getattr(row, c.key) for c in model.__table__.columns])  # type: ignore[attr-defined]
            for row in session.exec(select(model))
        )
        for model in GUARDED
    }


@pytest.fixture
async def world(bot_settings) -> AsyncIterator[World]:  # type: ignore[no-untyped-def]
    settings = bot_settings(MODERATOR_IDS=str(MODERATOR))
    async with emulated_bot(settings, with_model=False) as env:
        emu = env.emulator

        def no_broker(payloads: Any) -> None:
            raise ConnectionError("fuzz: no broker")

        # Ratings are written through to the database inside the press (the sink's path when
        # the broker is down), so a record changed by a press is there when it is answered.
        env.stack.runtime.feedback_sink._enqueue_many = no_broker  # type: ignore[method-assign]
        people = {
            uid: emu.user(uid, name, language_code="en")
            for uid, name in (
                (OWNER, "Owner"),
                (INTRUDER, "Intruder"),
                (STRANGER, "Stranger"),
                (MODERATOR, "Mod"),
            )
        }
        group = emu.group(GROUP, "Team")
        await people[OWNER].send_text("@loopgram_bot a question in the group", chat=group)
        group_answer = await emu.wait_for_bot_message(GROUP, has_rating_buttons, timeout=20)
        await people[OWNER].send_text("a private question")
        owner_answer = await emu.wait_for_bot_message(OWNER, has_rating_buttons, timeout=20)
        # 👎 with a reason flags the answer: a review item a moderator sees.
        await people[OWNER].press(owner_answer, "👎")
        reasons = await emu.wait_for_bot_message(OWNER, lambda m: "Wrong" in str(m))
        await people[OWNER].press(reasons, "❌ Wrong")
        await env.stack.runtime.feedback_sink.flush()

        def settled(*, session: Any) -> bool:  # the worker stored the 👎, its reason, the flag
            rating = session.exec(select(models.Rating)).first()
            flagged = session.exec(select(models.ReviewItem)).first()
            return rating is not None and rating.reason == "wrong" and flagged is not None

        for _ in range(400):
            if await env.stack.db.run(settled):
                break
            await asyncio.sleep(0.05)
        await people[INTRUDER].send_text("/start")  # a private chat is opened by the person
        await emu.wait_for_bot_message(INTRUDER, timeout=20)
        await people[STRANGER].send_text("/start")
        stranger_message = await emu.wait_for_bot_message(STRANGER, timeout=20)
        await people[MODERATOR].send_text("/review")
        review_card = await emu.wait_for_bot_message(
            MODERATOR, lambda m: "rv:" in str(m.get("reply_markup")), timeout=20
        )
        db = env.stack.db

        def ids(*, session: Any) -> list[int]:
            found = [i.id for i in session.exec(select(models.Interaction))]
            found += [r.id for r in session.exec(select(models.ReviewItem))]
            return sorted({int(i) for i in found if i is not None})

        world = World(
            env,
            people,
            group_answer,
            owner_answer,
            stranger_message,
            review_card,
            ids=await db.run(ids),
        )
        assert world.ids, "the setup made no records to attack"
        env.stack.runtime.dispatcher.update.outer_middleware(world.handled)
        await env.stack.runtime.feedback_sink.flush()
        logging.getLogger().addHandler(world.errors)
        try:
            yield world
        finally:
            logging.getLogger().removeHandler(world.errors)


def _value(annotation: Any, real_ids: list[int]) -> st.SearchStrategy[Any]:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return st.sampled_from(list(annotation))
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.sampled_from(real_ids) | st.integers(-(2**63), 2**63 - 1)
    return st.one_of(
        st.sampled_from(["chat", "paraphrase", "wrong", "style", "formal", "", "0"]),
        st.text(st.characters(blacklist_characters=":", blacklist_categories=["Cs"]), max_size=12),
    )


@st.composite
def structured(draw: st.DrawFn, real_ids: list[int]) -> str:
    cls = draw(st.sampled_from(CALLBACK_CLASSES))
    values = {
        name: draw(_value(info.annotation, real_ids)) for name, info in cls.model_fields.items()
    }
    try:
        return str(cls(**values).pack())
    except (ValueError, ValidationError):
        return f"{cls.__prefix__}:{draw(st.integers())}"  # still well-formed enough


def _short(text: str) -> bool:
    return 0 < len(text.encode()) <= 64


ANY_DATA = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=64).filter(
    _short
)

#: (who presses, on which message): none of them may change anything.
PRESSES = ("intruder_in_group", "stranger_in_own_chat", "plain_user_on_review_card")


async def _press_and_check(world: World, who: str, data: str) -> None:
    emu, db = world.env.emulator, world.env.stack.db
    if who == "intruder_in_group":
        user, message = world.people[INTRUDER], world.group_answer
    elif who == "stranger_in_own_chat":
        user, message = world.people[STRANGER], world.stranger_message
    else:  # a plain user cannot see a moderator's card: a forged update says they pressed it
        user, message = world.people[STRANGER], world.review_card
    before = await db.run(_snapshot)
    answered, handled = len(emu.callback_answers), world.handled.count
    await user.press(message, data, chat=None)
    # Answered (no spinner left turning), and the handler has returned.
    await emu.wait_for(lambda: len(emu.callback_answers) > answered, timeout=15)
    await emu.wait_for(lambda: world.handled.count > handled, timeout=15)
    await world.env.stack.runtime.feedback_sink.flush()
    after = await db.run(_snapshot)
    assert [r.getMessage() for r in world.errors.records] == [], data
    assert after == before, f"{who} pressing {data!r} changed the records"


@FUZZ
@given(who=st.sampled_from(PRESSES), data=st.data())
async def test_forged_or_foreign_presses_change_nothing(world: World, who: str, data: Any) -> None:
    # The real buttons of other people's answers and of a moderator's card, structured data
    # of every class (real or random ids), and any string at all.
    buttons = [
        b["callback_data"]
        for m in (world.group_answer, world.owner_answer, world.review_card)
        for row in (m.get("reply_markup") or {}).get("inline_keyboard", [])
        for b in row
        if "callback_data" in b
    ]
    payload = data.draw(
        st.one_of(st.sampled_from(buttons), structured(world.ids), ANY_DATA).filter(_short),
        label="data",
    )
    await _press_and_check(world, who, payload)


# --- random updates through the real dispatcher ---------------------------------------------

TEXTS = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=300),
    st.sampled_from(
        ["/start", "/help", "/reset", "/assistant", "/review", "/stats", "/forget", "/skip"]
    ).flatmap(lambda c: st.text(max_size=30).map(lambda rest: f"{c} {rest}".strip())),
)


@st.composite
def random_update(draw: st.DrawFn, world: World) -> dict[str, Any]:
    uid = draw(st.sampled_from(sorted(world.people)))
    person = world.people[uid].to_api()
    private = {"id": uid, "type": "private", "first_name": person["first_name"]}
    group = {"id": GROUP, "type": "supergroup", "title": "Team"}
    chat = draw(st.sampled_from([private, group]))
    message: dict[str, Any] = {
        "message_id": draw(st.integers(1, 2**31 - 1)),
        "date": draw(st.integers(0, 2**31 - 1)),
        "chat": chat,
        "from": person,
    }
    kind = draw(st.sampled_from(["message", "edited_message", "message_reaction", "junk"]))
    if kind == "message_reaction":
        target = world.group_answer if chat is group else world.owner_answer
        emoji = draw(st.sampled_from(["👍", "👎", "🔥", "💩", "🤮", "❤", "🎉"]))
        return {
            "update_id": draw(st.integers(1, 2**31 - 1)),
            "message_reaction": {
                "chat": target["chat"],
                "message_id": draw(st.sampled_from([target["message_id"], 1, 2**31 - 1])),
                "user": person,
                "date": message["date"],
                "old_reaction": [],
                "new_reaction": [{"type": "emoji", "emoji": emoji}],
            },
        }
    if kind == "junk":  # well-formed JSON, not necessarily a valid Update
        json_values = st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=8), inner, max_size=3)
            ),
            max_leaves=8,
        )
        return {
            "update_id": draw(st.integers(1, 2**31 - 1)),
            draw(st.sampled_from(["message", "callback_query", "poll", "chat_member", "x"])): (
                draw(json_values)
            ),
        }
    message["text"] = draw(TEXTS)
    if kind == "edited_message":
        message["edit_date"] = message["date"] + 1
    return {"update_id": draw(st.integers(1, 2**31 - 1)), kind: message}


@FUZZ
@given(data=st.data())
async def test_random_updates_are_handled_without_an_unhandled_error(
    world: World, data: Any
) -> None:
    update = data.draw(random_update(world), label="update")
    runtime, bot = world.env.stack.runtime, world.env.stack.bot
    if update_body_problem(update) is not None:
        return  # no update kind, or several: the webhook answers 400 before the dispatcher
    try:
        await runtime.dispatcher.feed_raw_update(bot, update)
    except ValidationError:
        return  # not an Update: the webhook answers 400 (tests/e2e/test_webhook.py)
    await runtime.feedback_sink.flush()
    assert [r.getMessage() for r in world.errors.records] == [], update
