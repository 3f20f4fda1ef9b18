"""Scale predictions as rows: a ladder of runs for the recommended mixture (and baselines), read back.

``POST …/scale-prediction`` writes one ``ScalePrediction`` and its ladder runs (ordinary worker runs with
``ladder_id`` set, so the run queue, retries, the reaper and budget accounting all apply; the search
and its figures skip them). Workers fit the law as rungs finish (``workers/scale_job.py``); requests
only read what they stored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidInput, NotFound
from app.models import Experiment, FidelityInfo, Recommendation, Run, ScalePrediction
from app.schemas import (
    LadderPointOut,
    PredictedLoss,
    Rung,
    ScalePredictionIn,
    ScalePredictionOut,
    TrustWarningOut,
)
from app.services.recommendations import latest_recommendation
from app.status import LIVE_RUNS, Executor, ExperimentStatus, RunOrigin, RunStatus, ScaleStatus
from proxy_models.presets import PRESETS, get_preset, run_flops
from proxy_models.sampler import EpochCapError, check_epochs

LADDER_PREFIX = "ladder:"  # a ladder run's fidelity: "ladder:<preset>:<tokens>"


def ladder_fidelity(preset: str, tokens: int) -> str:
    return f"{LADDER_PREFIX}{preset}:{tokens}"


def parse_ladder_fidelity(name: str) -> tuple[str, int]:
    """(preset, tokens) of a ladder run's fidelity name."""
    preset, tokens = name.removeprefix(LADDER_PREFIX).rsplit(":", 1)
    return preset, int(tokens)


def ladder_info(name: str) -> FidelityInfo:
    """What a worker trains for a ladder run: its preset at its tokens."""
    preset, tokens = parse_ladder_fidelity(name)
    return FidelityInfo(name=name, tokens=tokens, cost=run_flops(preset, tokens), preset=preset)


def default_presets(experiment: Experiment) -> list[str]:
    """Every preset up to the one above the experiment's largest: two sizes at least, one past the search."""
    names = list(PRESETS)
    used = [names.index(f.preset) for f in experiment.fidelities if f.preset in PRESETS]
    top = min(len(names) - 1, max(used, default=0) + 1)
    return names[: max(top + 1, 2)]


def start(
    *, session: Session, experiment: Experiment, spec: ScalePredictionIn
) -> tuple[ScalePrediction, list[int]]:
    """Write the prediction and its queued ladder runs; returns it and the run ids to dispatch."""
    rec = _checked(session, experiment)
    target_params = spec.target_params or experiment.target_params
    target_tokens = spec.target_tokens or experiment.target_tokens
    if target_params is None or target_tokens is None:
        raise InvalidInput(
            "say which scale to predict: target_params (your model's non-embedding parameters) and "
            "target_tokens, in this request or on the experiment",
            code="target_scale_unknown",
        )
    presets = spec.presets or default_presets(experiment)
    for name in presets:
        if name not in PRESETS:
            raise InvalidInput(f"unknown preset {name!r}; known: {', '.join(PRESETS)}", code="unknown_preset")
    if len(set(presets)) < 2 or len(set(spec.token_scales)) < 2:
        raise InvalidInput(
            "a law in N and D needs at least two distinct presets and two distinct token scales",
            code="ladder_too_short",
        )
    mixtures = _mixtures(experiment, rec, spec.baselines)
    rungs = [_rung(name, scale) for name in presets for scale in sorted(set(spec.token_scales))]
    _check_caps(experiment, mixtures, rungs)

    row = ScalePrediction(
        experiment_id=experiment.id,
        recommendation_id=rec.id,
        status=ScaleStatus.RUNNING,
        mixtures=mixtures,
        rungs=rungs,
        seeds=spec.seeds,
        target_params=target_params,
        target_tokens=target_tokens,
        result={},
    )
    session.add(row)
    session.flush()
    runs = [
        Run(
            experiment_id=experiment.id,
            weights=weights,
            fidelity=ladder_fidelity(rung["preset"], rung["tokens"]),
            seed=experiment.seed + seed,  # the same seeds for every mixture: differences are the mixture's
            origin=RunOrigin.WORKER,
            ladder_id=row.id,
            cost=rung["cost"],  # planned FLOPs, so a live rung counts against the budget
            extra={"mixture": label},
        )
        for label, weights in mixtures.items()
        for rung in rungs
        for seed in range(spec.seeds)
    ]
    session.add_all(runs)
    session.flush()
    return row, [r.id for r in runs]


