"""Regressors from mixture weights to loss, with k-fold cross-validation reported on every fit.

Shared by RegMix, CLIMB and the ADMIRE bench. The two entry points most callers need:

- :func:`fit_regressor` — one model on all rows (``X`` is (n, k) weights, ``y`` is (n,) losses).
- :func:`fit_with_cv` — k fold models plus a full-data model: the folds give honest out-of-fold
  Spearman/MAE (:class:`CVReport`) and their spread at a point is the prediction's uncertainty.

LightGBM defaults were chosen by 5-fold CV on the RegMix 1M training runs only (never the test runs):
small subsampled trees (7 leaves, 3000 trees) ranked better than the paper's settings (lr 0.01, 1000
trees, 31 leaves), extremely randomised splits best on smooth losses and ordinary splits where the
loss jumps as a weight leaves zero (DM Mathematics), so "lightgbm" averages one booster of each kind.
``python bench/regmix_fit.py`` scores these settings against the paper's on the 256 test runs.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, Protocol

import numpy as np
from scipy.stats import spearmanr

from strategies.base import StrategyError

logger = logging.getLogger(__name__)

MODELS = ("lightgbm", "linear", "gp", "ensemble")  # what fit_regressor fits
AUTO = "auto"  # RegMix's default: the model with the best CV on the history (fit_chosen)
AUTO_GP_ROWS = 512  # the GP's rows while choosing: an exact GP costs O(n³), half of GP_MAX_ROWS an eighth

# LightGBM settings (all overridable through ``params``). min_child_samples is scaled down for small n.
# Unless ``params`` sets ``extra_trees``, one booster of each kind is fitted and their mean predicted.
LIGHTGBM_PARAMS: dict[str, Any] = {
    "n_estimators": 3000,  # many small steps; CV error is flat from ~1500 trees on
    "learning_rate": 0.01,  # the paper's rate
    "num_leaves": 7,  # shallow trees: loss is a smooth function of the weights
    "min_child_samples": 10,  # at n=512; see _lightgbm
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "n_jobs": 1,  # fits run in parallel with each other (fit_with_cv), not inside one
    "verbosity": -1,
}
# LightGBM and scikit-learn release the GIL while they fit and predict, so threads use every core.
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
PARALLEL_PREDICT_ROWS = 256  # below this, one thread: splitting costs more than it saves


def _in_threads(jobs: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run independent fits (or prediction chunks) on every core, one BLAS thread each."""
    if THREADS == 1 or len(jobs) == 1:
        return [job() for job in jobs]
    with _one_blas_thread(), ThreadPoolExecutor(max_workers=min(THREADS, len(jobs))) as pool:
        return list(pool.map(lambda job: job(), jobs))


def _one_blas_thread() -> Any:
    """BLAS on one thread: the GP's matrices (at most ``GP_MAX_ROWS`` rows) are too small for threaded
    BLAS to pay, and the fits already run in parallel threads. Left to itself, OpenBLAS spread each
    factorisation over every core, and parallel fits fought over them: more CPU, no speed-up."""
    return _blas_libraries().limit(limits=1, user_api="blas")


