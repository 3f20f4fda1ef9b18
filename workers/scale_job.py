"""Fit a scale prediction's law as its ladder runs finish (worker side, never inside a request).

Called after every ladder run's result is committed (and by the reaper for a ladder whose last run
ended with its worker): reads the finished rungs, fits ``strategies.scaling_law`` outside any
transaction, and stores the law and the predicted loss at the target scale. Once no ladder run is live
the prediction is done (or failed, if the ladder that finished cannot support a law).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from app.core.db import session_scope
from app.models import Run, ScalePrediction, utcnow
from app.services.scale_prediction import parse_ladder_fidelity
from app.status import LIVE_RUNS, RunStatus, ScaleStatus
from strategies.scaling_law import LadderPoint, ScalingLawError, fit_scaling_law

log = logging.getLogger(__name__)


def refresh(prediction_id: int) -> None:
    with session_scope() as session:
        row = session.get(ScalePrediction, prediction_id)
        if row is None or row.status != ScaleStatus.RUNNING:
            return
        rungs = {(r["preset"], r["tokens"]): r for r in row.rungs}
        target = (row.target_params, row.target_tokens)
        points, live = [], False
        for run_id, fidelity, extra, status, loss, cost in session.execute(
            select(Run.id, Run.fidelity, Run.extra, Run.status, Run.target_loss, Run.cost)
            .where(Run.ladder_id == prediction_id)
            .order_by(Run.id)
        ):
            live = live or status in LIVE_RUNS
            if status == RunStatus.SUCCEEDED and loss is not None:
                preset, tokens = parse_ladder_fidelity(fidelity)
                rung = rungs[(preset, tokens)]
                points.append(
                    {
                        "mixture": extra["mixture"],
                        "preset": preset,
                        "tokens": tokens,
                        "params": rung["params"],
                        "cost": float(cost or rung["cost"]),
                        "loss": float(loss),
                        "run_id": run_id,
                    }
                )
    result: dict[str, Any] = {"points": points}
    error = None
    try:
        fit = fit_scaling_law(
            [LadderPoint(p["mixture"], p["params"], p["tokens"], p["loss"]) for p in points],
            seed=prediction_id,
        )
        result["fit"] = fit.to_json()
        result["predictions"] = {label: vars(fit.predict(label, *target)) for label in fit.laws}
    except ScalingLawError as e:  # too few rungs so far; only an error once the ladder has ended
        error = f"the finished ladder runs cannot support a law: {e}"
    with session_scope() as session:
        row = session.get(ScalePrediction, prediction_id, with_for_update=True, populate_existing=True)
        if row is None or row.status != ScaleStatus.RUNNING:
            return  # finished, or cancelled, by someone else meanwhile
        if len(points) < len((row.result or {}).get("points", [])):
            return  # a later refresh already stored more rungs
        row.result = result
        if not live:
            row.status = ScaleStatus.FAILED if error else ScaleStatus.DONE
            row.error = error
            row.finished_at = utcnow()
    log.info(
        "scale prediction %s: %d ladder runs fitted%s", prediction_id, len(points), "" if live else ", done"
    )


def unfinished() -> list[int]:
    """Running predictions with no live ladder run left: their last refresh was lost with a worker."""
    with session_scope() as session:
        live = select(Run.ladder_id).where(Run.ladder_id.is_not(None), Run.status.in_(LIVE_RUNS))
        return list(
            session.scalars(
                select(ScalePrediction.id).where(
                    ScalePrediction.status == ScaleStatus.RUNNING, ScalePrediction.id.not_in(live)
                )
            )
        )
