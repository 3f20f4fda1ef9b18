"""The Celery dispatcher: one message per piece of work, sent after the rows are committed.

A message that cannot be sent (broker down) is logged and dropped, never raised: the rows are already
committed, and the reaper (``mixlab beat``) finds queued runs, requested planning passes and unclaimed
preparations in the database and sends them again once the broker is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from app.services.dispatch import Dispatcher
from app.status import PlanJob

log = logging.getLogger(__name__)
BROKER_DOWN = (OperationalError, RedisConnectionError, OSError)


class CeleryDispatcher(Dispatcher):
    def plan(self, experiment_id: int) -> None:
        from workers.tasks import plan_experiment

        for job in PlanJob:  # the queue follows the job (workers.celery_app.route)
            _send(plan_experiment.apply_async, (experiment_id, job.value))

    def runs(self, run_ids: list[int]) -> None:
        from workers.tasks import train_proxy

        for run_id in run_ids:
            _send(train_proxy.apply_async, (run_id,))

    def prepare(self, experiment_id: int) -> None:
        from workers.tasks import prepare_experiment

        _send(prepare_experiment.apply_async, (experiment_id,))


def _send(apply_async: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        apply_async(args, retry=False)
    except BROKER_DOWN as e:
        log.warning("broker unavailable, %s not sent (the reaper re-sends it): %s", args, e)
