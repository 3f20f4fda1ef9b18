"""Hand work to whoever executes it: Celery workers, or the in-process embedded worker.

Always called after the transaction that created the work has committed. Sending the same work twice
is harmless: a run is claimed with a conditional UPDATE, so only one executor ever trains it.
"""

from __future__ import annotations

import threading

from app.core.config import get_settings

# Set by the embedded worker so new work wakes it at once instead of at its next poll.
wake_embedded = threading.Event()


def dispatch_runs(run_ids: list[int]) -> None:
    if not run_ids:
        return
    if get_settings().executor == "celery":
        from workers.tasks import train_proxy

        for run_id in run_ids:
            train_proxy.apply_async((run_id,))
    else:
        wake_embedded.set()


def dispatch_prepare(experiment_id: int) -> None:
    if get_settings().executor == "celery":
        from workers.tasks import prepare_experiment

        prepare_experiment.apply_async((experiment_id,))
    else:
        wake_embedded.set()
