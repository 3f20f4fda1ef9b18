"""Where an experiment's files live under ``MIXLAB_STORAGE_DIR``, and removing them with the experiment.

Corpora are content-addressed (``corpora/<sha256>.jsonl``) and may be shared by experiments (a clone
shares all of its original's), so a corpus file goes only when no remaining domain or clustering upload
names it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.models import Domain, Experiment


def prepared_dir(experiment_id: int) -> Path:
    return get_settings().storage_dir / "prepared" / f"experiment-{experiment_id}"


def checkpoint_path(run_id: int) -> Path:
    return get_settings().storage_dir / "checkpoints" / f"run-{run_id}.pt"


def files_of(session: Session, experiment: Experiment, run_ids: list[int]) -> list[Path]:
    """The files to remove once ``experiment`` is deleted (call before deleting its rows)."""
    corpora = {d.path for d in experiment.domains if d.path}
    if experiment.cluster and experiment.cluster.get("path"):
        corpora.add(experiment.cluster["path"])
    others = select(Domain.path).where(Domain.experiment_id != experiment.id, Domain.path.in_(corpora))
    shared = set(session.scalars(others))
    clustered = session.scalars(select(Experiment.cluster).where(Experiment.id != experiment.id)).all()
    shared |= {c["path"] for c in clustered if c and c.get("path") in corpora}
    return [
        prepared_dir(experiment.id),
        *(checkpoint_path(r) for r in run_ids),
        *(Path(p) for p in sorted(corpora - shared)),
    ]


def remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