@cache
def _blas_libraries() -> Any:
    """The loaded BLAS libraries, listed once: listing them scans every loaded library (~2 ms), too
    much for each fit and prediction chunk. scipy.linalg (the GP's BLAS) is loaded first so the list
    has it."""
    import scipy.linalg  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def seeded_subset(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted indices of ``k`` of ``n`` rows drawn with ``seed`` (all ``n`` when ``k >= n``): the same
    rows for the same call, so capped fits stay deterministic."""
    if k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def predict_rows(model: Regressor, X: np.ndarray) -> np.ndarray:
    """``model.predict(X)``, its rows split over ``THREADS`` threads when there are many (RegMix's search
    scores tens of thousands of mixtures)."""
    X = np.atleast_2d(X)
    if len(X) < PARALLEL_PREDICT_ROWS or THREADS == 1:
        return np.asarray(model.predict(X), dtype=float)
    parts = _in_threads([partial(model.predict, c) for c in np.array_split(X, THREADS)])
    return np.concatenate([np.asarray(p, dtype=float) for p in parts])


class Regressor(Protocol):
    """Anything with ``predict``: (n, k) weights → (n,) predicted loss."""

    def predict(self, X: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class CVReport:
    """Out-of-fold fit quality. ``spearman`` is 0 when predictions carry no rank information."""

    spearman: float
    mae: float
    n_train: int
    folds: int
    oof: np.ndarray  # (n,) out-of-fold prediction for every training row

    def diagnostics(self) -> dict[str, float]:
        return {
            "cv_spearman": self.spearman,
            "cv_mae": self.mae,
            "n_train": float(self.n_train),
            "cv_folds": float(self.folds),
        }


def _lightgbm(
    X: np.ndarray, y: np.ndarray, seed: int, params: Mapping[str, Any], warm: Regressor | None = None
) -> Regressor:
    import lightgbm as lgb

    merged = {**LIGHTGBM_PARAMS, "min_child_samples": max(2, min(10, len(y) // 20))}
    merged.update(params)
    merged.update(random_state=seed, deterministic=True, force_row_wise=True)
    kinds: list[dict[str, Any]] = (
        [{}] if "extra_trees" in params else [{"extra_trees": True}, {"extra_trees": False}]
    )
    boosters = tuple(lgb.LGBMRegressor(**{**merged, **kind}).fit(X, y) for kind in kinds)
    return boosters[0] if len(boosters) == 1 else WeightedSum(boosters, (0.5, 0.5))


def _linear(
    X: np.ndarray, y: np.ndarray, seed: int, params: Mapping[str, Any], warm: Regressor | None = None
) -> Regressor:
    from sklearn.linear_model import LinearRegression

    return LinearRegression(**params).fit(X, y)


GP_MAX_ROWS = 1024  # exact GP fits cost O(n³): beyond this a seeded subset is fitted
# L-BFGS steps on the kernel hyperparameters, capped for time: at 512 runs x 17 domains a fit takes ~5 s
# (python bench/regmix_fit.py --quick), ~13 s when run to convergence.
GP_MAXITER = 30
# A cross-validation fold's GP starts from the full fit's hyperparameters and takes this many steps
# instead of GP_MAXITER from scratch. The start has seen the fold's held-out rows, so the GP's CV is a
# little optimistic; its hyperparameters still move to fit the fold.
GP_WARM_MAXITER = 5


def _lbfgs(objective: Any, initial: np.ndarray, bounds: Any, maxiter: int) -> tuple[np.ndarray, float]:
    from scipy.optimize import minimize

    res = minimize(
        objective, initial, method="L-BFGS-B", jac=True, bounds=bounds, options={"maxiter": maxiter}
    )
    return res.x, float(res.fun)


@dataclass(frozen=True)
class OnSqrtWeights:
    """A model fitted on √weights: the root spreads out small weights, where loss changes fastest."""

    model: Any

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.sqrt(np.clip(X, 0.0, None))), dtype=float)


def _gp(
    X: np.ndarray, y: np.ndarray, seed: int, params: Mapping[str, Any], warm: Regressor | None = None
) -> Regressor:
    """Gaussian process on √weights: Matérn-5/2 with one length scale per domain (ARD) plus noise;
    ``warm``, a fitted GP, gives the starting hyperparameters (``GP_WARM_MAXITER`` steps from there)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    # A length scale at its upper bound means "this domain does not matter": expected, not a problem.
    warnings.filterwarnings("ignore", category=ConvergenceWarning, module="sklearn.gaussian_process")

    rows = seeded_subset(len(y), int(params.get("max_rows", GP_MAX_ROWS)), seed)
    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
        length_scale=np.ones(X.shape[1]), length_scale_bounds=(1e-2, 1e3), nu=2.5
    ) + WhiteKernel(1e-3, (1e-9, 1.0))
    maxiter = int(params.get("maxiter", GP_MAXITER))
    if isinstance(warm, OnSqrtWeights):
        kernel, maxiter = warm.model.kernel_, min(maxiter, GP_WARM_MAXITER)
    gp = GaussianProcessRegressor(
        kernel,
        normalize_y=True,
        optimizer=partial(_lbfgs, maxiter=maxiter),
        n_restarts_optimizer=int(params.get("restarts", 0)),
        random_state=seed,
    )
    with _one_blas_thread():
        return OnSqrtWeights(gp.fit(np.sqrt(X[rows]), y[rows]))


