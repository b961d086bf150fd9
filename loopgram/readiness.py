"""Readiness: can this process do its work right now? (`/readyz` of the bot).

Checks, each with a short timeout, all at once:
- `database`: `SELECT 1`;
- `redis` (only when `REDIS_URL` is set): `PING`;
- `model`: `GET <LLM_BASE_URL>/models` (cheap on vLLM and the built-in server; no generation).

Liveness (`/healthz`) stays a constant answer: a process that is alive but whose database
is down must be taken out of the load balancer, not restarted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from loopgram.db import Database
from loopgram.logging_setup import mask_secrets
from loopgram.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Readiness:
    """The outcome of every check: `ok` only when all passed."""

    checks: dict[str, str] = field(default_factory=dict)  # name -> "ok" or why not
    elapsed_ms: int = 0

    @property
    def ok(self) -> bool:
        return all(result == "ok" for result in self.checks.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, result in self.checks.items() if result != "ok"]

    def body(self) -> dict[str, Any]:
        return {
            "status": "ready" if self.ok else "not ready",
            "checks": self.checks,
            "failed": self.failed,
            "elapsed_ms": self.elapsed_ms,
        }


class ReadinessChecker:
    def __init__(self, settings: Settings, db: Database, *, timeout: float | None = None) -> None:
        self.settings = settings
        self.db = db
        self.timeout = settings.ops.ready_timeout if timeout is None else timeout
        self._ping: concurrent.futures.Future[None] | None = None

    async def check(self) -> Readiness:
        started = time.monotonic()
        names = ["database", "model"]
        jobs = [self._database(), self._model()]
        if self.settings.redis.redis_url:
            names.append("redis")
            jobs.append(self._redis(self.settings.redis.redis_url))
        results = await asyncio.gather(
            *(self._guarded(name, job) for name, job in zip(names, jobs, strict=True))
        )
        report = Readiness(
            checks=dict(zip(names, results, strict=True)),
            elapsed_ms=int((time.monotonic() - started) * 1000),
        )
        if not report.ok:
            log.warning("ready.failed checks=%s", ",".join(report.failed))
        return report

    async def _guarded(self, name: str, job: Any) -> str:
        try:
            await asyncio.wait_for(job, timeout=self.timeout)
        except TimeoutError:
            return f"timed out after {self.timeout:g} s"
        except Exception as exc:
            detail = " ".join(str(exc).split())[:200]
            return mask_secrets(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)
        return "ok"

    async def _database(self) -> None:
        # A database that hangs holds the ping's thread until it answers (the timeout only stops
        # the waiting). One ping at a time, on a daemon thread of its own: probes must not pile
        # stuck threads into the default executor that /metrics and the bot's work share.
        if self._ping is None or self._ping.done():
            self._ping = self._start_ping()
        await asyncio.wrap_future(self._ping)

    def _start_ping(self) -> concurrent.futures.Future[None]:
        from sqlalchemy import text

        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()  # a probe that times out cannot cancel it then

        def ping() -> None:
            try:
                with self.db.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

        threading.Thread(target=ping, name="readiness-db", daemon=True).start()
        return future

    async def _redis(self, url: str) -> None:
        from redis.asyncio import Redis

        client = Redis.from_url(
            url, socket_connect_timeout=self.timeout, socket_timeout=self.timeout
        )
        try:
            await client.ping()
        finally:
            await client.aclose()

    async def _model(self) -> None:
        llm = self.settings.llm
        headers = {}
        if llm.llm_api_key is not None:
            headers["Authorization"] = f"Bearer {llm.llm_api_key.get_secret_value()}"
        url = llm.base_url.rstrip("/") + "/models"
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, headers=headers) as response,
        ):
            if response.status != 200:
                raise RuntimeError(f"GET /models answered {response.status}")
