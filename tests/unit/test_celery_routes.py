"""Each Celery message goes to its queue: training, proposals, and interim refits apart."""

from __future__ import annotations

from workers.celery_app import PLAN_QUEUE, REFIT_QUEUE, TRAIN_QUEUE, celery_app


def _queue(name: str, args: tuple[object, ...]) -> str:
    return str(celery_app.amqp.router.route({}, name, args, {})["queue"].name)


def test_planning_messages_go_to_their_jobs_queue_and_training_to_the_default() -> None:
    assert _queue("mixlab.plan", (1, "propose")) == PLAN_QUEUE
    assert _queue("mixlab.plan", (1, "refit")) == REFIT_QUEUE
    assert _queue("mixlab.train_proxy", (3,)) == TRAIN_QUEUE
    assert _queue("mixlab.prepare_experiment", (1,)) == TRAIN_QUEUE
