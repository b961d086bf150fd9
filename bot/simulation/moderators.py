"""Simulated moderators: they work the review queue in the real bot like people would.

A moderator sends /review in their private chat, reads the card, and decides with the same
hidden taste the users have: a liked answer is approved; a disliked one is corrected — the
moderator edits it into the house style (chatter removed, cut to length, bullets) — for a
share of items, otherwise rejected. Their corrections reach training only as the bot stores
them: gold preference pairs (correction > original) in the reward buffer.
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass

from sqlmodel import Session, select

from bot.simulation.preferences import JUDGES, judge, words
from loopgram.db import Database
from loopgram.emulator.emulator import BotApiEmulator
from loopgram.models import Interaction, ReviewDecision, ReviewItem

_CARD = re.compile(r"Review #(\d+)")
_SENTENCE = re.compile(r"(?<=[.!?…])\s+")
_LEAD_IN = re.compile(r"^[^:\n]{0,80}:\s*", re.UNICODE)  # "Here is the rewritten text: ..."


def correction(assistant: str, source: str, answer: str) -> str | None:
    """What a moderator writes instead of a disliked answer, or None when editing the
    answer cannot make it right (then they reject it)."""
    if assistant == "paraphrase":
        text = _LEAD_IN.sub("", answer.strip(), count=1) if ":" in answer[:90] else answer
        limit = len(words(source))
        kept: list[str] = []
        for sentence in _SENTENCE.split(text.strip()):
            if len(words(" ".join([*kept, sentence]))) > limit:
                break
            kept.append(sentence)
        fixed = " ".join(kept) or " ".join(text.split()[:limit])
    elif assistant == "summarize":
        sentences = [s.strip() for s in _SENTENCE.split(source.strip()) if s.strip()]
        budget = int(0.6 * len(words(source)))
        bullets: list[str] = []
        for sentence in sentences:
            short = " ".join(sentence.split()[:14]).rstrip(",;:")
            if len(words(" ".join([*bullets, short]))) > budget:
                break
            bullets.append(short)
        fixed = "\n".join(f"- {b}" for b in bullets)
    else:
        return None
    return fixed if judge(assistant, source, fixed).liked else None


@dataclass
class Tally:
    approved: int = 0
    rejected: int = 0
    corrected: int = 0
    skipped: int = 0

    @property
    def decided(self) -> int:
        return self.approved + self.rejected + self.corrected


def _decided_by(*, session: Session, item_id: int, moderator_id: int) -> bool:
    query = select(ReviewDecision.id).where(
        ReviewDecision.review_item_id == item_id, ReviewDecision.moderator_id == moderator_id
    )
    return session.exec(query).first() is not None


def _item(*, session: Session, item_id: int) -> tuple[ReviewItem, Interaction] | None:
    item = session.get(ReviewItem, item_id)
    interaction = session.get(Interaction, item.interaction_id) if item else None
    return (item, interaction) if item and interaction else None


class SimModerator:
    def __init__(
        self,
        emulator: BotApiEmulator,
        db: Database,
        user_id: int,
        *,
        correct_share: float,
        rng: random.Random,
        timeout: float = 60.0,
    ) -> None:
        self.emu = emulator
        self.db = db
        self.user_id = user_id
        self.user = emulator.user(user_id, "Moderator", language_code="en")
        self.correct_share = correct_share
        self.rng = rng
        self.timeout = timeout
        self._seen = 0

    async def _reply(self, text: str | None, expect: str | tuple[str, ...]) -> dict[str, object]:
        wanted = (expect,) if isinstance(expect, str) else expect
        if text is not None:
            await self.user.send_text(text)

        def new(message: dict[str, object]) -> bool:
            return int(str(message.get("message_id", 0))) > self._seen and any(
                w in str(message.get("text", "")) for w in wanted
            )

        message = await self.emu.wait_for_bot_message(self.user_id, new, timeout=self.timeout)
        self._seen = int(str(message["message_id"]))
        return message

    async def work(self, limit: int) -> Tally:
        """Decide up to `limit` items of the queue (fewer when it runs empty)."""
        tally = Tally()
        for _ in range(limit):
            card = await self._reply("/review", ("Review #", "queue is empty"))
            found = _CARD.search(str(card.get("text", "")))
            if found is None:
                break
            await self._decide(card, int(found.group(1)), tally)
        return tally

    async def _decide(self, card: dict[str, object], item_id: int, tally: Tally) -> None:
        loaded = await self.db.run(_item, item_id=item_id)
        if loaded is None or loaded[1].assistant not in JUDGES or not loaded[1].answer:
            await self.user.press(card, "⏭ Skip")
            tally.skipped += 1
            await self._reply(None, ("Review #", "queue is empty"))  # the next card follows
            return
        _, interaction = loaded
        if judge(interaction.assistant, interaction.prompt, interaction.answer).liked:
            await self.user.press(card, "✅ Approve")
            tally.approved += 1
        else:
            fix = correction(interaction.assistant, interaction.prompt, interaction.answer)
            if fix is not None and self.rng.random() < self.correct_share:
                await self.user.press(card, "✏️ Correct")
                await self._reply(None, "send the correct answer")
                await self._reply(fix, ("Decided", "Recorded"))
                tally.corrected += 1
            else:
                await self.user.press(card, "❌ Reject")
                tally.rejected += 1
        await self._stored(item_id)

    async def _stored(self, item_id: int) -> None:
        """Wait until the bot has recorded this moderator's decision."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        while not await self.db.run(_decided_by, item_id=item_id, moderator_id=self.user_id):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the decision on review item {item_id} was not stored")
            await asyncio.sleep(0.1)
