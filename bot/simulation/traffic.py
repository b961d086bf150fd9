"""Simulated people talking to the real bot through the Bot API emulator.

Each person works through their share of prompts one at a time, as a person in a chat
would; people run concurrently. Every answer is read from the emulated chat (what the user
sees), judged by the hidden preference, and pressed like a person would press it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.callbacks import RateCb, ReasonCb
from bot.simulation.people import Action, Person
from bot.simulation.preferences import Judgement, judge
from bot.simulation.prompts import Prompt
from loopgram.emulator import BotApiEmulator, EmulatedUser
from loopgram.feedback import REASONS
from loopgram.i18n import t

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]


@dataclass
class Exchange:
    """One prompt and what the person did with the answer(s)."""

    user_id: int
    prompt: Prompt
    answer: str
    judgement: Judgement
    action: Action
    second: str | None = None
    second_judgement: Judgement | None = None
    presses: list[tuple[int, int]] = field(default_factory=list)
    """(interaction id, +1/-1) of every rating press, to wait for the worker to store them."""
    failed: bool = False
    """The bot apologised instead of answering (the model was down or too slow)."""
    seconds: float = 0.0
    """From the question sent to the (first) answer ready to rate, as the person waited."""


def _rating_buttons(message: JsonDict) -> dict[str, str]:
    """Callback data of the answer's buttons by action (up, down, regenerate; retry when the
    model failed), or {} when the message has none."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
    buttons = {}
    for button in itertools.chain.from_iterable(rows):
        data = str(button.get("callback_data") or "")
        if not data.startswith(f"{RateCb.__prefix__}:"):
            continue
        buttons[RateCb.unpack(data).action.name] = data
    return buttons


def interaction_id(callback_data: str) -> int:
    return RateCb.unpack(callback_data).iid


class Conversation:
    """One simulated person in their private chat with the bot."""

    def __init__(
        self, emulator: BotApiEmulator, person: Person, *, first_name: str, timeout: float
    ) -> None:
        self.emu = emulator
        self.person = person
        self.user: EmulatedUser = emulator.user(
            person.user_id, first_name, language_code=person.lang
        )
        self.timeout = timeout
        self._last_answer_id = 0
        self._assistant: str | None = None

    @property
    def chat_id(self) -> int:
        return self.person.user_id

    async def _next_answer(self) -> JsonDict:
        def is_new_answer(message: JsonDict) -> bool:
            return (
                "edit_date" not in message
                and int(message.get("message_id", 0)) > self._last_answer_id
                and bool(_rating_buttons(message))
            )

        answer = await self.emu.wait_for_bot_message(
            self.chat_id, is_new_answer, timeout=self.timeout
        )
        self._last_answer_id = int(answer["message_id"])
        return answer

    async def _say(self, text: str, expect: Callable[[JsonDict], bool]) -> JsonDict:
        await self.user.send_text(text)
        return await self.emu.wait_for_bot_message(self.chat_id, expect, timeout=30)

    async def use(self, assistant: str) -> None:
        if self._assistant == assistant:
            return
        await self._say(f"/{assistant}", lambda m: "edit_date" not in m)
        self._assistant = assistant

    async def ask(self, prompt: Prompt) -> Exchange:
        await self.use(prompt.assistant)
        started = time.monotonic()
        await self.user.send_text(prompt.text)
        answer = await self._next_answer()
        waited = time.monotonic() - started
        buttons = _rating_buttons(answer)
        if "up" not in buttons:
            failure = Judgement(False, -3.0, "no answer")
            return Exchange(
                self.person.user_id, prompt, "", failure, Action.ignore, failed=True, seconds=waited
            )
        text = str(answer.get("text", ""))
        verdict = judge(prompt.assistant, prompt.text, text)
        action = self.person.react(verdict)
        exchange = Exchange(self.person.user_id, prompt, text, verdict, action, seconds=waited)
        if action == Action.regenerate:
            await self._compare(exchange, answer, buttons)
        elif action in (Action.up, Action.down):
            await self._rate(exchange, answer, buttons, action, verdict)
        return exchange

    async def _compare(self, exchange: Exchange, first: JsonDict, buttons: dict[str, str]) -> None:
        await self.user.press(first, buttons["regenerate"])
        second = await self._next_answer()
        if "up" not in _rating_buttons(second):
            exchange.failed = True
            return
        exchange.second = str(second.get("text", ""))
        exchange.second_judgement = judge(
            exchange.prompt.assistant, exchange.prompt.text, exchange.second
        )
        first_wins = self.person.prefers_first(exchange.judgement, exchange.second_judgement)
        winner, loser = (first, second) if first_wins else (second, first)
        for message, value in ((winner, 1), (loser, -1)):
            data = _rating_buttons(message)["up" if value > 0 else "down"]
            await self.user.press(message, data)
            exchange.presses.append((interaction_id(data), value))

    async def _rate(
        self,
        exchange: Exchange,
        answer: JsonDict,
        buttons: dict[str, str],
        action: Action,
        verdict: Judgement,
    ) -> None:
        data = buttons[action.value]
        await self.user.press(answer, data)
        iid = interaction_id(data)
        exchange.presses.append((iid, 1 if action == Action.up else -1))
        if action != Action.down or not self.person.picks_reason():
            return
        reason = "style" if verdict.why in ("longer than the original", "too long") else "other"
        assert reason in REASONS
        # The reasons keyboard replaces the rating one once the bot has handled the 👎.
        ask = t(self.person.lang, "feedback-ask-comment")
        await self.emu.wait_for(lambda: self._shows_reasons(answer["message_id"]), timeout=30)
        await self.user.press(answer, t(self.person.lang, f"reason-{reason}"))
        await self.emu.wait_for_bot_message(self.chat_id, lambda m: m.get("text") == ask, 30)
        comment = self.person.comment(verdict)
        if comment is None:
            await self._say("/skip", lambda m: "edit_date" not in m)
        else:
            await self._say(comment, lambda m: "edit_date" not in m)

    def _shows_reasons(self, message_id: int) -> bool:
        for message in self.emu.bot_messages(self.chat_id):
            if message.get("message_id") == message_id:
                rows = (message.get("reply_markup") or {}).get("inline_keyboard") or []
                return any(
                    str(b.get("callback_data", "")).startswith(f"{ReasonCb.__prefix__}:")
                    for b in itertools.chain.from_iterable(rows)
                )
        return False


async def run_traffic(
    conversations: Sequence[Conversation],
    prompts: Sequence[Prompt],
    *,
    on_done: Callable[[Exchange], None] | None = None,
) -> list[Exchange]:
    """Each prompt goes to a person of its language (round robin); people run concurrently,
    each working through their own queue in order."""
    queues: dict[int, list[Prompt]] = {c.person.user_id: [] for c in conversations}
    by_lang: dict[str, itertools.cycle[Conversation]] = {}
    for lang in {p.lang for p in prompts}:
        speakers = [c for c in conversations if c.person.lang == lang]
        if not speakers:
            raise ValueError(f"no simulated person speaks {lang!r}")
        by_lang[lang] = itertools.cycle(speakers)
    for prompt in prompts:
        queues[next(by_lang[prompt.lang]).person.user_id].append(prompt)

    exchanges: list[Exchange] = []

    async def work(conversation: Conversation) -> None:
        for prompt in queues[conversation.person.user_id]:
            exchange = await conversation.ask(prompt)
            exchanges.append(exchange)
            if on_done is not None:
                on_done(exchange)

    await asyncio.gather(*(work(c) for c in conversations))
    return exchanges
