"""Pydantic request and response bodies. Validation that needs no database lives here."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from strategies import available_strategies
from strategies.online import available_online_strategies

WEIGHT_TOL = 1e-3  # published mixtures are rounded to 3 decimals; rows are renormalised after the check
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
TEXT_PATTERN = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL
LEASE_PATTERN = r"^[0-9a-f]{32}$"
# Bounds every number in the API carries, so nothing overflows a column or a computation (422, never 500).
MAX_LOSS = 100.0  # nats per token; uniform over a 50k vocabulary is 10.8, a diverged run may be higher
MAX_TOKENS = 10**15
MAX_FLOPS = 1e30
MAX_PARAMS = 10**14
MAX_SEED = 10**9  # run seeds are experiment seed + run index, and must fit a 32-bit column
MAX_STEP = 2**31 - 1
MAX_DOMAINS = 256
MAX_FIDELITIES = 16

T = TypeVar("T")


def check_simplex(weights: dict[str, float], what: str = "weights") -> dict[str, float]:
    """Finite, non-negative, summing to 1 within ``WEIGHT_TOL``; returns them renormalised."""
    if not weights:
        raise ValueError(f"{what} must name at least one domain")
    for name, w in weights.items():
        if not isinstance(w, int | float) or not math.isfinite(w):
            raise ValueError(f"{what}[{name!r}] is {w}; weights must be finite numbers")
        if w < 0:
            raise ValueError(f"{what}[{name!r}] is {w}; weights must be >= 0")
    total = sum(weights.values())
    if abs(total - 1.0) > WEIGHT_TOL:
        raise ValueError(f"{what} sum to {total:.6g}; they must sum to 1 within {WEIGHT_TOL:g}")
    return {k: float(v) / total for k, v in weights.items()}


def check_losses(losses: dict[str, float]) -> dict[str, float]:
    """Finite, > 0 and at most ``MAX_LOSS``: a loss of 0, a negative one or 1e308 is a bug upstream."""
    for name, v in losses.items():
        if not isinstance(v, int | float) or not math.isfinite(v) or not 0 < v <= MAX_LOSS:
            raise ValueError(f"losses[{name!r}] is {v}; a loss must be a number in (0, {MAX_LOSS:g}]")
    return {k: float(v) for k, v in losses.items()}


def check_json_size(value: Any, limit: int, what: str) -> Any:
    size = len(json.dumps(value, default=str))
    if size > limit:
        raise ValueError(f"{what} is {size} bytes of JSON; at most {limit} are stored")
    return value


class Strict(BaseModel):
    """Request bodies: unknown fields, non-finite numbers and text fields no database column can store
    (NUL, lone surrogates) are errors. Free-form JSON (params, progress) is stored as JSON, which can."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _storable_text(self) -> Any:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, str) and ("\x00" in value or _has_surrogate(value)):
                raise ValueError(
                    f"{name}: {value[:40]!r} holds a NUL or an unpaired surrogate; send UTF-8 text"
                )
        return self


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def unknown(names: Iterable[str], known: Iterable[str]) -> list[str]:
    known_set = set(known)
    return sorted(n for n in names if n not in known_set)


class DomainSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '_', '-', '.'")
    tokens: int | None = Field(
        None, ge=1, le=MAX_TOKENS, description="training tokens available (external runs; else measured)"
    )
    lower: float = Field(0.0, ge=0, le=1, description="minimum weight")
    upper: float = Field(1.0, ge=0, le=1, description="maximum weight")

    @model_validator(mode="after")
    def _bounds(self) -> DomainSpec:
        if self.lower > self.upper:
            raise ValueError(f"domain {self.name!r}: lower {self.lower} exceeds upper {self.upper}")
        return self


