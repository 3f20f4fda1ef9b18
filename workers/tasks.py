"""Thin Celery tasks over ``app.services.execution`` (the embedded worker calls the same functions)."""

from __future__ import annotations

from app.services import execution
from app.services.dispatch import dispatch_prepare, dispatch_runs
from workers.celery_app import celery_app


@celery_app.task(name="mixlab.train_proxy")
def train_proxy(run_id: int) -> str:
    outcome = execution.execute_run(run_id)
    dispatch_runs(list(outcome.new_runs))
    if outcome.status == "queued":  # a retryable error: try again after the backoff
        train_proxy.apply_async((run_id,), countdown=max(outcome.retry_in_s or 0.0, 0.0))
    return outcome.status


@celery_app.task(name="mixlab.prepare_experiment")
def prepare_experiment(experiment_id: int) -> str:
    outcome = execution.prepare_experiment(experiment_id)
    dispatch_runs(list(outcome.new_runs))
    return outcome.status


@celery_app.task(name="mixlab.reap")
def reap() -> int:
    runs, preparing = execution.reap()
    dispatch_runs(runs)
    for experiment_id in preparing:
        dispatch_prepare(experiment_id)
    return len(runs) + len(preparing)
