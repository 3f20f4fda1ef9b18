"""What the dashboard draws, computed here so the pages hold no logic: every plot is one JSON field.

The fit-quality plot refits a quick regressor on every call (out-of-fold predictions, nothing cached):
it takes well under a second for the ``MAX_RUNS`` latest runs, and it can never be stale.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.models import Experiment, OnlineSession, Run, utcnow
from app.schemas import ExperimentOut, RunOut
from app.services import experiments as experiment_service
from app.services.loop import domain_names
from app.services.online import list_sessions
from app.services.recommendations import latest_recommendation
from app.services.runs import get_run, run_out
from strategies.regression import MODELS, fit_regressor, kfold_indices, score

log = logging.getLogger(__name__)

MAX_RUNS = 2000  # the plots use the latest runs only: enough to see everything, cheap to refit
MIN_FIT_RUNS = 5  # fewer succeeded runs at the target fidelity: no cross-validated fit
CV_FOLDS = 5
# Fewer, larger boosting steps than the strategies use: ~8x faster, and a diagnostic plot needs the
# shape of the fit, not its last decimal.
QUICK_LIGHTGBM = {"n_estimators": 500, "learning_rate": 0.05}
LIVE_STATUSES = ("preparing", "running")
ExportFormat = Literal["json", "yaml", "hf"]


class ExperimentSummary(BaseModel):
    id: int
    name: str
    status: str
    strategy: str
    executor: str
    runs_done: int
    runs_total: int
    run_counts: dict[str, int]
    spent: float
    budget: float
    best_loss: float | None
    error: str | None
    created_at: datetime
    live: bool  # preparing or running: the page keeps polling


class FidelitySeries(BaseModel):
    fidelity: str
    order: list[int]  # 1-based position among all succeeded runs (creation order)
    run_ids: list[int]
    target_loss: list[float]


class History(BaseModel):
    target_fidelity: str
    series: list[FidelitySeries]  # cheapest fidelity first
    best_order: list[int]  # best-so-far at the target fidelity (losses across fidelities don't compare)
    best_loss: list[float]


class MixtureBars(BaseModel):
    recommendation_id: int
    strategy: str
    final: bool
    n_runs: int
    recommended: list[float]
    natural: list[float] | None  # token-proportional; None until every domain's tokens are known
    uniform: list[float]
    predicted_loss: float | None
    std: float | None
    cv_spearman: float | None


class FitQuality(BaseModel):
    fidelity: str
    model: str | None = None
    folds: int = 0
    run_ids: list[int] = []
    actual: list[float] = []
    predicted: list[float] = []  # out-of-fold
    spearman: float | None = None
    mae: float | None = None
    note: str | None = None  # why there is no fit yet


class WeightsByRun(BaseModel):
    fidelity: str
    run_ids: list[int]
    columns: list[list[float]]  # one column per domain, each aligned with run_ids
    target_loss: list[float]


class LossHeatmap(BaseModel):
    run_ids: list[int]
    labels: list[str]
    losses: list[list[float | None]]  # runs × domains


class Trajectory(BaseModel):
    steps: list[int]
    columns: list[list[float]]  # one weight column per domain, aligned with steps


class OnlineTrajectory(Trajectory):
    id: int
    strategy: str


class Dashboard(BaseModel):
    experiment: ExperimentSummary
    domains: list[str]
    target: dict[str, float]
    runs_used: int  # succeeded runs behind the plots (at most MAX_RUNS)
    history: History
    mixture: MixtureBars | None
    fit: FitQuality
    weights: WeightsByRun
    heatmap: LossHeatmap
    online: list[OnlineTrajectory]


class RunRow(BaseModel):
    id: int
    status: str
    fidelity: str
    origin: str
    attempts: int
    target_loss: float | None
    duration_s: float | None
    error: str | None
    created_at: datetime


class RunsTable(BaseModel):
    experiment: ExperimentSummary
    total: int
    rows: list[RunRow]  # newest first


class RunDetail(BaseModel):
    experiment: ExperimentSummary
    run: RunOut
    duration_s: float | None
    domains: list[str]
    trajectory: Trajectory | None  # the sampler's weights over training steps, if the trainer recorded them


def summary(session: Session, experiment: Experiment) -> ExperimentSummary:
    return _summary(experiment_service.to_out(session=session, experiments=[experiment])[0])


def _summary(out: ExperimentOut) -> ExperimentSummary:
    return ExperimentSummary(
        runs_done=out.run_counts.get("succeeded", 0),
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


def _succeeded(session: Session, experiment: Experiment) -> tuple[int, list[Any]]:
    """(how many succeeded runs there are, the latest ``MAX_RUNS`` of them in creation order)."""
    where = (Run.experiment_id == experiment.id, Run.status == "succeeded", Run.target_loss.is_not(None))
    total = session.scalar(select(func.count()).select_from(Run).where(*where)) or 0
    rows = session.execute(
        select(Run.id, Run.weights, Run.fidelity, Run.losses, Run.target_loss)
        .where(*where)
        .order_by(Run.id.desc())
        .limit(MAX_RUNS)
    ).all()
    return total, rows[::-1]


def dashboard(*, session: Session, experiment: Experiment) -> Dashboard:
    names = domain_names(experiment)
    fidelities = [f["name"] for f in experiment.fidelities]
    target_fid = fidelities[-1]
    total, rows = _succeeded(session, experiment)
    first = total - len(rows) + 1
    at_target = [r for r in rows if r.fidelity == target_fid]
    return Dashboard(
        experiment=summary(session, experiment),
        domains=names,
        target=experiment.target,
        runs_used=len(rows),
        history=_history(rows, fidelities, first),
        mixture=_mixture(session, experiment),
        fit=_fit(experiment, at_target, target_fid),
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


def _history(rows: list[Any], fidelities: list[str], first: int) -> History:
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


def _mixture(session: Session, experiment: Experiment) -> MixtureBars | None:
    rec = latest_recommendation(session=session, experiment=experiment)
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


def _fit(experiment: Experiment, rows: list[Any], fidelity: str) -> FitQuality:
    """Out-of-fold predictions of the target loss from the weights, at the target fidelity."""
    if len(rows) < MIN_FIT_RUNS:
        return FitQuality(
            fidelity=fidelity,
            note=f"needs {MIN_FIT_RUNS} succeeded runs at fidelity "
            f"{fidelity!r}; there are {len(rows)} so far",
        )
    X = np.asarray([r.weights for r in rows], dtype=float)
    y = np.asarray([r.target_loss for r in rows], dtype=float)
    model = experiment.strategy_params.get("model")  # the strategy's own regressor, if it names one
    if model not in MODELS:
        model = "lightgbm" if len(rows) >= 20 else "linear"
    params = QUICK_LIGHTGBM if model == "lightgbm" else {}
    oof = np.empty(len(y))
    splits = kfold_indices(len(y), CV_FOLDS, seed=0)
    try:
        for i, (train, test) in enumerate(splits):
            oof[test] = fit_regressor(X[train], y[train], model, seed=i, params=params).predict(X[test])
    except Exception as e:  # a diagnostic plot must not take the whole dashboard down
        log.exception("dashboard fit of experiment %s failed", experiment.id)
        return FitQuality(fidelity=fidelity, note=f"the {model} fit failed: {e}")
    rho, mae = score(y, oof)
    return FitQuality(
        fidelity=fidelity,
        model=model,
        folds=len(splits),
        run_ids=[r.id for r in rows],
        actual=y.tolist(),
        predicted=oof.tolist(),
        spearman=rho,
        mae=mae,
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
    if run.started_at is None or run.origin == "import":
        return None
    end = run.finished_at or (utcnow() if run.status == "running" else None)
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
    names = domain_names(experiment)
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


def export_mixture(*, session: Session, experiment: Experiment, fmt: ExportFormat) -> tuple[str, str, str]:
    """The latest recommendation as (body, media type, file name), ready to download."""
    rec = latest_recommendation(session=session, experiment=experiment)
    if rec is None:
        raise NotFound(
            "no recommendation yet: it appears after the first batch of runs", code="no_recommendation"
        )
    weights = dict(zip(domain_names(experiment), map(float, rec.weights), strict=True))
    doc = {
        "experiment": experiment.id,
        "name": experiment.name,
        "recommendation": rec.id,
        "strategy": rec.strategy,
        "final": rec.final,
        "n_runs": rec.n_runs,
        "predicted_loss": rec.predicted_loss,
        "std": rec.std,
        "weights": weights,
    }
    stem = f"mixlab-experiment-{experiment.id}-mixture"
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n", "application/json", f"{stem}.json"
    if fmt == "yaml":
        return yaml.safe_dump(doc, sort_keys=False), "application/yaml", f"{stem}.yaml"
    return hf_snippet(doc), "text/x-python", f"{stem}.py"


def hf_snippet(doc: dict[str, Any]) -> str:
    """A ready-to-paste ``datasets.interleave_datasets`` call sampling the domains at the mixture."""
    unused = [name for name, w in doc["weights"].items() if w <= 0]
    loss = doc["predicted_loss"]
    expected = "" if loss is None else f"; predicted target loss {loss:.4f}"
    if loss is not None and doc["std"] is not None:
        expected += f" ± {doc['std']:.4f}"
    lines = [
        f"# Mixture recommended by mixlab for experiment {doc['experiment']} ({doc['name']!r}),",
        f"# recommendation {doc['recommendation']} by {doc['strategy']} from {doc['n_runs']} runs{expected}.",
        "from datasets import interleave_datasets, load_dataset",
        "",
        "weights = {",
        *(f"    {name!r}: {w!r}," for name, w in doc["weights"].items() if w > 0),
        "}",
        *([f"# Left out at weight 0: {', '.join(unused)}."] if unused else []),
        "# Point each domain at its data (here: one JSONL file per domain with a 'text' field).",
        "domains = {",
        "    name: load_dataset('json', data_files=f'{name}.jsonl', split='train', streaming=True)",
        "    for name in weights",
        "}",
        "mixed = interleave_datasets(",
        "    [domains[name] for name in weights],",
        "    probabilities=[weights[name] for name in weights],",
        "    seed=0,",
        ")",
    ]
    return "\n".join(lines) + "\n"
