"""Run a Celery worker and beat inside the current process (the embedded default).

`loopgram run` has no broker server to talk to: the worker consumes the file-system broker
in a thread with the solo pool, and beat runs as a thread beside it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from celery import Celery
from celery.beat import Service
from celery.worker import WorkController

log = logging.getLogger(__name__)


class EmbeddedWorker:
    def __init__(
        self,
        app: Celery,
        *,
        data_dir: Path,
        beat: bool = True,
        queues: tuple[str, ...] = ("feedback", "rag"),
    ) -> None:
        """Training is not among the default queues: it never runs in the bot's process
        (`loopgram run` starts a separate worker process for it)."""
        self.app = app
        self._ready = threading.Event()
        self._worker = WorkController(
            app=app,
            pool_cls="solo",
            concurrency=1,
            queues=list(queues),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=lambda _consumer: self._ready.set(),
            hostname="embedded@loopgram",
        )
        self._beat = (
            # A short max_interval lets the beat thread notice a stop within a second.
            Service(app, schedule_filename=str(data_dir / "celerybeat-schedule"), max_interval=1)
            if beat
            else None
        )
        self._threads: list[threading.Thread] = []

    def _as_current(self, target: Callable[[], object]) -> Callable[[], None]:
        """Celery's current app is thread-local: without this, tasks that send tasks from
        these threads would use a fallback app with its default (wrong) broker."""

        def run() -> None:
            self.app.set_current()
            target()

        return run

    def start(self, timeout: float = 30.0) -> None:
        worker_thread = threading.Thread(
            target=self._as_current(self._worker.start), name="celery-worker", daemon=True
        )
        worker_thread.start()
        self._threads.append(worker_thread)
        if self._beat is not None:
            beat_thread = threading.Thread(
                target=self._as_current(self._beat.start), name="celery-beat", daemon=True
            )
            beat_thread.start()
            self._threads.append(beat_thread)
        if not self._ready.wait(timeout):
            raise RuntimeError("embedded Celery worker did not start")
        log.info("embedded.worker_started beat=%s", self._beat is not None)

    def stop(self) -> None:
        if self._beat is not None:
            self._beat.stop()
        self._worker.stop(in_sighandler=False)
        for thread in self._threads:
            thread.join(timeout=10)
