"""A message Redis dies on between BRPOP and kombu's unacked record is not lost
(workers/redis_transport.py). The failure is made to happen at exactly that point: kombu's
own transport loses the message there, ours delivers it at the next poll."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis as redis_lib
from kombu import Connection
from kombu.transport import redis as kombu_redis

from workers import redis_transport
from workers.celery_app import broker_options
from workers.redis_transport import Transport

pytestmark = pytest.mark.integration


@pytest.fixture
def queue_name(redis_url: str) -> Iterator[str]:
    yield f"stranded-{uuid.uuid4().hex[:8]}"
    redis_transport._stranded.clear()


def _fail_once_after_brpop(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """kombu's unacked record fails once with a connection error, as when Redis is killed
    right after it answered the BRPOP."""
    failed: list[int] = []
    original = kombu_redis.QoS.append

    def append(self: Any, message: Any, delivery_tag: Any) -> None:
        if not failed:
            failed.append(1)
            raise redis_lib.exceptions.ConnectionError("Redis went away after BRPOP")
        original(self, message, delivery_tag)

    monkeypatch.setattr(kombu_redis.QoS, "append", append)
    return failed


def _received(transport: Any, url: str, queue_name: str, sent: int) -> list[int]:
    with Connection(url, transport=transport) as connection:
        queue = connection.SimpleQueue(queue_name)
        for number in range(sent):
            queue.put({"n": number})
        received: list[int] = []
        for _attempt in range(sent + 2):
            try:
                message = queue.get(timeout=1)
            except redis_lib.exceptions.ConnectionError:
                continue  # the worker's consumer reconnects and polls again
            except queue.Empty:
                break
            received.append(message.payload["n"])
            message.ack()
        queue.close()
    return received


def test_kombus_own_transport_loses_the_message(
    redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = _fail_once_after_brpop(monkeypatch)
    received = _received(kombu_redis.Transport, redis_url, queue_name, sent=3)
    assert failed and len(received) == 2  # the window this module closes


def test_a_message_taken_but_not_recorded_is_delivered_at_the_next_poll(
    redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = _fail_once_after_brpop(monkeypatch)
    received = _received(Transport, redis_url, queue_name, sent=3)
    assert failed and sorted(received) == [0, 1, 2]
    assert redis_transport._stranded == []


def test_a_stranded_message_waits_while_redis_is_down(
    redis_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_transport._stranded.append(({"body": "x", "headers": {}}, "", queue_name))
    with Connection(redis_url, transport=Transport) as connection:
        channel = cast(redis_transport.Channel, connection.default_channel)

        def down(client: Any = None) -> Any:
            raise redis_lib.exceptions.ConnectionError("still down")

        with monkeypatch.context() as patch:
            patch.setattr(channel, "conn_or_acquire", down)
            assert channel.requeue_stranded() == 0
        assert len(redis_transport._stranded) == 1  # kept for the next poll
        assert channel.requeue_stranded() == 1
    assert redis_transport._stranded == []
    assert redis_lib.Redis.from_url(redis_url).llen(queue_name) == 1


def test_the_redis_broker_uses_this_transport(settings_factory: Any, redis_url: str) -> None:
    options = broker_options(settings_factory(REDIS_URL=redis_url))
    assert options["broker_transport"] == "workers.redis_transport:Transport"