def _ensemble(
    X: np.ndarray, y: np.ndarray, seed: int, params: Mapping[str, Any], warm: Regressor | None = None
) -> Regressor:
    """The mean of LightGBM and the GP: trees catch jumps (a weight leaving zero), the GP smoothness."""
    warm_gp = warm.models[1] if isinstance(warm, WeightedSum) else None
    return WeightedSum(
        (_lightgbm(X, y, seed, params.get("lightgbm", {})), _gp(X, y, seed, params.get("gp", {}), warm_gp)),
        (0.5, 0.5),
    )


_FITTERS = {"lightgbm": _lightgbm, "linear": _linear, "gp": _gp, "ensemble": _ensemble}


def check_model(model: str, auto: bool = False) -> str:
    if model not in _FITTERS and not (auto and model == AUTO):
        choices = (AUTO, *MODELS) if auto else MODELS
        raise StrategyError(f"unknown regressor {model!r}; choose one of {', '.join(choices)}")
    return model


def fit_chosen(
    fit: Callable[[str, Mapping[str, Any]], CVEnsemble],
    y: np.ndarray,
    model: str,
    params: Mapping[str, Any],
) -> tuple[str, CVEnsemble, dict[str, float]]:
    """``fit(name, params)`` for ``model``; for "auto", LightGBM, the GP and a linear fit on the same
    folds plus their LightGBM+GP mean, keeping the best CV Spearman (ties: lower MAE).

    Returns (chosen name, its ensemble, every candidate's CV Spearman). Under "auto", ``params`` holds
    each model's settings under its name (as for "ensemble"). Which model ranks mixtures best depends on
    the data: LightGBM on small noisy histories, the GP on larger smooth ones (``bench/regmix_fit.py``).
    """
    if model != AUTO:
        return model, fit(model, params), {}
    gp = {"max_rows": AUTO_GP_ROWS, **params.get("gp", {})}
    fitted = {m: fit(m, gp if m == "gp" else params.get(m, {})) for m in ("lightgbm", "gp", "linear")}
    fitted["ensemble"] = combine([fitted["lightgbm"], fitted["gp"]], (0.5, 0.5), y)
    best = max(fitted, key=lambda m: (fitted[m].report.spearman, -fitted[m].report.mae))
    logger.info(
        "auto model: %s (CV spearman %s)", best, {m: round(e.report.spearman, 4) for m, e in fitted.items()}
    )
    return best, fitted[best], {f"cv_spearman_{m}": e.report.spearman for m, e in fitted.items()}


def fit_regressor(
    X: np.ndarray,
    y: np.ndarray,
    model: str = "lightgbm",
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
    warm: Regressor | None = None,
) -> Regressor:
    """Fit one regressor of ``y`` on the mixture weights ``X`` (shape (n, k)); ``warm``, a model of the
    same kind fitted on more of the data, lets a GP start from its hyperparameters."""
    X, y = _check_xy(X, y)
    return _FITTERS[check_model(model)](X, y, seed, params or {}, warm)


