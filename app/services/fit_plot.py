"""The dashboard's fit-quality plot: out-of-fold predictions of the target loss from the weights.

Computed by the planner's refit (never in a request) and stored on the recommendation row it belongs to.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from app.models import Experiment, Run, search_run
from app.schemas.dashboard import FitQuality
from app.status import RunStatus
from strategies.regression import AUTO_GP_ROWS, MODELS, fit_with_cv

log = logging.getLogger(__name__)

MAX_RUNS = 2000  # the dashboard plots the latest runs only: enough to see everything, cheap to fit
MIN_FIT_RUNS = 5  # fewer succeeded runs at the target fidelity: no cross-validated fit
CV_FOLDS = 5
# Fewer, larger boosting steps than the strategies use: ~8x faster, and a diagnostic plot needs the
# shape of the fit, not its last decimal.
QUICK_LIGHTGBM = {"n_estimators": 500, "learning_rate": 0.05}
QUICK_GP = {"max_rows": AUTO_GP_ROWS}  # the GP as RegMix's "auto" compares it
QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "lightgbm": QUICK_LIGHTGBM,
    "gp": QUICK_GP,
    "ensemble": {"lightgbm": QUICK_LIGHTGBM, "gp": QUICK_GP},
}


def target_rows(session: Session, experiment: Experiment) -> list[Any]:
    """(id, weights, target_loss) of the target-fidelity runs among the latest ``MAX_RUNS`` succeeded
    ones (the runs the other plots draw), oldest first."""
    rows = session.execute(
        select(Run.id, Run.weights, Run.target_loss, Run.fidelity)
        .where(
            Run.experiment_id == experiment.id,
            Run.status == RunStatus.SUCCEEDED,
            Run.target_loss.is_not(None),
            search_run(),
        )
        .order_by(Run.id.desc())
        .limit(MAX_RUNS)
    ).all()
    return [r for r in rows[::-1] if r.fidelity == experiment.target_fidelity.name]


def fit_quality(rows: Sequence[Row[Any]], fidelity: str, model: str | None = None) -> FitQuality:
    """Cross-validate ``model`` (the strategy's own regressor if it names one) on ``rows``."""
    if len(rows) < MIN_FIT_RUNS:
        return FitQuality(
            fidelity=fidelity,
            note=f"needs {MIN_FIT_RUNS} succeeded runs at fidelity {fidelity!r}; "
            f"there are {len(rows)} so far",
        )
    X = np.asarray([r.weights for r in rows], dtype=float)
    y = np.asarray([r.target_loss for r in rows], dtype=float)
    if model not in MODELS:
        model = "lightgbm" if len(rows) >= 20 else "linear"
    try:
        cv = fit_with_cv(X, y, model, CV_FOLDS, seed=0, params=QUICK_PARAMS.get(model, {})).report
    except Exception as e:  # a diagnostic plot must not stop the planner
        log.exception("fit-quality plot failed")
        return FitQuality(fidelity=fidelity, note=f"the {model} fit failed: {e}")
    return FitQuality(
        fidelity=fidelity,
        model=model,
        folds=cv.folds,
        run_ids=[r.id for r in rows],
        actual=y.tolist(),
        predicted=cv.oof.tolist(),
        spearman=cv.spearman,
        mae=cv.mae,
    )
