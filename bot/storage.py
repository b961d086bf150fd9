"""FSM storage that survives a Redis outage.

Dialogue state lives in Redis (so webhook replicas share it). If Redis is unreachable the
bot keeps answering with in-process state instead of failing every update; what is lost
is at most a pending "write a comment" step, never a rating.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey
from aiogram.fsm.storage.memory import MemoryStorage
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
T = TypeVar("T")

_OUTAGE = (RedisError, ConnectionError, OSError, TimeoutError)


class FallbackStorage(BaseStorage):
    def __init__(self, primary: BaseStorage, fallback: BaseStorage | None = None) -> None:
        self.primary = primary
        self.fallback = fallback or MemoryStorage()

    async def _try(
        self, primary: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        try:
            return await primary()
        except _OUTAGE as exc:
            log.warning("fsm.storage_degraded error=%s", exc)
            return await fallback()

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        await self._try(
            lambda: self.primary.set_state(key, state), lambda: self.fallback.set_state(key, state)
        )

    async def get_state(self, key: StorageKey) -> str | None:
        return await self._try(
            lambda: self.primary.get_state(key), lambda: self.fallback.get_state(key)
        )

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        await self._try(
            lambda: self.primary.set_data(key, data), lambda: self.fallback.set_data(key, data)
        )

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        return await self._try(
            lambda: self.primary.get_data(key), lambda: self.fallback.get_data(key)
        )

    async def close(self) -> None:
        for storage in (self.primary, self.fallback):
            try:
                await storage.close()
            except _OUTAGE as exc:
                log.warning("fsm.storage_close_failed error=%s", exc)
