"""Each Celery message goes to its queue: training, proposals, and interim refits apart. The router is
tested on its own: importing ``workers.celery_app`` here would build the app before the integration
tests point it at their broker."""

from __future__ import annotations

from workers.queues import PLAN_QUEUE, REFIT_QUEUE, route


def test_planning_messages_go_to_their_jobs_queue_and_the_rest_to_the_default() -> None:
    assert route("mixlab.plan", (1, "propose"), {}, {}) == {"queue": PLAN_QUEUE}
    assert route("mixlab.plan", (1, "refit"), {}, {}) == {"queue": REFIT_QUEUE}
    assert route("mixlab.plan", (), {"experiment_id": 1, "job": "refit"}, {}) == {"queue": REFIT_QUEUE}
    assert route("mixlab.train_proxy", (3,), {}, {}) is None  # task_default_queue: TRAIN_QUEUE
    assert route("mixlab.prepare_experiment", (1,), {}, {}) is None
