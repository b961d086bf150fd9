"""Hand a rating to the workers without ever losing it.

Normal path: enqueue the Celery task. Broker down: write it through to the database in a
thread. Database down too: append it to the local spool, which the bot replays every few
seconds until the broker or the database takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from celery import Celery
from sqlalchemy.exc import SQLAlchemyError

from loopgram.db import Database
from loopgram.feedback import Feedback, apply_feedback
from loopgram.spool import Spool

log = logging.getLogger(__name__)

TASK_NAME = "loopgram.record_feedback"


class FeedbackSink:
    def __init__(self, *, celery_app: Celery, db: Database, spool: Spool) -> None:
        self.celery_app = celery_app
        self.db = db
        self.spool = spool
        self._replayer: asyncio.Task[None] | None = None

    async def submit(self, feedback: Feedback) -> str:
        """Returns how it was stored: "queued", "written" or "spooled"."""
        payload = feedback.to_payload()
        try:
            await asyncio.to_thread(self._enqueue, payload)
            return "queued"
        except Exception as exc:
            log.warning("feedback.enqueue_failed error=%s; writing through", exc)
        try:
            await self.db.run(apply_feedback, feedback=feedback)
            return "written"
        except SQLAlchemyError as exc:
            log.error("feedback.write_failed error=%s; spooling", exc)
        await asyncio.to_thread(self.spool.append, payload)
        return "spooled"

    def _enqueue(self, payload: dict[str, Any]) -> None:
        self.celery_app.send_task(
            TASK_NAME,
            args=[payload],
            queue="feedback",
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )

    def _deliver(self, payload: dict[str, Any]) -> None:
        try:
            self._enqueue(payload)
        except Exception:
            self.db.call(apply_feedback, feedback=Feedback.from_payload(payload))

    async def replay_spool(self) -> int:
        if len(self.spool) == 0:
            return 0
        delivered = await asyncio.to_thread(self.spool.replay, self._deliver)
        if delivered:
            log.info("feedback.spool_replayed count=%s", delivered)
        return delivered

    def start_replayer(self, interval: float = 15.0) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.replay_spool()
                except Exception:
                    log.exception("feedback.spool_replay_error")

        self._replayer = asyncio.create_task(loop(), name="spool-replayer")

    async def stop(self) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
