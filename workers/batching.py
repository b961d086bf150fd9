"""Worker-side batching: many messages of one task, one call in the pool, acks after it.

A task whose base is `BatchTask` is still sent as an ordinary Celery task (one message per
item, so nothing changes for producers or for messages already queued). The worker does not
run it per message: its strategy buffers the payloads (the first positional argument) and hands
up to `flush_every` of them to `run_batch(payloads)` in the pool, at the latest
`flush_interval` seconds after the first one arrived (a message counts `weigh(payload)`: 1 by
default, the number of items for a task whose payload is a list of them). Messages are
acknowledged only after
`run_batch` returned; if it raised, or the pool process died, they are requeued, so a message
is never lost (it may be applied twice: the batch function must be idempotent).

Held messages do not count against the prefetch window (as Celery does for ETA tasks), up to
`max_held` of them, so a batch can fill while a previous one runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Task

from workers.task_figures import record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Held:
    message: Any
    payload: Any
    ack: Callable[..., Any]
    reject: Callable[..., Any]


@dataclass(frozen=True)
class BatchOutcome:
    ok: bool
    result: Any = None
    error: str = ""


def run_in_pool(task: BatchTask, payloads: list[Any]) -> BatchOutcome:
    """The pool job: never raises (the solo pool would raise into the consumer). The batch
    is one run of its task in the task figures (Celery's tracer, which records the others,
    is not involved)."""
    started = time.monotonic()
    try:
        outcome = BatchOutcome(ok=True, result=task.run_batch(payloads))
    except Exception as exc:
        log.exception("batch.failed task=%s size=%d", task.name, len(payloads))
        outcome = BatchOutcome(ok=False, error=f"{type(exc).__name__}: {exc}")
    record(task, "success" if outcome.ok else "failure", time.monotonic() - started)
    return outcome


class BatchTask(Task[Any, Any]):
    """Base for a batched task; subclasses implement `run_batch(payloads) -> Any`."""

    flush_every = 100
    flush_interval = 0.2
    max_held = 400

    def run_batch(self, payloads: list[Any]) -> Any:
        raise NotImplementedError

    def weigh(self, payload: Any) -> int:
        """How much of `flush_every` one message fills (a bulk message: its item count)."""
        return 1

    def run(self, payload: Any) -> Any:
        """Called directly or with `.apply()` (eagerly): a batch of one."""
        return self.run_batch([payload])

    # Celery instantiates `Strategy` (a dotted path by default) once per consumer start.
    def Strategy(  # type: ignore[override]
        self, task: BatchTask, app: Any, consumer: Any
    ) -> Callable[..., None]:
        return _Batcher(task, consumer).on_message


class _Batcher:
    """The buffer of one task in one consumer (a new one after each reconnection)."""

    def __init__(self, task: BatchTask, consumer: Any) -> None:
        self.task = task
        self.consumer = consumer
        self.lock = threading.Lock()
        self.buffer: list[_Held] = []
        self.weight = 0
        self.timer_entry: Any = None
        self.held = 0
        self.held_qos: Any = None

    def on_message(
        self, message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **_: Any
    ) -> None:
        try:
            payload = _payload(message, body)
        except Exception:
            log.exception("batch.bad_message task=%s; dropped", self.task.name)
            reject(log, self.consumer.connection_errors, False)
            return
        batch: list[_Held] = []
        with self.lock:
            self.buffer.append(_Held(message, payload, ack, reject))
            self.weight += max(1, self.task.weigh(payload))
            self._hold()
            if self.weight >= self.task.flush_every:
                batch = self._take()
            elif self.timer_entry is None:
                self.timer_entry = self.consumer.timer.call_after(
                    self.task.flush_interval, self._flush_due
                )
        if batch:
            self._dispatch(batch)

    def _flush_due(self) -> None:
        with self.lock:
            self.timer_entry = None
            batch = self._take()
        if batch:
            self._dispatch(batch)

    def _take(self) -> list[_Held]:
        batch, self.buffer, self.weight = self.buffer, [], 0
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None
        return batch

    def _dispatch(self, batch: list[_Held]) -> None:
        def done(outcome: Any) -> None:
            ok = isinstance(outcome, BatchOutcome) and outcome.ok
            self._settle(batch, requeue=not ok)

        def lost(exc: Any) -> None:
            log.error("batch.lost task=%s size=%d: %r; requeued", self.task.name, len(batch), exc)
            self._settle(batch, requeue=True)

        self.consumer.pool.apply_async(
            run_in_pool,
            (self.task, [h.payload for h in batch]),
            callback=done,
            error_callback=lost,
        )

    def _settle(self, batch: list[_Held], *, requeue: bool) -> None:
        errors = self.consumer.connection_errors
        for held in batch:
            if requeue:
                held.reject(log, errors, True)
            else:
                held.ack(log, errors)
        self._release(len(batch))

    def _hold(self) -> None:
        """One more message held: widen the prefetch window by one (up to `max_held`)."""
        qos = self.consumer.qos
        if qos is None:
            return
        if qos is not self.held_qos:
            self.held_qos, self.held = qos, 0
        if self.held < self.task.max_held:
            qos.increment_eventually()
            self.held += 1

    def _release(self, n: int) -> None:
        with self.lock:
            qos = self.consumer.qos
            if qos is None or qos is not self.held_qos or not self.held:
                return
            k = min(n, self.held)
            self.held -= k
        qos.decrement_eventually(k)


def _payload(message: Any, body: Any) -> Any:
    """The first positional argument (or the `payload` keyword) of a task message."""
    if body is None:  # protocol 2: the body is (args, kwargs, embed)
        args, kwargs = message.decode()[:2]
    else:  # protocol 1: a dict with the arguments
        args, kwargs = body.get("args") or (), body.get("kwargs") or {}
    if args:
        return args[0]
    return kwargs["payload"]