def _checked(session: Session, experiment: Experiment) -> Recommendation:
    if experiment.executor != Executor.WORKER:
        raise Conflict(
            "a scale prediction trains mixlab's proxy presets on its workers; this experiment's runs are "
            "trained by your pipeline (executor='external')",
            code="bad_executor",
        )
    if experiment.status != ExperimentStatus.DONE:
        raise Conflict(
            f"experiment is {experiment.status}; predict the loss at scale once the search is done",
            code="bad_status",
        )
    rec = latest_recommendation(session=session, experiment=experiment)
    if rec is None:
        raise Conflict("the experiment has no recommendation to predict", code="no_recommendation")
    running = session.scalar(
        select(ScalePrediction.id).where(
            ScalePrediction.experiment_id == experiment.id, ScalePrediction.status == ScaleStatus.RUNNING
        )
    )
    if running is not None:
        raise Conflict(
            f"scale prediction {running} is still running; wait for it or cancel it",
            code="scale_prediction_running",
        )
    return rec


def _mixtures(experiment: Experiment, rec: Recommendation, baselines: bool) -> dict[str, list[float]]:
    mixtures = {"recommended": [float(w) for w in rec.weights]}
    if baselines:
        tokens = np.array(
            [float(d.tokens or 0) for d in sorted(experiment.domains, key=lambda d: d.position)]
        )
        k = len(tokens)
        mixtures["natural"] = (tokens / tokens.sum()).tolist() if tokens.sum() > 0 else [1.0 / k] * k
        mixtures["uniform"] = [1.0 / k] * k
    return mixtures


def _rung(preset: str, scale: float) -> dict[str, Any]:
    p = get_preset(preset)
    tokens = p.steps(round(p.tokens * scale)) * p.batch_tokens  # whole batches: D is what trains
    return {
        "preset": preset,
        "tokens": tokens,
        "params": p.model_config().non_embedding_params,
        "cost": run_flops(preset, tokens),
    }


def _check_caps(
    experiment: Experiment, mixtures: dict[str, list[float]], rungs: list[dict[str, Any]]
) -> None:
    """A rung that would repeat a domain past max_epochs would fail on the worker: refuse it now."""
    names = experiment.domain_names
    available = {d.name: int(d.tokens or 0) for d in experiment.domains}
    for rung in sorted(rungs, key=lambda r: -r["tokens"]):
        for label, weights in mixtures.items():
            try:
                mixture = dict(zip(names, weights, strict=True))
                check_epochs(available, mixture, rung["tokens"], experiment.max_epochs)
            except EpochCapError as e:
                raise InvalidInput(
                    f"the {label} mixture cannot train the {rung['preset']} rung at {rung['tokens']:,} "
                    f"tokens: {e}; lower token_scales, or leave the baselines out",
                    code="epoch_cap",
                ) from None


def latest_or_none(*, session: Session, experiment: Experiment) -> ScalePrediction | None:
    return session.scalar(
        select(ScalePrediction)
        .where(ScalePrediction.experiment_id == experiment.id)
        .order_by(ScalePrediction.id.desc())
        .limit(1)
    )


def latest(*, session: Session, experiment: Experiment) -> ScalePrediction:
    row = latest_or_none(session=session, experiment=experiment)
    if row is None:
        raise NotFound(
            "no scale prediction yet: POST /experiments/{id}/scale-prediction starts one",
            code="no_scale_prediction",
        )
    return row


