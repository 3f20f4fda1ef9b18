"""The embedded worker: a thread in the API (or demo) process that runs the same task bodies as Celery.

It finds work in the database itself (so it picks up where a crashed process left off) and sleeps until
``dispatch`` wakes it or ``poll_s`` passes.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select

from app.core.config import get_settings
from app.core.db import session_scope
from app.models import Experiment
from app.services import execution, runs
from app.services.dispatch import wake_embedded

log = logging.getLogger(__name__)


class EmbeddedWorker:
    def __init__(self, poll_s: float = 1.0) -> None:
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reap = 0.0

    def start(self) -> EmbeddedWorker:
        self._thread = threading.Thread(target=self._loop, name="mixlab-embedded-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        wake_embedded.set()
        if self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("embedded worker step failed")
                busy = False
            if not busy:
                wake_embedded.wait(self.poll_s)
                wake_embedded.clear()

    def run_once(self) -> bool:
        """Do one unit of work (reap, prepare, or train); False when there was nothing to do."""
        if time.monotonic() - self._last_reap > get_settings().reap_every_s:
            self._last_reap = time.monotonic()
            execution.reap()
        with session_scope() as session:
            preparing = session.scalar(
                select(Experiment.id)
                .where(Experiment.status == "preparing", Experiment.heartbeat_at.is_(None))
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
