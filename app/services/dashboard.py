"""What the dashboard draws, read from stored rows so the pages hold no logic: every plot is one JSON
field. Nothing here fits a model: the fit plot comes from the planner's latest refit."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session, undefer

from app.models import Experiment, OnlineSession, Recommendation, Run, search_run, utcnow
from app.schemas import ExperimentOut
from app.schemas.dashboard import (
    Curve,
    Dashboard,
    ExperimentSummary,
    FidelitySeries,
    FitQuality,
    History,
    LiveRun,
    LossHeatmap,
    MixtureBars,
    OnlineTrajectory,
    RunDetail,
    RunRow,
    RunsTable,
    ScalePlot,
    ScaleSeries,
    Trajectory,
    WeightsByRun,
)
from app.services import curves, scale_prediction
from app.services import experiments as experiment_service
from app.services import runs as run_service
from app.services.online import list_sessions
from app.services.recommendations import latest_recommendation
from app.services.runs import RunQuery, get_run, run_out
from app.status import LIVE_RUNS, ExperimentStatus, RunOrigin, RunStatus
from strategies.scaling_law import Law

LIVE_STATUSES = (ExperimentStatus.PREPARING, ExperimentStatus.RUNNING)
MAX_PLOT_RUNS = 2000  # runs a plot draws: more are sampled evenly (the page says so)
MAX_LIVE_CURVES = 16  # running runs whose learning curves the experiment page draws


@dataclass(frozen=True)
class Plotted:
    total: int  # succeeded runs
    order: list[int]  # each plotted run's 1-based position among them
    rows: list[Row[Any]]
    best: tuple[list[int], list[float]]  # the best-so-far line at the target fidelity


def summary(
    session: Session, experiment: Experiment, stats: dict[int, experiment_service.RunStats] | None = None
) -> ExperimentSummary:
    """The experiment's summary (``stats``: its ``run_stats``, if already read)."""
    return _summary(experiment_service.to_out(session=session, experiments=[experiment], stats=stats)[0])


def _summary(out: ExperimentOut) -> ExperimentSummary:
    return ExperimentSummary(
        runs_done=out.run_counts.get(RunStatus.SUCCEEDED, 0),
        runs_total=sum(out.run_counts.values()),
        # A done experiment is live again while a scale prediction's ladder trains.
        live=out.status in LIVE_STATUSES or any(out.run_counts.get(s, 0) for s in LIVE_RUNS),
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


def _plotted(session: Session, experiment: Experiment) -> Plotted:
    """The succeeded runs the plots draw: all of them, or ``MAX_PLOT_RUNS`` evenly spaced over the
    history (the best target-fidelity run always among them) when there are more."""
    where = (
        Run.experiment_id == experiment.id,
        Run.status == RunStatus.SUCCEEDED,
        Run.target_loss.is_not(None),
        search_run(),
    )
    index = session.execute(
        select(Run.id, Run.fidelity, Run.target_loss).where(*where).order_by(Run.id)
    ).all()
    target_fid = experiment.fidelities[-1].name
    at_target = [(i + 1, float(r.target_loss)) for i, r in enumerate(index) if r.fidelity == target_fid]
    picked: Sequence[int] = range(len(index))
    if len(index) > MAX_PLOT_RUNS:
        spaced = set(np.linspace(0, len(index) - 1, MAX_PLOT_RUNS - 1).round().astype(int).tolist())
        if at_target:
            spaced.add(min(at_target, key=lambda p: p[1])[0] - 1)
        picked = sorted(spaced)
    ids = [index[i].id for i in picked]
    rows: list[Row[Any]] = []
    for chunk in range(0, len(ids), 1000):  # bounded IN lists on every database
        rows += session.execute(
            select(Run.id, Run.weights, Run.fidelity, Run.losses, Run.target_loss).where(
                Run.id.in_(ids[chunk : chunk + 1000])
            )
        ).all()
    rows.sort(key=lambda r: r.id)
    return Plotted(total=len(index), order=[i + 1 for i in picked], rows=rows, best=_best_steps(at_target))


def _best_steps(at_target: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    """The best-so-far line over every target-fidelity run: its corners only (plus its end)."""
    order: list[int] = []
    best: list[float] = []
    for o, loss in at_target:
        if not best or loss < best[-1]:
            order.append(o)
            best.append(loss)
    if at_target and order[-1] != at_target[-1][0]:
        order.append(at_target[-1][0])
        best.append(best[-1])
    return order, best


# The recommendation is stored before its fit plot is drawn (workers/planner._refit).
FIT_DRAWING = "the planner is drawing the fit plot of this recommendation"


class _PlotCache:
    """Dashboards by version, per process: the plots change only when a run succeeds, the planner stores a
    recommendation or an online session updates, so a page polled by many viewers at a 10,000-run history
    reads a few counters per GET instead of thousands of rows (the summary is always read fresh)."""

    def __init__(self, size: int = 64) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], Dashboard] = OrderedDict()
        self._drawing: dict[tuple[Any, ...], threading.Lock] = {}

    def get_or_draw(
        self,
        key: tuple[Any, ...],
        draw: Callable[[], Dashboard],
        keep: Callable[[Dashboard], bool] = lambda _: True,
    ) -> Dashboard:
        """The cached plots, or ``draw()``'s, drawn once however many viewers ask at the same moment
        (a new recommendation makes every open page miss the cache together); kept for the next viewers
        only where ``keep(plots)``."""
        with self._lock:
            if (hit := self._hit(key)) is not None:
                return hit
            drawing = self._drawing.setdefault(key, threading.Lock())
        with drawing:
            with self._lock:
                if (hit := self._hit(key)) is not None:
                    return hit
            try:
                value = draw()
            except BaseException:
                with self._lock:
                    self._drawing.pop(key, None)
                raise
            with self._lock:  # cached and no longer drawing in one step: no gap for a second draw
                if keep(value):
                    self._items[key] = value
                    while len(self._items) > self._size:
                        self._items.popitem(last=False)
                self._drawing.pop(key, None)
        return value

    def _hit(self, key: tuple[Any, ...]) -> Dashboard | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None


