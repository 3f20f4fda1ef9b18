"""The experiment loop: history → strategy.propose → queued runs; budget spent → final recommendation.

``advance`` is called after every change that could free a slot (start, a finished or failed run, a tell).
It locks the experiment row first, so concurrent workers never propose the same slot twice.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.models import Experiment, Recommendation, Run, utcnow
from strategies import Candidate, Fidelity, Observation, SearchSpace, StrategyError, get_strategy
from strategies import Recommendation as StrategyRecommendation

log = logging.getLogger(__name__)

LIVE = ("queued", "running")
MAX_FAILURE_RATIO = 1.0  # more failed runs than budgeted runs (+3) fails the experiment


def fidelity_info(experiment: Experiment, name: str) -> dict[str, Any]:
    for f in experiment.fidelities:
        if f["name"] == name:
            return f
    raise StrategyError(f"unknown fidelity {name!r}; known: {[f['name'] for f in experiment.fidelities]}")


def run_units(experiment: Experiment, fidelity: str) -> float:
    """A run's share of the budget: its cost relative to one target-fidelity run."""
    return float(fidelity_info(experiment, fidelity)["cost"]) / float(experiment.fidelities[-1]["cost"])


def build_space(experiment: Experiment) -> SearchSpace:
    domains = sorted(experiment.domains, key=lambda d: d.position)
    missing = [d.name for d in domains if not d.tokens]
    if missing:
        raise StrategyError(f"token counts are not known yet for {missing}")
    return SearchSpace(
        domains=tuple(d.name for d in domains),
        tokens=tuple(int(d.tokens or 0) for d in domains),
        target=dict(experiment.target),
        fidelities=tuple(
            Fidelity(f["name"], int(f["tokens"]), float(f["cost"]), {"preset": f.get("preset")})
            for f in experiment.fidelities
        ),
        lower=tuple(d.lower for d in domains),
        upper=tuple(d.upper for d in domains),
        max_epochs=experiment.max_epochs,
        target_tokens=experiment.target_tokens,
        budget=experiment.budget,
    )


def history(session: Session, experiment: Experiment) -> list[Observation]:
    """Succeeded runs as observations, in one query (fast at 10,000+ runs)."""
    rows = session.execute(
        select(Run.weights, Run.fidelity, Run.losses, Run.target_loss, Run.cost)
        .where(Run.experiment_id == experiment.id, Run.status == "succeeded")
        .order_by(Run.id)
    )
    return [
        Observation(tuple(w), fid, losses or {}, float(tl), float(cost or 0.0))
        for w, fid, losses, tl, cost in rows
        if tl is not None and math.isfinite(tl)
    ]


def _lock(session: Session, experiment_id: int) -> Experiment | None:
    """Take the experiment's row lock (a no-op UPDATE locks on Postgres and SQLite alike)."""
    session.execute(update(Experiment).where(Experiment.id == experiment_id).values(id=Experiment.id))
    return session.get(Experiment, experiment_id, populate_existing=True)


def advance(session: Session, experiment_id: int) -> list[int]:
    """Top the experiment up to ``parallelism`` live runs within budget; finish it when all is spent.

    Returns the ids of new worker runs, for the caller to dispatch after commit.
    """
    experiment = _lock(session, experiment_id)
    if experiment is None or experiment.status != "running":
        return []
    counts = dict(
        session.execute(
            select(Run.status, func.count()).where(Run.experiment_id == experiment.id).group_by(Run.status)
        ).all()
    )
    live = sum(counts.get(s, 0) for s in LIVE)
    if counts.get("failed", 0) > MAX_FAILURE_RATIO * experiment.budget + 3:
        _finish(session, experiment, "failed", error=f"{counts['failed']} runs failed; see their errors")
        return []
    from app.services.experiments import spent_budgets

    remaining = experiment.budget - spent_budgets(session=session, experiments=[experiment])[experiment.id]
    space = build_space(experiment)
    hist = history(session, experiment)
    _maybe_refit(session, experiment, space, hist)
    slots = experiment.parallelism - live
    new: list[Run] = []
    if slots > 0 and remaining > 1e-9:
        n_created = sum(counts.values())
        strategy = get_strategy(experiment.strategy, **experiment.strategy_params)
        pending = [
            Candidate(tuple(w), fid)
            for w, fid in session.execute(
                select(Run.weights, Run.fidelity).where(
                    Run.experiment_id == experiment.id, Run.status.in_(LIVE)
                )
            )
        ]
        candidates = strategy.propose(
            space, hist, slots, seed=experiment.seed * 1_000_003 + n_created, pending=pending
        )
        for cand in candidates:
            units = run_units(experiment, cand.fidelity)
            if units > remaining + 1e-9:
                continue
            remaining -= units
            new.append(
                Run(
                    experiment_id=experiment.id,
                    weights=[float(w) for w in cand.weights],
                    fidelity=cand.fidelity,
                    seed=experiment.seed + n_created + len(new),
                    origin=experiment.executor,
                )
            )
        session.add_all(new)
        session.flush()
    if not new and live == 0:
        _finish(session, experiment, "done", space=space, hist=hist)
    return [r.id for r in new] if experiment.executor == "worker" else []


def _maybe_refit(
    session: Session, experiment: Experiment, space: SearchSpace, hist: list[Observation]
) -> None:
    """Refit after every ``parallelism`` new results, so the dashboard shows progress."""
    last = session.scalar(
        select(Recommendation.n_runs)
        .where(Recommendation.experiment_id == experiment.id)
        .order_by(Recommendation.id.desc())
        .limit(1)
    )
    if hist and (last is None or len(hist) - last >= experiment.parallelism):
        try:
            refit(session, experiment, space, hist, final=False)
        except Exception as e:  # a failed interim fit must not stop the search
            log.warning("interim refit of experiment %s failed: %s", experiment.id, e)


def refit(
    session: Session, experiment: Experiment, space: SearchSpace, hist: list[Observation], final: bool
) -> Recommendation:
    strategy = get_strategy(experiment.strategy, **experiment.strategy_params)
    rec: StrategyRecommendation = strategy.recommend(space, hist)
    row = Recommendation(
        experiment_id=experiment.id,
        strategy=experiment.strategy,
        weights=[float(w) for w in rec.weights],
        predicted_loss=_finite(rec.predicted_loss),
        std=_finite(rec.std),
        diagnostics={k: _jsonable(v) for k, v in dict(rec.diagnostics).items()},
        alternatives=[
            {"weights": list(map(float, w)), "predicted_loss": _finite(p)} for w, p in rec.alternatives
        ],
        n_runs=len(hist),
        final=final,
    )
    session.add(row)
    session.flush()
    return row


def _finish(
    session: Session,
    experiment: Experiment,
    status: str,
    *,
    space: SearchSpace | None = None,
    hist: list[Observation] | None = None,
    error: str | None = None,
) -> None:
    if status == "done" and space is not None and hist is not None:
        try:
            refit(session, experiment, space, hist, final=True)
        except Exception as e:
            log.exception("final recommendation of experiment %s failed", experiment.id)
            status, error = "failed", f"final recommendation failed: {e}"
    experiment.status = status
    experiment.error = error
    experiment.finished_at = utcnow()
    session.flush()


def _finite(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


def domain_names(experiment: Experiment) -> list[str]:
    return [d.name for d in sorted(experiment.domains, key=lambda d: d.position)]
