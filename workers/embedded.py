"""The embedded worker: threads in the API (or demo) process that run the same task bodies as Celery.

Three loops, so no kind of work waits behind another: proposals (fast, what ``ask`` waits for, at
serving priority), refits (slow fits at large histories) and training (minutes per run), both niced
(``workers.priority``). Each finds its work in the database
(so it picks up where a crashed process left off) and sleeps until the in-process dispatcher wakes it
or ``poll_s`` passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import select

from app.core.config import get_settings
from app.core.db import session_scope
from app.models import Experiment
from app.services import planning, runs
from app.services.dispatch import Dispatcher, Polling, set_dispatcher
from app.status import ExperimentStatus, PlanJob
from workers import execution
from workers.planner import plan
from workers.priority import lower_this_thread

log = logging.getLogger(__name__)


class _Loop:
    """One thread repeating ``step`` (True: did work, go again) and sleeping on ``wake`` otherwise."""

    def __init__(
        self, name: str, step: Callable[[], bool], poll_s: float, stop: threading.Event, *, background: bool
    ) -> None:
        self.wake = threading.Event()
        self._step, self._poll_s, self._stop, self._background = step, poll_s, stop, background
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        if self._background:
            lower_this_thread()  # requests served by this process come first
        while not self._stop.is_set():
            try:
                busy = self._step()
            except Exception:
                log.exception("%s step failed", self.thread.name)
                busy = False
            if not busy:
                self.wake.wait(self._poll_s)
                self.wake.clear()


class EmbeddedWorker:
    """Planner threads and (unless ``train=False``) a trainer thread; installs itself as dispatcher."""

    def __init__(self, poll_s: float = 1.0, train: bool = True) -> None:
        self._stop = threading.Event()
        self._last_reap = 0.0
        self.loops = {
            # Proposals are what asks wait for: serving priority (workers.priority).
            "propose": _Loop(
                "mixlab-planner", lambda: _plan_one(PlanJob.PROPOSE), poll_s, self._stop, background=False
            ),
            "refit": _Loop(
                "mixlab-refit", lambda: _plan_one(PlanJob.REFIT), poll_s, self._stop, background=True
            ),
        }
        if train:
            self.loops["train"] = _Loop(
                "mixlab-trainer", self._train_one, poll_s, self._stop, background=True
            )

    def start(self) -> EmbeddedWorker:
        set_dispatcher(InProcessDispatcher(self))
        for loop in self.loops.values():
            loop.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        set_dispatcher(Polling())  # nobody is left to wake: work waits in the database
        self._stop.set()
        for loop in self.loops.values():
            loop.wake.set()
        for loop in self.loops.values():
            loop.thread.join(timeout)

    def wake(self, *names: str) -> None:
        for name in names:
            if name in self.loops:
                self.loops[name].wake.set()

    def _train_one(self) -> bool:
        """Reap when due, then prepare one experiment or train one run; False when idle."""
        if time.monotonic() - self._last_reap > get_settings().reap_every_s:
            self._last_reap = time.monotonic()
            execution.reap()
        with session_scope() as session:
            preparing = session.scalar(
                select(Experiment.id)
                .where(Experiment.status == ExperimentStatus.PREPARING, Experiment.heartbeat_at.is_(None))
                .order_by(Experiment.id)
                .limit(1)
            )
            run_id = None if preparing else runs.next_queued(session=session)
        if preparing:
            execution.prepare_experiment(preparing)
            return True
        if run_id is not None:
            execution.execute_run(run_id)
            return True
        return False


def _plan_one(job: PlanJob) -> bool:
    with session_scope() as session:
        due = planning.due_jobs(session, job, limit=1)
    if not due:
        return False
    plan(due[0][0], job)
    return True


class InProcessDispatcher(Dispatcher):
    """Wakes the embedded worker's threads; the work itself is found in the database."""

    def __init__(self, worker: EmbeddedWorker) -> None:
        self.worker = worker

    def plan(self, experiment_id: int) -> None:
        self.worker.wake("propose", "refit")

    def runs(self, run_ids: list[int]) -> None:
        if run_ids:
            self.worker.wake("train")

    def prepare(self, experiment_id: int) -> None:
        self.worker.wake("train")
