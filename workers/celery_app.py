"""The Celery application. Late acks + reject-on-lost: a killed worker's task is redelivered, and the
claim in the database makes sure a run is still trained only once. Proposing (``mixlab-plan``) and
interim refits (``mixlab-refit``) have queues of their own, so a dedicated planner is never stuck
behind a training run or a slow refit; by default every worker consumes all three."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

from app.core.config import get_settings
from app.services.dispatch import set_dispatcher
from workers.dispatch import CeleryDispatcher
from workers.priority import background, lower_this_thread
from workers.queues import TRAIN_QUEUE, route

settings = get_settings()
celery_app = Celery("mixlab", broker=settings.broker_url, include=["workers.tasks"])
celery_app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=TRAIN_QUEUE,
    task_routes=(route,),
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 6 * 3600},
    beat_schedule={"reap-stale-runs": {"task": "mixlab.reap", "schedule": settings.reap_every_s}},
    beat_schedule_filename=str(settings.storage_dir / "celerybeat-schedule"),
)
set_dispatcher(CeleryDispatcher())  # tasks hand their follow-up work to Celery too


@worker_process_init.connect
def _background_priority(**_: object) -> None:
    """A pool process that trains or refits yields to an API served on the same machine; one of a
    worker that only proposes does not (``workers.priority``)."""
    if background(celery_app.amqp.queues.consume_from):
        lower_this_thread()
