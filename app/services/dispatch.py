"""Handing work off: services write rows, commit, then nudge whoever executes the work.

The rows are the truth; a nudge only saves waiting for the next poll. So the default dispatcher does
nothing (the embedded worker and the reaper poll the database), and sending the same work twice is
harmless: a run is claimed, and a planner job leased, with a conditional UPDATE. Implementations live in
``workers/`` (Celery, in-process); ``app.main`` and the CLI install one, so ``app.services`` never
imports ``workers``.
"""

from __future__ import annotations

from typing import Protocol


class Dispatcher(Protocol):
    def plan(self, experiment_id: int) -> None:
        """A planning pass is requested for the experiment (its jobs rows say which)."""

    def runs(self, run_ids: list[int]) -> None:
        """These worker runs are queued."""

    def prepare(self, experiment_id: int) -> None:
        """The experiment waits for its data to be prepared."""


class Polling:
    """No nudge: pollers find the work in the database."""

    def plan(self, experiment_id: int) -> None:
        pass

    def runs(self, run_ids: list[int]) -> None:
        pass

    def prepare(self, experiment_id: int) -> None:
        pass


_current: Dispatcher = Polling()


def set_dispatcher(dispatcher: Dispatcher) -> None:
    global _current
    _current = dispatcher


def dispatcher() -> Dispatcher:
    return _current
