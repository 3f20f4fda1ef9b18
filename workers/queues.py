"""Celery's queues and which message goes to which: training, proposals and interim refits apart, so a
dedicated planner (``mixlab worker --queues mixlab-plan``) never waits behind a run or a slow refit.
No side effects on import (``workers.celery_app`` builds the app from settings)."""

from __future__ import annotations

from typing import Any

from app.status import PlanJob

TRAIN_QUEUE, PLAN_QUEUE, REFIT_QUEUE = "mixlab", "mixlab-plan", "mixlab-refit"


def route(name: str, args: Any, kwargs: Any, options: Any, **_: Any) -> dict[str, str] | None:
    """Celery's router: a planning message by its job (``mixlab.plan(experiment_id, job)``), refits
    to REFIT_QUEUE; None sends everything else to the default queue, TRAIN_QUEUE."""
    if name != "mixlab.plan":
        return None
    job = args[1] if args and len(args) > 1 else (kwargs or {}).get("job")
    return {"queue": REFIT_QUEUE if job == PlanJob.REFIT else PLAN_QUEUE}
