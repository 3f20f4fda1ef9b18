"""What the dashboard draws: every plot of the experiment page is one JSON field of these models."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from app.schemas import RunOut


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
    warnings: list[str]  # why not to trust it (strategies/trust.py), as messages


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
    runs_used: int  # succeeded runs behind the plots (at most MAX_PLOT_RUNS, evenly spaced)
    runs_finished: int  # all succeeded runs: more than runs_used means the plots show a sample
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
    done_fraction: float | None  # of a running run's steps
    eta_s: float | None
    error: str | None
    created_at: datetime


class Curve(BaseModel):
    """A learning curve as columns, for plotting."""

    steps: list[int]
    tokens: list[int | None]
    train_loss: list[float]


class LiveRun(BaseModel):
    id: int
    fidelity: str
    done_fraction: float | None
    eta_s: float | None
    curve: Curve


class RunsTable(BaseModel):
    experiment: ExperimentSummary
    total: int  # runs matching the filters
    offset: int
    rows: list[RunRow]  # one page, in the requested order
    live: list[LiveRun]  # running runs' learning curves (the oldest MAX_LIVE_CURVES)


class RunDetail(BaseModel):
    experiment: ExperimentSummary
    run: RunOut
    duration_s: float | None
    domains: list[str]
    curve: Curve
    trajectory: Trajectory | None  # the sampler's weights over training steps, if the trainer recorded them


class ScaleSeries(BaseModel):
    """One mixture on the loss-vs-compute plot: its ladder runs, its fitted law drawn from the smallest
    rung to the target scale, and the predicted loss there with its band."""

    mixture: str
    compute: list[float]  # ≈ 6·N·D of each ladder run (non-embedding N)
    loss: list[float]
    run_ids: list[int]
    curve_compute: list[float]
    curve_loss: list[float]
    target_compute: float | None
    predicted: float | None
    low: float | None
    high: float | None


class ScalePlot(BaseModel):
    scale_prediction_id: int
    status: str
    error: str | None
    target_params: int
    target_tokens: int
    runs_done: int
    runs_total: int
    form: str | None
    exponents: str | None
    backtest_rel_err: float | None  # the law's error on each mixture's top rung, fitted without it
    warnings: list[str]  # why to trust the prediction less (``ScalePredictionOut.warnings``' messages)
    series: list[ScaleSeries]