class FidelitySpec(Strict):
    """A proxy setting. Worker runs name a ``preset``; external pipelines name their own fidelity + tokens."""

    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    preset: str | None = Field(
        None, max_length=32, pattern=TEXT_PATTERN, description="proxy model preset (xs, s, m) for worker runs"
    )
    tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS, description="training tokens per run (default: the preset's)"
    )
    cost: float | None = Field(
        default=None, gt=0, le=MAX_FLOPS, description="FLOPs per run (default: computed from the preset)"
    )


class ClusterSpec(Strict):
    """Cluster one unlabeled upload into domains before the search starts."""

    initial_k: int = Field(64, ge=2, le=512, description="k-means clusters before merging")
    merge_threshold: float = Field(0.75, ge=0, le=2, description="merge clusters closer than this (cosine)")
    min_cluster_frac: float = Field(0.02, ge=0, lt=0.5, description="dissolve clusters smaller than this")
    max_documents: int = Field(20_000, ge=10, le=10_000_000)


class ExperimentCreate(Strict):
    # What JSON Schema can say of the cross-field rules below (clients and fuzzers read it).
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["domains"], "properties": {"domains": {"minItems": 2}}},
                {"required": ["cluster"], "properties": {"domains": {"maxItems": 0}}},
            ]
        }
    )

    name: str = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)
    domains: list[DomainSpec] = Field(
        default_factory=list,
        max_length=MAX_DOMAINS,
        description="empty when clustering an unlabeled corpus",
    )
    target: dict[str, float] | None = Field(None, description="eval domain → weight; default: uniform")
    strategy: str = Field(
        "regmix", max_length=64, json_schema_extra={"enum": list[JsonValue](available_strategies())}
    )
    strategy_params: dict[str, Any] = Field(default_factory=dict)
    fidelities: list[FidelitySpec] = Field(
        default_factory=lambda: [FidelitySpec(preset="xs")], max_length=MAX_FIDELITIES
    )
    budget: float = Field(16, gt=0, le=100_000, description="in target-fidelity-equivalent runs")
    parallelism: int = Field(4, ge=1, le=1024)
    max_epochs: float = Field(4.0, gt=0, le=1000)
    target_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS, description="your real training budget, for epoch caps"
    )
    target_params: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PARAMS,
        description="your real model's non-embedding parameters: a scale prediction forecasts its loss",
    )
    executor: Literal["worker", "external"] = "worker"
    seed: int = Field(0, ge=0, le=MAX_SEED)
    cluster: ClusterSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentCreate:
        names = [d.name for d in self.domains]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate domain names: {dupes}")
        if self.cluster is None and len(names) < 2:
            raise ValueError("an experiment needs at least two domains (or `cluster` to discover them)")
        if self.cluster is not None and names:
            raise ValueError("give either `domains` or `cluster`, not both")
        if sum(d.lower for d in self.domains) > 1 + 1e-9:
            raise ValueError("domain lower bounds sum to more than 1")
        if self.target is not None:
            self.target = check_simplex(self.target, "target")
            if names and (bad := unknown(self.target, names)):
                raise ValueError(f"target names unknown domains {bad}; known: {names}")
        if not self.fidelities:
            raise ValueError("at least one fidelity is needed")
        return self


class DomainOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    lower: float
    upper: float
    sha256: str | None
    bytes: int | None
    documents: int | None
    tokens: int | None
    val_tokens: int | None
    info: dict[str, Any]


class FidelityOut(BaseModel):
    """A resolved fidelity: tokens and cost are filled in from the preset where not given."""

    model_config = ConfigDict(from_attributes=True)
    name: str
    preset: str | None
    tokens: int
    cost: float


class ExperimentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    status: str
    executor: str
    strategy: str
    strategy_params: dict[str, Any]
    target: dict[str, float]
    fidelities: list[FidelityOut]
    budget: float
    spent: float = 0.0
    parallelism: int
    max_epochs: float
    target_tokens: int | None
    target_params: int | None = None
    seed: int
    cluster: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    domains: list[DomainOut]
    run_counts: dict[str, int] = Field(default_factory=dict)
    best_loss: float | None = None
    tags: list[str] = Field(default_factory=list)
    notes: str | None = None
    archived_at: datetime | None = None


