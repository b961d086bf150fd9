"""The embedded broker never hands a consumer a half-written message."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kombu import Connection, Queue

from loopgram.settings import AppSettings, Settings
from workers.celery_app import broker_options


def test_messages_are_whole_under_concurrent_produce_and_consume(tmp_path: Path) -> None:
    options = broker_options(Settings(app=AppSettings(data_dir=tmp_path)))
    queue = "feedback"
    received: list[dict[str, int]] = []
    errors: list[BaseException] = []
    total = 400

    def consume() -> None:
        with Connection(
            options["broker_url"],
            transport=options["broker_transport"],
            transport_options=options["broker_transport_options"],
        ) as conn:
            simple = conn.SimpleQueue(queue)
            deadline = time.monotonic() + 60
            while len(received) < total and time.monotonic() < deadline:
                try:
                    message = simple.get(block=True, timeout=1)
                except simple.Empty:
                    continue
                except BaseException as exc:  # what broke the embedded worker before
                    errors.append(exc)
                    return
                received.append(message.payload)
                message.ack()
            simple.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    with Connection(
        options["broker_url"],
        transport=options["broker_transport"],
        transport_options=options["broker_transport_options"],
    ) as conn:
        # Publish the way Celery's producer does (a bare producer, no consumer of its own).
        producer = conn.Producer(serializer="json")
        for i in range(total):
            producer.publish(
                {"n": i, "pad": "x" * 2000},
                routing_key=queue,
                declare=[Queue(queue, routing_key=queue)],
            )
    consumer.join(timeout=90)
    assert errors == []
    assert sorted(m["n"] for m in received) == list(range(total))