def cancel(*, session: Session, experiment: Experiment) -> ScalePrediction:
    """Stop a running prediction: its live ladder runs are cancelled, what finished stays."""
    row = latest(session=session, experiment=experiment)
    if row.status != ScaleStatus.RUNNING:
        raise Conflict(f"scale prediction {row.id} is already {row.status}", code="bad_status")
    for run in session.scalars(select(Run).where(Run.ladder_id == row.id, Run.status.in_(LIVE_RUNS))):
        run.status = RunStatus.CANCELLED
    row.status = ScaleStatus.CANCELLED
    session.flush()
    return row


def ladder_counts(session: Session, prediction_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Run.status, func.count()).where(Run.ladder_id == prediction_id).group_by(Run.status)
    )
    return {status: n for status, n in rows}


def to_out(*, session: Session, experiment: Experiment, row: ScalePrediction) -> ScalePredictionOut:
    names = experiment.domain_names
    result = row.result or {}
    fit = result.get("fit") or {}
    ladder_cost = len(row.mixtures) * row.seeds * sum(r["cost"] for r in row.rungs)
    warnings = _warnings(row)
    return ScalePredictionOut(
        id=row.id,
        experiment_id=row.experiment_id,
        recommendation_id=row.recommendation_id,
        status=row.status,
        error=row.error,
        mixtures={label: dict(zip(names, w, strict=True)) for label, w in row.mixtures.items()},
        rungs=[Rung(**r) for r in row.rungs],
        seeds=row.seeds,
        target_params=row.target_params,
        target_tokens=row.target_tokens,
        runs=ladder_counts(session, row.id),
        cost_units=ladder_cost / experiment.target_fidelity.cost,
        points=[LadderPointOut(**p) for p in result.get("points", [])],
        form=fit.get("form", "additive") if fit else None,  # fits stored before the joint form: additive
        exponents=fit.get("exponents"),
        laws=fit.get("laws", {}),
        n0=fit.get("n0"),
        d0=fit.get("d0"),
        rmse=fit.get("rmse"),
        backtest_rel_err=(fit.get("backtest") or {}).get("rel_rms"),
        predictions={
            label: _predicted(row, p, warnings) for label, p in (result.get("predictions") or {}).items()
        },
        warnings=warnings,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def predicted_for(session: Session, rec: Recommendation) -> PredictedLoss | None:
    """The newest fitted prediction of ``rec``'s own mixture, if a scale prediction was made for it."""
    row = session.scalar(
        select(ScalePrediction)
        .where(ScalePrediction.recommendation_id == rec.id)
        .order_by(ScalePrediction.id.desc())
        .limit(1)
    )
    if row is None:
        return None
    predicted = (row.result or {}).get("predictions", {}).get("recommended")
    return None if predicted is None else _predicted(row, predicted, _warnings(row))


def _warnings(row: ScalePrediction) -> list[TrustWarningOut]:
    sizes = {r["params"]: r["preset"] for r in row.rungs}
    fit = (row.result or {}).get("fit") or {}
    early = [sizes.get(n, f"{n:,.0f} params") for n in fit.get("early_regime", [])]
    if not early:
        return []
    message = (
        f"at preset(s) {', '.join(early)} the loss fell faster on the last doubling of tokens than on the "
        "one before: those runs are still short of the regime a scaling law describes, so the prediction "
        "rests on how soon that ends (train longer rungs, e.g. token_scales 0.5, 1, 2, to see it)"
    )
    return [TrustWarningOut(code="early_regime", message=message)]


def _predicted(row: ScalePrediction, p: dict[str, float], warnings: list[TrustWarningOut]) -> PredictedLoss:
    return PredictedLoss(
        loss=p["loss"],
        low=p["low"],
        high=p["high"],
        params=row.target_params,
        tokens=row.target_tokens,
        scale_prediction_id=row.id,
        warnings=warnings,
    )
