"""An adapter that is no longer served while the bot still routes to it: the answer is
re-routed, never lost.

A canary rolled back (or an adapter unloaded) goes from the model server at once, while each
bot process reads the registry at most every ROUTING_CACHE_SECONDS: answers routed in that
window met a 404 and the person got "the model is unavailable". Now the bot re-reads the
registry and answers with what serves the assistant now, or with the base model when the
registry still names the missing adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlmodel import Session

from bot.emulated import EmulatedBot, emulated_bot
from loopgram import adapters, metrics
from loopgram.models import Interaction, InteractionStatus
from tests.e2e.conftest import REPLY, has_rating_buttons, rows, wait_db
from training.model_server.scripted import ScriptedBackend


@dataclass
class LoadedAdapters:
    """The model server's LoRA endpoints as the registry calls them: the scripted backend
    serves exactly the adapters loaded here (and the base model)."""

    backend: ScriptedBackend
    calls: list[tuple[str, str]] = field(default_factory=list)

    def load(self, name: str, path: str) -> None:
        self.calls.append(("load", name))
        if name not in self.backend.models:
            self.backend.models.append(name)

    def unload(self, name: str) -> None:
        self.calls.append(("unload", name))
        self.backend.models.remove(name)


@pytest.fixture
async def bot(bot_settings: Any) -> AsyncIterator[EmulatedBot]:
    # Everyone in the canary, and a registry read once a minute: the stale window is wide.
    settings = bot_settings(CANARY_SHARE="1.0", ROUTING_CACHE_SECONDS="60")
    async with emulated_bot(settings, with_model=False) as env:
        yield env


def _deploy(env: EmulatedBot, server: LoadedAdapters, *, canary: bool) -> str:
    def register_and_deploy(*, session: Session) -> str:
        row = adapters.register(
            session=session, assistant="chat", path="/adapters/x", base_model="b", method="dpo"
        )
        adapters.deploy(session=session, name=row.name, server=server, canary=canary)
        return row.name

    return env.stack.db.call(register_and_deploy)


def _reroutes() -> float:
    value = metrics.ANSWER_REROUTES.labels(assistant="chat")._value.get()
    return float(value)


async def _ask(env: EmulatedBot, user: Any, text: str, count: int) -> Interaction:
    await user.send_text(text)
    await env.emulator.wait_for_bot_message(user.id, has_rating_buttons)

    def answered(*, session: Session) -> list[Interaction]:
        return [i for i in rows(Interaction)(session=session) if i.telegram_message_ids]

    found = await wait_db(env.stack.db, lambda *, session: len(answered(session=session)) >= count)
    assert found
    return max(await env.stack.db.run(answered), key=lambda i: i.id or 0)


async def test_a_rolled_back_canary_and_a_missing_active_adapter_are_answered_around(
    bot: EmulatedBot, scripted: ScriptedBackend
) -> None:
    server = LoadedAdapters(scripted)
    active = _deploy(bot, server, canary=False)
    canary = _deploy(bot, server, canary=True)
    anna = bot.emulator.user(6101, "Anna", language_code="en")
    before = _reroutes()

    first = await _ask(bot, anna, "Plan my week, please.", 1)
    assert (first.adapter, first.model) == (canary, canary)  # the routing cache holds this now

    # The canary judge rolls it back: the server drops it at once, the bot's cache does not.
    bot.stack.db.call(adapters.rollback, assistant="chat", server=server)
    assert canary not in scripted.models
    second = await _ask(bot, anna, "And my month?", 2)
    assert second.status == InteractionStatus.ok and second.answer == REPLY
    assert (second.adapter, second.model) == (active, active)
    assert [r.model for r in scripted.requests[-2:]] == [canary, active]
    assert _reroutes() == before + 1

    # The active adapter is missing too (a model server restarted without it) while the
    # registry still names it: the base model answers rather than nobody.
    scripted.models.remove(active)
    third = await _ask(bot, anna, "And my year?", 3)
    assert third.status == InteractionStatus.ok and third.answer == REPLY
    assert (third.adapter, third.model) == (None, "loopgram-base")
    assert [r.model for r in scripted.requests[-2:]] == [active, "loopgram-base"]
    assert _reroutes() == before + 2
    # No error message reached the person, only the three answers.
    texts = [m.get("text", "") for m in bot.emulator.bot_messages(anna.id)]
    assert not [t for t in texts if "unavailable" in t.lower() or "недоступ" in t.lower()]
