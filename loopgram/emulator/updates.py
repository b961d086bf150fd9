"""Pending updates: ids, confirmation by offset, allowed_updates, and long-poll waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

JsonDict = dict[str, Any]

# Telegram leaves these out unless a bot asks for them explicitly.
OPT_IN_TYPES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_ID_EPOCH = 1_735_689_600  # 2025-01-01: keeps time-derived ids inside a signed 32-bit integer


def time_based_first_id(now: float | None = None) -> int:
    """A first update_id that grows 10 per second, so ids of a new emulator run stay above
    the ids of earlier runs and a bot with a persistent dedup table does not drop them."""
    moment = time.time() if now is None else now
    return max(1, int((moment - _ID_EPOCH) * 10))


def update_type(update: JsonDict) -> str:
    return next((key for key in update if key != "update_id"), "")


class UpdateQueue:
    def __init__(self, first_update_id: int) -> None:
        self.next_id = first_update_id
        self.pending: list[JsonDict] = []
        self.dropped: list[JsonDict] = []  # filtered out by allowed_updates
        self.allowed: frozenset[str] | None = None  # None: every type but the opt-in ones
        self.poll_generation = 0  # a newer getUpdates terminates an older waiting one
        self._changed = asyncio.Event()

    def push(self, update: JsonDict) -> int:
        if "update_id" not in update:
            update = {"update_id": self.next_id, **update}
        update_id = int(update["update_id"])
        self.next_id = max(self.next_id, update_id + 1)
        self.pending.append(update)
        self.notify()
        return update_id

    def set_allowed(self, types: list[str] | None) -> None:
        """Like the server: a list replaces the setting, an empty list means the default."""
        if types is not None:
            self.allowed = frozenset(types) if types else None

    def is_allowed(self, update: JsonDict) -> bool:
        kind = update_type(update)
        if self.allowed is None:
            return kind not in OPT_IN_TYPES
        return kind in self.allowed

    def confirm(self, offset: int) -> None:
        """Forget updates before ``offset``; a negative offset keeps only the last -offset."""
        if offset < 0:
            self.pending = self.pending[offset:]
        else:
            self.pending = [u for u in self.pending if u["update_id"] >= offset]

    def remove(self, update_id: int) -> None:
        self.pending = [u for u in self.pending if u["update_id"] != update_id]

    def clear(self) -> None:
        self.pending.clear()

    def peek(self, limit: int) -> list[JsonDict]:
        """Up to ``limit`` deliverable updates; ones the bot did not ask for are dropped."""
        batch: list[JsonDict] = []
        kept: list[JsonDict] = []
        for update in self.pending:
            if not self.is_allowed(update):
                self.dropped.append(update)
                continue
            kept.append(update)
            if len(batch) < limit:
                batch.append(update)
        self.pending = kept
        return batch

    def notify(self) -> None:
        """Wake every waiter (new update, webhook change, newer poll, shutdown)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Wait for :meth:`notify` or ``seconds``. asyncio.timeout, unlike wait_for on 3.11,
        never loses a cancellation, so stopping the emulator cannot hang here."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await changed.wait()
