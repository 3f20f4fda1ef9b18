"""Thin Celery tasks over ``workers.execution`` and ``workers.planner`` (the embedded worker calls the
same functions). Planning has its own queue, so a planner is never stuck behind training messages."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

from app.status import PlanJob
from workers import execution
from workers.celery_app import celery_app
from workers.planner import plan


@celery_app.task(name="mixlab.train_proxy")
def train_proxy(run_id: int) -> str:
    outcome = execution.execute_run(run_id)
    if outcome.status == "queued":  # a retryable error: try again after the backoff
        train_proxy.apply_async((run_id,), countdown=max(outcome.retry_in_s or 0.0, 0.0))
    return outcome.status


@celery_app.task(name="mixlab.prepare_experiment")
def prepare_experiment(experiment_id: int) -> str:
    return execution.prepare_experiment(experiment_id).status


@celery_app.task(
    name="mixlab.plan",
    autoretry_for=(DBAPIError,),
    retry_backoff=True,
    retry_kwargs={"max_retries": 5},
)
def plan_experiment(experiment_id: int, job: str) -> int:
    return plan(experiment_id, PlanJob(job))


@celery_app.task(name="mixlab.reap")
def reap() -> None:
    execution.reap()