class RunOut(BaseModel):
    id: int
    experiment_id: int
    weights: dict[str, float]
    fidelity: str
    seed: int
    origin: str
    status: str
    attempts: int
    progress: dict[str, Any]
    losses: dict[str, float] | None
    target_loss: float | None
    cost: float | None
    wall_s: float | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    lease_expires_at: datetime | None
    eta_s: float | None = Field(
        None,
        description="seconds until a running run ends, from its rate so far: needs `step` and `total_steps` "
        "in its progress (or `total_steps` there and a curve point)",
    )


MAX_CURVE_POINTS_PER_BEAT = 1000


class CurvePoint(Strict):
    """One point of a run's learning curve, as a trainer reports it."""

    step: int = Field(ge=0, le=MAX_STEP, description="optimiser steps done")
    tokens: int | None = Field(None, ge=0, le=MAX_TOKENS, description="training tokens seen")
    train_loss: float = Field(gt=0, le=MAX_LOSS, description="training loss at this step")
    eval_losses: dict[str, float] | None = Field(
        default=None, max_length=MAX_DOMAINS, description="per-domain validation loss, if measured then"
    )

    @field_validator("eval_losses")
    @classmethod
    def _finite(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return None if v is None else check_losses(v)


class RunWithCurve(RunOut):
    curve: list[CurvePoint] = Field(
        default_factory=list,
        description="the learning curve reported through heartbeats, oldest first; long curves are "
        "thinned (every other older point dropped) so a run stores a bounded number of points",
    )


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_after: int | None = Field(None, description="pass as `after` to get the next page")
    next_offset: int | None = Field(
        default=None, description="pass as `offset` for the next page (sorts other than id)"
    )


class TrustWarningOut(BaseModel):
    code: str
    message: str


class PredictedLoss(BaseModel):
    """A run's loss at a scale the ladder never trained, from its scaling law."""

    loss: float
    low: float = Field(
        description="the band's lower end: 90 % of bootstrap refits with seed noise, widened by the law's "
        "backtested extrapolation error"
    )
    high: float
    params: int = Field(description="non-embedding parameters it is predicted for")
    tokens: int
    scale_prediction_id: int
    warnings: list[TrustWarningOut] = Field(
        default_factory=list, description="its scale prediction's warnings (early_regime)"
    )


class RecommendationOut(BaseModel):
    id: int
    experiment_id: int
    strategy: str
    weights: dict[str, float]
    predicted_loss: float | None
    std: float | None
    diagnostics: dict[str, Any]
    alternatives: list[dict[str, Any]]
    warnings: list[TrustWarningOut] = Field(
        default_factory=list,
        description="why the recommendation may not hold: low_cv_rho, misfit, extrapolation, "
        "far_from_data, few_runs, epoch_cap, no_target_runs (each with a message saying what was "
        "measured); empty when none applies",
    )
    predicted_target_loss: PredictedLoss | None = Field(
        default=None,
        description="loss of this mixture at the experiment's target_params / target_tokens, once a scale "
        "prediction (POST …/scale-prediction) for this recommendation has fitted its law",
    )
    n_runs: int
    final: bool
    created_at: datetime


class ScalePredictionIn(Strict):
    """Which ladder to train. Each mixture is trained at every preset × token scale; a law L(N, D)
    fitted on those runs predicts its loss at (target_params, target_tokens)."""

    presets: list[Annotated[str, Field(max_length=32, pattern=TEXT_PATTERN)]] | None = Field(
        default=None,
        min_length=2,
        max_length=8,
        description="model sizes, smallest first (default: up to the preset above the experiment's largest)",
    )
    token_scales: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=lambda: [0.25, 0.5, 1.0],
        min_length=2,
        max_length=8,
        description="token budgets per preset, as multiples of the preset's default tokens; three or more "
        "show whether the loss still falls faster with each doubling (the early_regime warning, the "
        "plateau form)",
    )
    seeds: int = Field(default=1, ge=1, le=8, description="runs per mixture and rung")
    baselines: bool = Field(
        default=True, description="also predict the natural and uniform mixtures, for contrast"
    )
    target_params: int | None = Field(
        default=None, ge=1, le=MAX_PARAMS, description="default: the experiment's target_params"
    )
    target_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS, description="default: the experiment's target_tokens"
    )


