"""When not to trust a recommendation: checks on the fit behind it, stored and shown beside it.

A model of loss on weights can be confident and wrong: a weak cross-validated fit, a predicted loss far
below anything observed (the model is extrapolating), a mixture far from every run it was fitted on,
too few runs for the number of domains, a model whose own runs, each left out in turn, it predicted
much worse than its std said. Epoch caps that bind are not an error but change what the
mixture means (the data, not the model, set that weight). Each check is a number with a threshold,
so a warning always says what was measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from strategies.base import Observation, Recommendation, SearchSpace, at_fidelity
from strategies.regression import seeded_subset

MIN_CV_SPEARMAN = 0.5  # below it the model's ranking of mixtures is little better than chance
MIN_RUNS_PER_DOMAIN = 3  # RegMix fits hundreds of runs for 17 domains; 3 per domain is a bare minimum
MAX_STD_CALIBRATION = 2.0  # target runs mispredicted by twice the std the model claimed, or more
FAR_L1 = 0.25  # L1 distance to the nearest fitted run (moving 12.5 % of the mass); or twice the usual gap
CAP_TOL = 1e-3


@dataclass(frozen=True)
class TrustWarning:
    code: str  # low_cv_rho | misfit | extrapolation | far_from_data | few_runs | epoch_cap | no_target_runs
    message: str


def check(space: SearchSpace, history: Sequence[Observation], rec: Recommendation) -> list[TrustWarning]:
    """The warnings that apply to ``rec``, fitted on ``history``; [] for a trustworthy one."""
    d = {k: v for k, v in rec.diagnostics.items() if isinstance(v, int | float)}
    index = int(d.get("fit_fidelity_index", len(space.fidelities) - 1))
    fidelity = space.fidelities[min(max(index, 0), len(space.fidelities) - 1)].name
    runs = [o for o in at_fidelity(history, fidelity) if np.isfinite(o.target_loss)]
    out: list[TrustWarning] = []
    rho = d.get("cv_spearman")
    if rho is not None and np.isfinite(rho) and rho < MIN_CV_SPEARMAN:
        out.append(
            TrustWarning(
                "low_cv_rho",
                f"the model ranks held-out runs poorly (cross-validated Spearman ρ {rho:.3f} < "
                f"{MIN_CV_SPEARMAN}): its optimum may be no better than the best run seen",
            )
        )
    calibration = d.get("std_calibration")
    if calibration is not None and calibration >= MAX_STD_CALIBRATION:
        out.append(
            TrustWarning(
                "misfit",
                f"left out one at a time, the target runs were predicted {calibration:.1f}x worse than the "
                "model's std said (the surface is rougher than it assumes, or cheaper runs mislead it): "
                "its std has been widened by that factor, and its optimum is less sure than it looks",
            )
        )
    n, k = len(runs), space.k
    if 0 < n < MIN_RUNS_PER_DOMAIN * k:
        out.append(
            TrustWarning(
                "few_runs",
                f"{n} runs at fidelity {fidelity!r} for {k} domains (fewer than {MIN_RUNS_PER_DOMAIN} per "
                "domain): the fit has little to go on",
            )
        )
    if runs:
        out += _extrapolation(rec, runs, d.get("cv_mae"), fidelity)
        out += _far(rec, runs, fidelity)
    out += _capped(space, rec)
    out += _untested_at_target(space, history)
    return out


def _untested_at_target(space: SearchSpace, history: Sequence[Observation]) -> list[TrustWarning]:
    """Cheaper fidelities only: their optimum can sit elsewhere than the target's, and nothing here
    measures how far (a model's std cannot either, with no target run to learn the gap from)."""
    target = space.target_fidelity.name
    if len(space.fidelities) < 2 or not history or any(o.fidelity == target for o in history):
        return []
    return [
        TrustWarning(
            "no_target_runs",
            f"no run at the target fidelity {target!r}: the recommendation rests on cheaper fidelities "
            "alone, whose best mixture can differ from the target's",
        )
    ]


def _extrapolation(
    rec: Recommendation, runs: list[Observation], cv_mae: float | None, fidelity: str
) -> list[TrustWarning]:
    error = cv_mae if cv_mae is not None and np.isfinite(cv_mae) else rec.std
    best = min(o.target_loss for o in runs)
    if rec.predicted_loss is None or error is None or not np.isfinite(rec.predicted_loss):
        return []
    gap = best - rec.predicted_loss
    if gap <= max(error, 0.0):
        return []
    return [
        TrustWarning(
            "extrapolation",
            f"predicted loss {rec.predicted_loss:.4f} is {gap:.4f} below the best observed at {fidelity!r} "
            f"({best:.4f}), more than the model's error ({error:.4f}): the gain is an extrapolation; "
            "train this mixture once to confirm it",
        )
    ]


def _far(rec: Recommendation, runs: list[Observation], fidelity: str) -> list[TrustWarning]:
    X = np.array([o.weights for o in runs], dtype=float)
    nearest = float(nearest_l1(X, np.asarray(rec.weights, dtype=float)[None])[0])
    limit = far_limit(X)
    if nearest <= limit:
        return []
    return [
        TrustWarning(
            "far_from_data",
            f"the mixture is {nearest:.2f} (L1) from the nearest run at {fidelity!r}, more than {limit:.2f}: "
            "the model has not seen anything like it; train it once to check",
        )
    ]


def far_limit(X: np.ndarray) -> float:
    """How far (L1) a mixture may lie from the nearest of the runs ``X`` before it is far from data:
    ``FAR_L1``, or twice the usual gap between runs where they are sparser than that."""
    return max(FAR_L1, 2 * _typical_gap(X))


def nearest_l1(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    """L1 distance from each row of ``W`` to its nearest row of ``X``."""
    return np.asarray(cKDTree(X).query(W, p=1)[0], dtype=float)


def _typical_gap(X: np.ndarray, sample: int = 500) -> float:
    """Median L1 distance from a run to its nearest other run (on a sample of runs: O(sample · n))."""
    if len(X) < 2:
        return 0.0
    gaps = []
    for i in seeded_subset(len(X), sample, seed=0):
        dist = np.abs(X - X[i]).sum(axis=1)
        dist[i] = np.inf
        gaps.append(dist.min())
    return float(np.median(gaps))


def _capped(space: SearchSpace, rec: Recommendation) -> list[TrustWarning]:
    caps = space.caps(space.recommend_budget())
    user = np.asarray(space.upper, dtype=float)
    bound = [
        f"{name} at {cap:.3f}"
        for name, w, cap, u in zip(space.domains, rec.weights, caps, user, strict=True)
        if cap < 1 - CAP_TOL and cap < u - CAP_TOL and w >= cap - CAP_TOL
    ]
    if not bound:
        return []
    return [
        TrustWarning(
            "epoch_cap",
            f"epoch caps bind ({', '.join(bound)}): those domains have too few tokens to be repeated more "
            "at the target budget, so the data, not the model, set their weights",
        )
    ]
