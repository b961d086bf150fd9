"""kombu's Redis transport without its one window of message loss.

kombu takes a message off its queue with BRPOP and only then records it as unacknowledged (a
pipeline to the ``unacked`` hash, from which a message whose worker died comes back after the
visibility timeout). If Redis goes away between the two, the message is in no queue and in no
hash, and kombu's restore on connection loss looks for it in the hash: it is lost (kombu issue
#305; tests/faults/test_redis_restart.py lost a press this way on a loaded machine). Here such
a message is kept in the worker's memory and pushed back onto the front of its queue by the
next poll that reaches Redis. A message applied twice is harmless: the tasks are idempotent
(workers/tasks.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kombu.transport import redis

log = logging.getLogger(__name__)

# Process-wide, not per channel: after a connection error kombu builds a new channel.
_stranded: list[tuple[dict[str, Any], str, str]] = []
_lock = threading.Lock()


class QoS(redis.QoS):
    def append(self, message: Any, delivery_tag: Any) -> None:
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors:  # type: ignore[attr-defined]  # kombu's stubs
            delivery = message.delivery_info
            with _lock:
                _stranded.append((message._raw, delivery["exchange"], delivery["routing_key"]))
            log.warning("broker.message_stranded count=%d; requeued on reconnect", len(_stranded))
            raise


class Channel(redis.Channel):
    QoS = QoS

    def _brpop_start(self, timeout: Any = None) -> None:
        self.requeue_stranded()
        super()._brpop_start(timeout)  # type: ignore[misc]

    def requeue_stranded(self) -> int:
        """Push the messages taken off a queue but never recorded back onto it; what cannot
        be pushed yet (Redis still down) is kept for the next poll."""
        with _lock:
            pending = list(_stranded)
            if not pending:
                return 0
            try:
                with self.conn_or_acquire() as client, client.pipeline() as pipe:
                    for payload, exchange, routing_key in pending:
                        self._do_restore_message(  # type: ignore[attr-defined]
                            payload, exchange, routing_key, pipe, True
                        )
                    pipe.execute()
            except self.connection_errors:  # type: ignore[attr-defined]
                return 0
            del _stranded[: len(pending)]
        log.warning("broker.message_requeued count=%d", len(pending))
        return len(pending)


class Transport(redis.Transport):
    Channel = Channel