class Rung(BaseModel):
    preset: str
    tokens: int
    params: int = Field(description="non-embedding parameters of the preset's model")
    cost: float = Field(description="FLOPs of one run")


class LadderPointOut(BaseModel):
    mixture: str
    preset: str
    tokens: int
    params: int
    cost: float
    loss: float
    run_id: int


class ScalePredictionOut(BaseModel):
    id: int
    experiment_id: int
    recommendation_id: int
    status: str
    error: str | None
    mixtures: dict[str, dict[str, float]] = Field(
        description="label → weights: recommended, natural, uniform"
    )
    rungs: list[Rung]
    seeds: int
    target_params: int
    target_tokens: int
    runs: dict[str, int] = Field(description="ladder runs per status")
    cost_units: float = Field(description="the ladder's cost in target-fidelity runs (charged to `spent`)")
    points: list[LadderPointOut] = Field(description="finished ladder runs")
    form: Literal["additive", "joint", "plateau"] | None = Field(
        None,
        description="the law's form: additive, L = E + A·n^-alpha + B·d^-beta; joint, "
        "L = E + A·(B·n^-alpha + 1/d)^beta; or plateau, the additive form + P·exp(-d/(tau·n^gamma)), for "
        "runs still leaving an early plateau (n = N/n0, d = D/d0); chosen, with exponents, by predicting "
        "each mixture's top rung from the rest of the ladder",
    )
    exponents: Literal["shared", "separate"] | None = Field(
        None, description="whether the mixtures share alpha and beta (chosen with the form)"
    )
    laws: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="label → fitted E, A, alpha, B, beta (and P, tau, gamma) of its form",
    )
    n0: float | None = None
    d0: float | None = None
    rmse: float | None = Field(None, description="in-sample error of the law over the ladder's runs")
    backtest_rel_err: float | None = Field(
        None,
        description="relative RMS error of the law predicting each mixture's largest rung from the rest of "
        "the ladder; the band widens by it, grown with the distance to the target (none: too short a ladder)",
    )
    predictions: dict[str, PredictedLoss] = Field(
        default_factory=dict, description="label → loss at (target_params, target_tokens); once fitted"
    )
    warnings: list[TrustWarningOut] = Field(
        default_factory=list,
        description="reasons to trust the predictions less; early_regime: at some preset the loss still "
        "fell faster with each doubling of tokens, so the ladder is short of the regime the law describes",
    )
    created_at: datetime
    finished_at: datetime | None


class AskOut(BaseModel):
    run: RunOut
    lease_token: str = Field(description="present it with tell, heartbeat and fail")
    lease_expires_at: datetime


TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"


class ExperimentPatch(Strict):
    """Rename, tag or annotate an experiment; fields left out (or a null name or tags) stay as they are."""

    name: str | None = Field(None, min_length=1, max_length=200, pattern=TEXT_PATTERN)
    tags: list[Annotated[str, Field(pattern=TAG_PATTERN)]] | None = Field(
        None, max_length=32, description="replaces the tags; letters, digits, '_', '.', ':', '-'"
    )
    notes: str | None = Field(None, max_length=10_000, pattern=TEXT_PATTERN, description="null clears them")


class CloneIn(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=TEXT_PATTERN)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="default: the original's seed + 1")


