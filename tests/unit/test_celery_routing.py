"""Every task lands in its own queue only: a training run must never reach the bot's worker."""

from __future__ import annotations

import pytest

from workers.celery_app import QUEUES, create_celery


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("loopgram.record_feedback", "feedback"),
        ("loopgram.maybe_train", "feedback"),
        ("loopgram.evaluate_canaries", "feedback"),
        ("loopgram.train_assistant", "training"),
        ("loopgram.score_answers", "training"),
    ],
)
def test_each_task_is_bound_to_exactly_one_queue(settings_factory, task: str, queue: str) -> None:
    app = create_celery(settings_factory())
    route = app.amqp.router.route({}, task)["queue"]
    bindings = {(q.exchange.name, q.routing_key): q.name for q in app.amqp.queues.values()}
    # Distinct (exchange, key) per queue: a direct exchange delivers to every queue bound
    # under the same key, so a shared key would copy each task into every queue.
    assert len(bindings) == len(QUEUES)
    assert bindings[(route.exchange.name, route.routing_key)] == queue


def test_explicit_queue_argument_routes_to_that_queue(settings_factory) -> None:
    app = create_celery(settings_factory())
    route = app.amqp.router.route({"queue": "training"}, "loopgram.train_assistant")["queue"]
    assert (route.exchange.name, route.routing_key) == ("training", "training")