def kfold_indices(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled (train, test) index pairs; the same (n, folds, seed) always gives the same split."""
    if folds < 2:
        raise StrategyError(f"cross-validation needs at least 2 folds, got {folds}")
    if n < 2:
        raise StrategyError(f"cross-validation needs at least 2 runs, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, min(folds, n))
    return [(np.sort(np.concatenate(parts[:i] + parts[i + 1 :])), np.sort(p)) for i, p in enumerate(parts)]


def score(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """(Spearman ρ, mean absolute error); ρ is 0 where it is undefined (a constant side)."""
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    mae = float(np.mean(np.abs(y_true - y_pred)))
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return 0.0, mae
    return float(spearmanr(y_true, y_pred)[0]), mae


@dataclass(frozen=True)
class CVEnsemble:
    """A full-data model, the k fold models behind its CV report, and the report itself."""

    full: Regressor
    members: tuple[Regressor, ...]
    report: CVReport

    def predict(self, X: np.ndarray) -> np.ndarray:
        return predict_rows(self.full, X)

    def predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-model prediction and the spread (std) of the fold models around it."""
        X = np.atleast_2d(X)
        spread = np.stack([predict_rows(m, X) for m in self.members])
        return self.predict(X), spread.std(axis=0, ddof=1) if len(self.members) > 1 else np.zeros(len(X))


def fit_with_cv(
    X: np.ndarray,
    y: np.ndarray,
    model: str = "lightgbm",
    folds: int = 5,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> CVEnsemble:
    """Fit fold models (for CV and uncertainty) and a full-data model, in parallel threads (each fit is
    seeded: the result does not depend on the thread count). A GP's full fit comes first and the folds
    start from its hyperparameters (``GP_WARM_MAXITER``)."""
    X, y = _check_xy(X, y)
    check_model(model)
    splits = kfold_indices(len(y), folds, seed)
    warm = fit_regressor(X, y, model, seed, params) if model in ("gp", "ensemble") else None
    jobs: list[Callable[[], Regressor]] = [
        partial(fit_regressor, X[t], y[t], model, seed + i, params, warm) for i, (t, _) in enumerate(splits)
    ]
    if warm is None:
        jobs.append(partial(fit_regressor, X, y, model, seed, params))
    fitted = _in_threads(jobs)
    members, full = (fitted[:-1], fitted[-1]) if warm is None else (fitted, warm)
    oof = np.empty(len(y))
    for member, (_, test) in zip(members, splits, strict=True):
        oof[test] = member.predict(X[test])
    rho, mae = score(y, oof)
    report = CVReport(rho, mae, len(y), len(splits), oof)
    logger.info("%s fit on %d runs: CV spearman %.4f, MAE %.4g", model, len(y), rho, mae)
    return CVEnsemble(full, tuple(members), report)


def cross_validate(
    X: np.ndarray,
    y: np.ndarray,
    model: str = "lightgbm",
    folds: int = 5,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> CVReport:
    """k-fold CV Spearman and MAE of a regressor (see :func:`fit_with_cv` to keep the models)."""
    return fit_with_cv(X, y, model, folds, seed, params).report


@dataclass(frozen=True)
class WeightedSum:
    """Σ_j coef_j · model_j(X): a target that mixes several per-domain losses."""

    models: tuple[Regressor, ...]
    coefs: tuple[float, ...]

    def predict(self, X: np.ndarray) -> np.ndarray:
        preds = np.stack([np.asarray(m.predict(X), dtype=float) for m in self.models])  # (m, n)
        return np.asarray(self.coefs) @ preds


def combine(ensembles: Sequence[CVEnsemble], coefs: Sequence[float], y: np.ndarray) -> CVEnsemble:
    """Weighted sum of per-domain ensembles fitted on the same folds, re-scored against target ``y``.

    Because the folds match (same n, folds and seed), the weighted out-of-fold predictions are
    themselves out-of-fold, so the combined CV report is as honest as each part's.
    """
    if not ensembles or len(ensembles) != len(coefs):
        raise StrategyError("combine needs one coefficient per ensemble")
    folds = {len(e.members) for e in ensembles}
    if len(folds) != 1:
        raise StrategyError("ensembles to combine must have the same number of folds")
    cs = tuple(float(c) for c in coefs)
    members = tuple(
        WeightedSum(tuple(e.members[i] for e in ensembles), cs) for i in range(len(ensembles[0].members))
    )
    oof = np.asarray(cs) @ np.stack([e.report.oof for e in ensembles])
    rho, mae = score(y, oof)
    report = CVReport(rho, mae, len(y), len(members), oof)
    return CVEnsemble(WeightedSum(tuple(e.full for e in ensembles), cs), members, report)


def _check_xy(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.atleast_2d(np.asarray(X, dtype=float)), np.asarray(y, dtype=float).ravel()
    if len(X) != len(y):
        raise StrategyError(f"got {len(X)} mixtures but {len(y)} losses")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise StrategyError("weights and losses must be finite numbers")
    return X, y
