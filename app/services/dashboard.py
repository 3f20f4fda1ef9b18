"""What the dashboard draws, read from stored rows so the pages hold no logic: every plot is one JSON
field. Nothing here fits a model: the fit plot comes from the planner's latest refit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from app.models import Experiment, OnlineSession, Recommendation, Run, utcnow
from app.schemas import ExperimentOut
from app.schemas.dashboard import (
    Dashboard,
    ExperimentSummary,
    FidelitySeries,
    FitQuality,
    History,
    LossHeatmap,
    MixtureBars,
    OnlineTrajectory,
    RunDetail,
    RunRow,
    RunsTable,
    Trajectory,
    WeightsByRun,
)
from app.services import experiments as experiment_service
from app.services.fit_plot import MAX_RUNS
from app.services.online import list_sessions
from app.services.recommendations import latest_recommendation
from app.services.runs import get_run, run_out
from app.status import ExperimentStatus, RunOrigin, RunStatus

LIVE_STATUSES = (ExperimentStatus.PREPARING, ExperimentStatus.RUNNING)


def summary(session: Session, experiment: Experiment) -> ExperimentSummary:
    return _summary(experiment_service.to_out(session=session, experiments=[experiment])[0])


def _summary(out: ExperimentOut) -> ExperimentSummary:
    return ExperimentSummary(
        runs_done=out.run_counts.get(RunStatus.SUCCEEDED, 0),
        runs_total=sum(out.run_counts.values()),
        live=out.status in LIVE_STATUSES,
        **out.model_dump(
            include={
                "id",
                "name",
                "status",
                "strategy",
                "executor",
                "run_counts",
                "spent",
                "budget",
                "best_loss",
                "error",
                "created_at",
            }
        ),
    )


def experiment_summaries(*, session: Session, project_id: int, limit: int = 200) -> list[ExperimentSummary]:
    rows = experiment_service.list_experiments(
        session=session, project_id=project_id, limit=limit, after=None
    )
    return [_summary(o) for o in experiment_service.to_out(session=session, experiments=rows)]


def _succeeded(session: Session, experiment: Experiment) -> tuple[int, Sequence[Row[Any]]]:
    """(how many succeeded runs there are, the latest ``MAX_RUNS`` of them in creation order)."""
    where = (
        Run.experiment_id == experiment.id,
        Run.status == RunStatus.SUCCEEDED,
        Run.target_loss.is_not(None),
    )
    total = session.scalar(select(func.count()).select_from(Run).where(*where)) or 0
    rows = session.execute(
        select(Run.id, Run.weights, Run.fidelity, Run.losses, Run.target_loss)
        .where(*where)
        .order_by(Run.id.desc())
        .limit(MAX_RUNS)
    ).all()
    return total, rows[::-1]


def dashboard(*, session: Session, experiment: Experiment) -> Dashboard:
    names = experiment.domain_names
    fidelities = [f.name for f in experiment.fidelities]
    target_fid = fidelities[-1]
    total, rows = _succeeded(session, experiment)
    first = total - len(rows) + 1
    at_target = [r for r in rows if r.fidelity == target_fid]
    rec = latest_recommendation(session=session, experiment=experiment)
    return Dashboard(
        experiment=summary(session, experiment),
        domains=names,
        target=experiment.target,
        runs_used=len(rows),
        history=_history(rows, fidelities, first),
        mixture=_mixture(experiment, rec),
        fit=_stored_fit(rec, target_fid),
        weights=WeightsByRun(
            fidelity=target_fid,
            run_ids=[r.id for r in at_target],
            columns=[[float(r.weights[i]) for r in at_target] for i in range(len(names))],
            target_loss=[float(r.target_loss) for r in at_target],
        ),
        heatmap=LossHeatmap(
            run_ids=[r.id for r in rows],
            labels=[f"#{r.id} · {r.fidelity}" for r in rows],
            losses=[[_float((r.losses or {}).get(d)) for d in names] for r in rows],
        ),
        online=[_online(s, len(names)) for s in list_sessions(session=session, experiment=experiment)],
    )


def _history(rows: Sequence[Row[Any]], fidelities: list[str], first: int) -> History:
    series = []
    for fid in fidelities:
        picked = [(first + i, r) for i, r in enumerate(rows) if r.fidelity == fid]
        if picked:
            series.append(
                FidelitySeries(
                    fidelity=fid,
                    order=[o for o, _ in picked],
                    run_ids=[r.id for _, r in picked],
                    target_loss=[float(r.target_loss) for _, r in picked],
                )
            )
    best_order: list[int] = []
    best_loss: list[float] = []
    if series and series[-1].fidelity == fidelities[-1]:
        best_order = series[-1].order
        best_loss = np.minimum.accumulate(series[-1].target_loss).tolist()
    return History(target_fidelity=fidelities[-1], series=series, best_order=best_order, best_loss=best_loss)


def _stored_fit(rec: Recommendation | None, fidelity: str) -> FitQuality:
    """The fit plot the planner stored with the latest recommendation (requests never fit)."""
    if rec is None or not rec.fit:
        return FitQuality(fidelity=fidelity, note="the fit plot appears with the next recommendation")
    return FitQuality.model_validate(rec.fit)


def _mixture(experiment: Experiment, rec: Recommendation | None) -> MixtureBars | None:
    if rec is None:
        return None
    domains = sorted(experiment.domains, key=lambda d: d.position)
    tokens = [d.tokens for d in domains]
    natural = None
    if all(tokens):
        total = float(sum(t for t in tokens if t))
        natural = [float(t or 0) / total for t in tokens]
    spearman = rec.diagnostics.get("cv_spearman")
    return MixtureBars(
        recommendation_id=rec.id,
        strategy=rec.strategy,
        final=rec.final,
        n_runs=rec.n_runs,
        recommended=[float(w) for w in rec.weights],
        natural=natural,
        uniform=[1.0 / len(domains)] * len(domains),
        predicted_loss=rec.predicted_loss,
        std=rec.std,
        cv_spearman=float(spearman) if isinstance(spearman, int | float) else None,
    )


def _online(row: OnlineSession, k: int) -> OnlineTrajectory:
    points = row.trajectory
    return OnlineTrajectory(
        id=row.id,
        strategy=row.strategy,
        steps=[int(p["step"]) for p in points],
        columns=[[float(p["weights"][i]) for p in points] for i in range(k)],
    )


def _float(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) else None


def _duration(run: Run) -> float | None:
    """Seconds between claim and finish (so far, while running); None for imports, which we never saw run."""
    if run.started_at is None or run.origin == RunOrigin.IMPORT:
        return None
    end = run.finished_at or (utcnow() if run.status == RunStatus.RUNNING else None)
    return (end - run.started_at).total_seconds() if end else None


def runs_table(*, session: Session, experiment: Experiment, limit: int) -> RunsTable:
    """The latest runs, newest first, for the live table (polled while the experiment runs)."""
    out = summary(session, experiment)
    rows = session.scalars(
        select(Run).where(Run.experiment_id == experiment.id).order_by(Run.id.desc()).limit(limit)
    )
    return RunsTable(
        experiment=out,
        total=out.runs_total,
        rows=[
            RunRow(
                id=r.id,
                status=r.status,
                fidelity=r.fidelity,
                origin=r.origin,
                attempts=r.attempts,
                target_loss=r.target_loss,
                duration_s=_duration(r),
                error=r.error,
                created_at=r.created_at,
            )
            for r in rows
        ],
    )


def run_detail(*, session: Session, experiment: Experiment, run_id: int) -> RunDetail:
    run = get_run(session=session, experiment=experiment, run_id=run_id)
    names = experiment.domain_names
    points = run.extra.get("trajectory") or []  # [(step, {domain: weight}), ...] from the trainer
    trajectory = None
    if points:
        trajectory = Trajectory(
            steps=[int(step) for step, _ in points],
            columns=[[float(w.get(d, 0.0)) for _, w in points] for d in names],
        )
    return RunDetail(
        experiment=summary(session, experiment),
        run=run_out(experiment, run),
        duration_s=_duration(run),
        domains=names,
        trajectory=trajectory,
    )