class ExtendIn(Strict):
    budget: float = Field(gt=0, le=100_000, description="runs (target-fidelity equivalents) to add")


class ResultIn(Strict):
    lease_token: str = Field(
        pattern=LEASE_PATTERN, description="the `lease_token` ask returned: a stale lease gets 409"
    )
    losses: dict[str, float] = Field(
        max_length=MAX_DOMAINS, description=f"per-domain validation loss, in (0, {MAX_LOSS:g}]"
    )
    cost: float | None = Field(
        default=None, gt=0, le=MAX_FLOPS, description="FLOPs spent (default: the fidelity's cost)"
    )
    wall_s: float | None = Field(default=None, ge=0, le=10**9)

    _finite = field_validator("losses")(check_losses)


class FailIn(Strict):
    lease_token: str = Field(pattern=LEASE_PATTERN, description="the `lease_token` ask returned")
    error: str = Field(min_length=1, max_length=10_000, pattern=TEXT_PATTERN)


MAX_PROGRESS_BYTES = 64 * 1024


class HeartbeatIn(Strict):
    lease_token: str = Field(pattern=LEASE_PATTERN, description="the `lease_token` ask returned")
    progress: dict[str, Any] = Field(
        default_factory=dict,
        description=f"free-form, at most {MAX_PROGRESS_BYTES} bytes of JSON; `step` and `total_steps` "
        "give the run its ETA",
    )
    points: list[CurvePoint] = Field(
        default_factory=list,
        max_length=MAX_CURVE_POINTS_PER_BEAT,
        description="learning-curve points since the last heartbeat (points at or before the last stored "
        "step are ignored, so a retried heartbeat adds nothing twice)",
    )

    @field_validator("progress")
    @classmethod
    def _bounded(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_json_size(v, MAX_PROGRESS_BYTES, "progress")  # type: ignore[no-any-return]


class ImportedRun(Strict):
    weights: dict[str, float] = Field(max_length=MAX_DOMAINS)
    losses: dict[str, float] = Field(max_length=MAX_DOMAINS)
    fidelity: str | None = Field(
        None, max_length=100, pattern=TEXT_PATTERN, description="default: the target fidelity"
    )
    cost: float | None = Field(default=None, gt=0, le=MAX_FLOPS)

    _simplex = field_validator("weights")(check_simplex)
    _finite = field_validator("losses")(check_losses)


class ImportIn(Strict):
    runs: list[ImportedRun] = Field(min_length=1, max_length=100_000)
    count_budget: bool = Field(
        default=False,
        description="charge these runs to the budget, as if the search had run them (default: free)",
    )


class ImportOut(BaseModel):
    imported: int
    run_ids: list[int]


class OnlineSessionCreate(Strict):
    strategy: str = Field(
        "aioli", max_length=64, json_schema_extra={"enum": list[JsonValue](available_online_strategies())}
    )
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(0, ge=0, le=MAX_SEED)


class OnlineUpdateIn(Strict):
    step: int = Field(ge=0, le=MAX_STEP)
    losses: dict[str, float] = Field(max_length=MAX_DOMAINS)
    alignment: dict[str, float] | None = Field(None, max_length=MAX_DOMAINS)
    reference_losses: dict[str, float] | None = Field(None, max_length=MAX_DOMAINS)

    _finite = field_validator("losses")(check_losses)

    @field_validator("reference_losses")
    @classmethod
    def _finite_reference(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return None if v is None else check_losses(v)


class StrategyInfo(BaseModel):
    name: str
    kind: Literal["offline", "online"] = Field(
        description="offline: propose/recommend over many runs (`strategy`); online: re-weights one run"
    )
    summary: str
    parameters: dict[str, Any] = Field(description="JSON Schema of `strategy_params` (or online `params`)")


class OnlineSessionOut(BaseModel):
    id: int
    experiment_id: int
    strategy: str
    params: dict[str, Any]
    step: int
    weights: dict[str, float]
    trajectory: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