_plots = _PlotCache()


def _version(
    session: Session, experiment: Experiment, rec: Recommendation | None, stats: experiment_service.RunStats
) -> tuple[Any, ...]:
    """Changes whenever a plot would: succeeded is a final status, so count and newest id identify the set."""
    n_sessions, session_change = session.execute(
        select(func.count(), func.max(OnlineSession.updated_at)).where(
            OnlineSession.experiment_id == experiment.id
        )
    ).one()
    where = (str(session.get_bind().engine.url), experiment.id, experiment.created_at)
    runs = (stats.counts.get(RunStatus.SUCCEEDED, 0), stats.newest_succeeded)
    return (*where, *runs, rec.id if rec else None, n_sessions, session_change, MAX_PLOT_RUNS)


def dashboard(*, session: Session, experiment: Experiment) -> Dashboard:
    rec = latest_recommendation(session=session, experiment=experiment)
    stats = experiment_service.run_stats(session=session, experiments=[experiment])
    current = summary(session, experiment, stats)
    key = _version(session, experiment, rec, stats[experiment.id])
    # A fit plot still being drawn is attached to the same recommendation row later: not kept.
    cached = _plots.get_or_draw(
        key, lambda: _draw(session, experiment, rec, current), keep=lambda d: d.fit.note != FIT_DRAWING
    )
    return cached.model_copy(update={"experiment": current})


def _draw(
    session: Session, experiment: Experiment, rec: Recommendation | None, current: ExperimentSummary
) -> Dashboard:
    names = experiment.domain_names
    fidelities = [f.name for f in experiment.fidelities]
    target_fid = fidelities[-1]
    plotted = _plotted(session, experiment)
    rows = plotted.rows
    at_target = [r for r in rows if r.fidelity == target_fid]
    return Dashboard(
        experiment=current,
        domains=names,
        target=experiment.target,
        runs_used=len(rows),
        runs_finished=plotted.total,
        history=_history(plotted, fidelities),
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


def _history(plotted: Plotted, fidelities: list[str]) -> History:
    series = []
    for fid in fidelities:
        picked = [(o, r) for o, r in zip(plotted.order, plotted.rows, strict=True) if r.fidelity == fid]
        if picked:
            series.append(
                FidelitySeries(
                    fidelity=fid,
                    order=[o for o, _ in picked],
                    run_ids=[r.id for _, r in picked],
                    target_loss=[float(r.target_loss) for _, r in picked],
                )
            )
    best_order, best_loss = plotted.best
    return History(target_fidelity=fidelities[-1], series=series, best_order=best_order, best_loss=best_loss)


def _stored_fit(rec: Recommendation | None, fidelity: str) -> FitQuality:
    """The fit plot the planner stored with the latest recommendation (requests never fit)."""
    if rec is None:
        return FitQuality(fidelity=fidelity, note="the fit plot appears with the first recommendation")
    if not rec.fit:
        return FitQuality(fidelity=fidelity, note=FIT_DRAWING)
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
        warnings=[w["message"] for w in rec.warnings],
    )


