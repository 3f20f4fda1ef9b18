"""The Celery dispatcher: one message per piece of work, sent after the rows are committed."""

from __future__ import annotations

from app.services.dispatch import Dispatcher
from app.status import PlanJob


class CeleryDispatcher(Dispatcher):
    def plan(self, experiment_id: int) -> None:
        from workers.tasks import plan_experiment

        for job in PlanJob:
            plan_experiment.apply_async((experiment_id, job.value))

    def runs(self, run_ids: list[int]) -> None:
        from workers.tasks import train_proxy

        for run_id in run_ids:
            train_proxy.apply_async((run_id,))

    def prepare(self, experiment_id: int) -> None:
        from workers.tasks import prepare_experiment

        prepare_experiment.apply_async((experiment_id,))
