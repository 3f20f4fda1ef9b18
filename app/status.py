"""Every status and kind the service stores, in one place. ``StrEnum`` members compare equal to their
strings, so rows, JSON and query parameters carry plain text."""

from __future__ import annotations

from enum import StrEnum


class ExperimentStatus(StrEnum):
    """draft → preparing → running → done | failed | cancelled."""

    DRAFT = "draft"
    PREPARING = "preparing"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunStatus(StrEnum):
    """queued → running → succeeded | failed | cancelled; a lost run goes back to queued."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunOrigin(StrEnum):
    WORKER = "worker"  # trained by mixlab's workers
    EXTERNAL = "external"  # leased to a user's pipeline by ask/tell
    IMPORT = "import"  # trained elsewhere, imported as a finished result


class Executor(StrEnum):
    WORKER = "worker"
    EXTERNAL = "external"


class ScaleStatus(StrEnum):
    """A scale prediction: running (ladder runs training; ``result`` fills in as rungs finish) → done |
    failed (a ladder too short to fit once its runs ended) | cancelled."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PlanJob(StrEnum):
    """The two planner jobs of an experiment: fast proposals apart from slow refits, so asks never wait
    behind a recommendation fit."""

    PROPOSE = "propose"
    REFIT = "refit"


FINISHED = frozenset({ExperimentStatus.DONE, ExperimentStatus.FAILED, ExperimentStatus.CANCELLED})
LIVE_RUNS = (RunStatus.QUEUED, RunStatus.RUNNING)
