"""Hand ratings to the workers without ever losing one, many per broker message.

Presses are group-committed. `submit` adds the rating to the open batch and waits until that
batch is stored; a batch is published as ONE `loopgram.record_feedback_many` message:

* at once when it holds `max_batch` ratings;
* otherwise as soon as nothing is being published (at the end of the current event-loop
  step, or `linger` seconds later if set), so an idle bot publishes a press without delay
  and a busy one gathers the presses that arrive while the previous batch is on its way.

Batches are published in order by one publisher thread. `submit` returns only once its
batch is stored, exactly as when each press was sent alone: a rating the caller was told
about is in the broker, the database or the fsync'd spool. Nothing is held back on stop
(`stop` stores what is waiting).

Normal path: publish the batch. Broker down: write the batch through to the database in one
transaction (in a thread). Database down too: append it to the local spool (one fsync),
which the bot replays every few seconds until the broker or the database takes it.

The user's press is answered (answerCallbackQuery) by the handler before it submits, so
batching never delays that answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import Celery
from sqlalchemy.exc import SQLAlchemyError

from loopgram.db import Database
from loopgram.feedback import Feedback, apply_feedback, apply_feedback_many
from loopgram.models import utcnow
from loopgram.spool import Spool

log = logging.getLogger(__name__)

TASK_NAME = "loopgram.record_feedback_many"

_Waiting = tuple[dict[str, Any], "asyncio.Future[str]"]


class FeedbackSink:
    def __init__(
        self,
        *,
        celery_app: Celery,
        db: Database,
        spool: Spool,
        max_batch: int = 500,
        linger: float = 0.0,
    ) -> None:
        """`max_batch`: ratings per broker message at most. `linger`: seconds an idle sink
        waits for more presses before publishing a batch that is not full (0: none)."""
        self.celery_app = celery_app
        self.db = db
        self.spool = spool
        self.max_batch = max_batch
        self.linger = linger
        self.published = 0  # broker messages sent (each with one batch of ratings)
        self._waiting: list[_Waiting] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight = 0  # batches handed to the publisher and not settled yet
        self._cut: asyncio.Handle | None = None
        self._settling: set[asyncio.Task[None]] = set()
        self._publisher: ThreadPoolExecutor | None = None
        self._replayer: asyncio.Task[None] | None = None

    async def submit(self, feedback: Feedback) -> str:
        """Returns how it was stored: "queued", "written" or "spooled"."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._adopt(loop)
        stored: asyncio.Future[str] = loop.create_future()
        payload = feedback.to_payload()
        if payload["pressed_at"] is None:
            # The handlers stamp a press when its update arrives; any other press of the bot
            # now, so the workers can tell an older press applied late from the latest one.
            payload["pressed_at"] = utcnow().isoformat()
        self._waiting.append((payload, stored))
        if len(self._waiting) >= self.max_batch:
            self._send()
        elif not self._in_flight and self._cut is None:
            # Presses handled in this same loop step join the batch.
            self._cut = (
                loop.call_later(self.linger, self._cut_due)
                if self.linger > 0
                else loop.call_soon(self._cut_due)
            )
        # A handler cancelled while it waits cancels only its wait: the rating stays in the
        # batch and is stored all the same.
        return await stored

    async def flush(self) -> None:
        """Wait until every rating submitted so far is stored."""
        while self._waiting or self._settling:
            if self._waiting and not self._in_flight:
                self._send()
            if self._settling:
                await asyncio.gather(*self._settling, return_exceptions=True)

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """First use, or a new event loop (the old one closed): nothing is in flight here."""
        self._loop = loop
        self._in_flight = 0
        self._cut = None
        self._settling = set()
        # Presses left by a loop that closed mid-way are still sent, with the next batch.
        self._waiting = [(p, loop.create_future()) for p, f in self._waiting if not f.done()]

    def _cut_due(self) -> None:
        self._cut = None
        if self._waiting and not self._in_flight:
            self._send()

    def _send(self) -> None:
        """Hand the oldest `max_batch` waiting ratings to the publisher thread now."""
        assert self._loop is not None
        if self._cut is not None:
            self._cut.cancel()
            self._cut = None
        batch = self._waiting[: self.max_batch]
        del self._waiting[: self.max_batch]
        if self._publisher is None:
            # One thread: batches reach the broker in the order they were cut.
            self._publisher = ThreadPoolExecutor(1, thread_name_prefix="feedback-publisher")
        payloads = [payload for payload, _ in batch]
        published = self._loop.run_in_executor(self._publisher, self._enqueue_many, payloads)
        self._in_flight += 1
        task = self._loop.create_task(self._settle(batch, published), name="feedback-batch")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, batch: list[_Waiting], published: asyncio.Future[None]) -> None:
        try:
            how = await self._stored(published, [payload for payload, _ in batch])
        except Exception as exc:  # not even the spool took it: the callers hear so
            log.exception("feedback.store_failed count=%d", len(batch))
            for _, stored in batch:
                if not stored.done():
                    stored.set_exception(exc)
        except BaseException:  # cancelled: the loop is closing
            self._in_flight -= 1
            for _, stored in batch:
                stored.cancel()
            raise
        else:
            for _, stored in batch:
                if not stored.done():
                    stored.set_result(how)
        self._in_flight -= 1
        if self._waiting and not self._in_flight:
            self._send()  # what arrived while this batch was on its way

    async def _stored(self, published: asyncio.Future[None], payloads: list[dict[str, Any]]) -> str:
        try:
            await published
            self.published += 1
            return "queued"
        except Exception as exc:
            log.warning(
                "feedback.enqueue_failed count=%d error=%s; writing through", len(payloads), exc
            )
        try:
            feedbacks = [Feedback.from_payload(p) for p in payloads]
            await self.db.run(apply_feedback_many, feedbacks=feedbacks)
            return "written"
        except SQLAlchemyError as exc:
            log.error("feedback.write_failed count=%d error=%s; spooling", len(payloads), exc)
        await asyncio.to_thread(self.spool.extend, payloads)
        return "spooled"

    def _enqueue_many(self, payloads: list[dict[str, Any]]) -> None:
        self.celery_app.send_task(
            TASK_NAME,
            args=[payloads],
            queue="feedback",
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )

    def _deliver(self, payload: dict[str, Any]) -> None:
        try:
            self._enqueue_many([payload])
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
        """Store what is still waiting, then stop replaying the spool."""
        try:
            await self.flush()
        except Exception:
            log.exception("feedback.flush_on_stop_failed")
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        if self._publisher is not None:
            self._publisher.shutdown(wait=False)
            self._publisher = None