CURVE_POINTS = 48


def scale_plot(*, session: Session, experiment: Experiment) -> ScalePlot | None:
    """The latest scale prediction as the loss-vs-compute plot draws it; None before the first."""
    row = scale_prediction.latest_or_none(session=session, experiment=experiment)
    if row is None:
        return None
    out = scale_prediction.to_out(session=session, experiment=experiment, row=row)
    target_n, target_d = float(row.target_params), float(row.target_tokens)
    series = []
    for label in out.mixtures:
        points = [p for p in out.points if p.mixture == label]
        law = out.laws.get(label)
        predicted = out.predictions.get(label)
        curve_c: list[float] = []
        curve_l: list[float] = []
        if law is not None and points and out.n0 and out.d0:
            fitted = Law.from_json(law, out.n0, out.d0, out.form or "additive")
            # From the smallest rung to the target, N and D grown together geometrically.
            n = np.geomspace(min(p.params for p in points), target_n, CURVE_POINTS)
            d = np.geomspace(min(p.tokens for p in points), target_d, CURVE_POINTS)
            curve_c = (6.0 * n * d).tolist()
            curve_l = fitted.predict(n, d).tolist()
        series.append(
            ScaleSeries(
                mixture=label,
                compute=[6.0 * p.params * p.tokens for p in points],
                loss=[p.loss for p in points],
                run_ids=[p.run_id for p in points],
                curve_compute=curve_c,
                curve_loss=curve_l,
                target_compute=6.0 * target_n * target_d if predicted else None,
                predicted=predicted.loss if predicted else None,
                low=predicted.low if predicted else None,
                high=predicted.high if predicted else None,
            )
        )
    return ScalePlot(
        scale_prediction_id=row.id,
        status=row.status,
        error=row.error,
        target_params=row.target_params,
        target_tokens=row.target_tokens,
        runs_done=out.runs.get(RunStatus.SUCCEEDED, 0),
        runs_total=sum(out.runs.values()),
        form=out.form,
        exponents=out.exponents,
        backtest_rel_err=out.backtest_rel_err,
        warnings=[w.message for w in out.warnings],
        series=series,
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


def runs_table(
    *, session: Session, experiment: Experiment, query: RunQuery, offset: int, limit: int
) -> RunsTable:
    """One page of the runs table (filtered and sorted in SQL), and the running runs' learning curves."""
    now = utcnow()
    rows = run_service.list_runs(
        session=session, experiment=experiment, query=query, limit=limit, after=None, offset=offset
    )
    running = session.scalars(
        select(Run)
        .options(undefer(Run.curve))
        .where(Run.experiment_id == experiment.id, Run.status == RunStatus.RUNNING)
        .order_by(Run.id)
        .limit(MAX_LIVE_CURVES)
    )
    return RunsTable(
        experiment=summary(session, experiment),
        total=run_service.count_runs(session=session, experiment=experiment, query=query),
        offset=offset,
        rows=[
            RunRow(
                id=r.id,
                status=r.status,
                fidelity=r.fidelity,
                origin=r.origin,
                attempts=r.attempts,
                target_loss=r.target_loss,
                duration_s=_duration(r),
                done_fraction=curves.done_fraction(r),
                eta_s=curves.eta_s(r, now),
                error=r.error,
                created_at=r.created_at,
            )
            for r in rows
        ],
        live=[
            LiveRun(
                id=r.id,
                fidelity=r.fidelity,
                done_fraction=curves.done_fraction(r),
                eta_s=curves.eta_s(r, now),
                curve=_curve(r),
            )
            for r in running
        ],
    )


def _curve(run: Run) -> Curve:
    points = run.curve or []
    return Curve(
        steps=[p["step"] for p in points],
        tokens=[p.get("tokens") for p in points],
        train_loss=[p["train_loss"] for p in points],
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
        curve=_curve(run),
        trajectory=trajectory,
    )
