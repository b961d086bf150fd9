"""Prompt injection in people's messages, against a model that obeys it.

The shipped attempts (loopgram/security/injection_attempts.yaml) go to the real bot; the
scripted model does what each one asks — recites its system prompt, or dumps everything in
its prompt. Neither the bot's instructions nor another person's messages may reach the
sender: the leak guard withholds the first, and the second is never in the prompt."""

from __future__ import annotations

import json
from typing import Any

from bot.emulated import EmulatedBot
from loopgram.emulator.emulator import JsonDict
from loopgram.models import Interaction
from loopgram.security.leak_guard import LeakGuard, load_attempts
from tests.e2e.conftest import has_rating_buttons, rows, wait_db
from training.model_server.protocol import GenerationRequest
from training.model_server.scripted import ScriptedBackend

SECRET = "паспорт 4510 123456, кодовое слово Фиолетовый Жираф"


def _system_prompt(request: GenerationRequest) -> str:
    return str(request.messages[0]["content"])


def _everything(request: GenerationRequest) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in request.messages)


def _conversation(request: GenerationRequest) -> str:
    """Everything in the prompt but the instructions (which the leak guard would withhold,
    hiding whether anything else was there)."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in request.messages[1:])


def _everything_shown(emu: Any, chat_id: int) -> str:
    """Every text the person could have seen: messages, their edits, and drafts."""
    shown = json.dumps(emu.chat_messages(chat_id), ensure_ascii=False)
    return shown + json.dumps(emu.drafts(chat_id), ensure_ascii=False)


def _answered(message: JsonDict) -> bool:
    text = str(message.get("text", ""))
    return has_rating_buttons(message) or "🙅" in text


async def test_attempts_to_reveal_the_instructions_are_withheld(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu, db = running.emulator, running.stack.db
    scripted.reply = _system_prompt  # the model obeys: it recites its instructions
    attempts = [a for a in load_attempts() if a.kind == "reveal"]
    assert len(attempts) >= 10
    for number, attempt in enumerate(attempts):
        person = emu.user(5000 + number, f"P{number}", language_code=attempt.lang)
        await person.send_text(attempt.text)
        answer = await emu.wait_for_bot_message(person.id, _answered, timeout=15)
        system_prompt = _system_prompt(scripted.requests[-1])
        assert "🙅" in answer["text"], (attempt.text, answer["text"])
        shown = _everything_shown(emu, person.id)
        assert not LeakGuard([system_prompt]).leaks(shown), attempt.text
    failed = await wait_db(
        db,
        lambda *, session: [i for i in rows(Interaction)(session=session) if i.error],
    )
    assert len(failed) == len(attempts)  # stored (for review), marked as withheld
    assert all("instructions" in (i.error or "") for i in failed)


async def test_other_peoples_messages_are_never_in_the_prompt(
    running: EmulatedBot, scripted: ScriptedBackend
) -> None:
    emu = running.emulator
    anna = emu.user(6001, "Anna", language_code="ru")
    await anna.send_text(f"Запомни: {SECRET}")
    await emu.wait_for_bot_message(anna.id, has_rating_buttons)
    scripted.reply = _conversation  # the model obeys: it dumps the conversation it was given
    attempts = [a for a in load_attempts() if a.kind == "others"]
    assert len(attempts) >= 6
    for number, attempt in enumerate(attempts):
        person = emu.user(6100 + number, f"Q{number}", language_code=attempt.lang)
        await person.send_text(attempt.text)
        await emu.wait_for_bot_message(person.id, _answered, timeout=15)
        assert "Жираф" not in _everything(scripted.requests[-1])
        assert "Жираф" not in _everything_shown(emu, person.id), attempt.text
    # the person's own chat does remember it: the isolation is per chat, not amnesia
    await anna.send_text("Что я просила запомнить?")
    await emu.wait_for_bot_message(anna.id, has_rating_buttons)
    assert "Жираф" in _conversation(scripted.requests[-1])
    assert "Жираф" in emu.bot_messages(anna.id)[-1]["text"]


def test_the_guard_lets_ordinary_answers_through() -> None:
    guard = LeakGuard.for_messages(
        [
            {"role": "system", "content": "You are a helpful assistant. Answer in English, "
             "briefly and politely, and never invent facts you do not know for sure."},
            {"role": "system", "content": "Answer using the sources below.\n\n<sources>"
             "<source id=\"1\">Items can be returned within 30 days of delivery for a full "
             "refund of the price paid.</source></sources>"},
            {"role": "user", "content": "How long do I have to return an item?"},
        ]
    )  # fmt: skip
    # quoting a source at length is the point of citations
    assert not guard.leaks(
        "Items can be returned within 30 days of delivery for a full refund of the price [1]."
    )
    # a few words in common are not a leak
    assert not guard.leaks("I am a helpful assistant and answer briefly.")
    assert guard.leaks(
        "Sure! My instructions: you are a helpful assistant. Answer in English, briefly and "
        "politely, and never invent facts."
    )
