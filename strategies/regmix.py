"""RegMix (Liu et al., 2024): many small runs on random mixtures, a regressor of loss on weights, its optimum.

- propose: Dirichlet draws centred on the natural (token-proportional) prior over a range of
  concentrations, rejecting draws that break the epoch caps at the run's budget; weights under
  ``min_weight`` are zeroed (the paper's floor, so no domain gets a statistically meaningless sliver);
  deduplicated against each other and against runs already made.
- recommend: fit per-domain loss models (so the target can change without new runs), score them by
  k-fold CV, then search the capped simplex: Dirichlet samples around the prior plus the observed
  mixtures, local refinement of the best, and the mean of the ``average_top`` best points (the paper's
  top-100 average, which smooths over the regressor's piecewise-constant steps). Unlike the paper it
  honours epoch caps and user bounds at the target budget and reports an uncertainty (fold spread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from strategies import simplex, trust
from strategies.base import (
    Candidate,
    Fidelity,
    Observation,
    Recommendation,
    SearchSpace,
    StrategyError,
    at_fidelity,
)
from strategies.regression import (
    AUTO,
    MODELS,
    CVEnsemble,
    check_model,
    combine,
    fit_chosen,
    fit_with_cv,
    seeded_subset,
)

logger = logging.getLogger(__name__)

# The paper's Dirichlet strengths: 15 values log-spaced from 0.1 (sparse) to 5 (dense).
DEFAULT_CONCENTRATIONS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-1, np.log10(5.0), 15))
MIN_RUNS = 5  # fewer runs than this at every fidelity: no fit, fall back to the best observed
_REFINE_SIGMAS = tuple(float(s) for s in np.geomspace(0.1, 0.002, 8))  # local search step per round
_N_ELITE, _N_CHILDREN = 32, 32


@dataclass(frozen=True)
class MixtureModel:
    """A fitted map mixture → target loss, with where its data came from."""

    ensemble: CVEnsemble
    fidelity: Fidelity
    fidelity_index: int
    per_domain: bool  # True: one model per target domain, combined with the target weights
    X: np.ndarray  # (n, k) training mixtures
    model: str  # the regressor fitted (under "auto", the one chosen)
    candidates: Mapping[str, float]  # under "auto": each candidate's CV Spearman

    def predict(self, W: np.ndarray) -> np.ndarray:
        return self.ensemble.predict(W)

    def predict_with_std(self, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.ensemble.predict_with_std(W)

    def diagnostics(self) -> dict[str, float | str]:
        return {
            **self.ensemble.report.diagnostics(),
            **self.candidates,
            "model": self.model,
            "fit_fidelity_index": float(self.fidelity_index),
            "per_domain_models": float(self.per_domain),
        }


class RegMix:
    """Regression-based mixture search; see the module docstring.

    All parameters are JSON-friendly. On ``max_fit``: the paper's fits used 512 runs; a refit on 4,096 takes
    tens of seconds on 2 cores (``import_to_rec_s`` of ``python bench/api_load.py``), and histories up to
    ``max_fit`` are unaffected.

    Parameters:
        model: regressor of loss on weights: "auto" (the best cross-validated of the others, chosen at
            every fit), "lightgbm", "linear", "gp" (on √weights, slower) or "ensemble" (mean of
            lightgbm and gp)
        concentrations: Dirichlet strengths around the prior for proposals and the recommendation search
            (low = sparse); default: 15 values log-spaced from 0.1 to 5
        min_weight: weights below it are zeroed and their mass given to the others, in [0, 0.5)
        n_search: prior samples scored when recommending
        top_k: alternative mixtures returned with the recommendation; 0 for none
        folds: cross-validation folds, for the fit's score and the prediction's std (at least 2)
        average_top: best-predicted points averaged into the recommendation (the paper's top 100)
        fidelity: name of the fidelity to propose at and to fit first (else the highest with enough
            runs); default: the target fidelity
        temperature: flattens the natural prior, w ∝ p^(1/T); 1 = natural (the paper used 2), > 0
        seed: seed of the fits (CV folds, subsets) and the recommendation search; recommend is deterministic
        regressor_params: overrides of the regressor's settings (LightGBM or LinearRegression arguments);
            under "auto" and "ensemble", one dict per model name ({"lightgbm": {…}, "gp": {…}})
        max_fit: most runs one fit uses; beyond it a seeded random subset is fitted
    """

    name = "regmix"

    def __init__(
        self,
        model: str = AUTO,
        concentrations: Sequence[float] = DEFAULT_CONCENTRATIONS,
        min_weight: float = 1e-3,
        n_search: int = 20000,
        top_k: int = 5,
        folds: int = 5,
        average_top: int = 100,
        fidelity: str | None = None,
        temperature: float = 1.0,
        seed: int = 0,
        regressor_params: Mapping[str, Any] | None = None,
        max_fit: int = 4096,
    ) -> None:
        self.model = check_model(model, auto=True)
        self.concentrations = [float(c) for c in concentrations]
        if not self.concentrations or min(self.concentrations) <= 0:
            raise StrategyError("concentrations must be a non-empty list of positive numbers")
        if not 0 <= min_weight < 0.5:
            raise StrategyError(f"min_weight must be in [0, 0.5), got {min_weight}")
        if n_search < 1 or top_k < 0 or folds < 2 or average_top < 1 or max_fit < MIN_RUNS:
            raise StrategyError(
                f"need n_search >= 1, top_k >= 0, folds >= 2, average_top >= 1 and max_fit >= {MIN_RUNS}"
            )
        if not temperature > 0:
            raise StrategyError(f"temperature must be > 0, got {temperature}")
        self.min_weight, self.n_search, self.top_k = float(min_weight), int(n_search), int(top_k)
        self.folds, self.average_top, self.fidelity = int(folds), int(average_top), fidelity
        self.temperature, self.seed = float(temperature), int(seed)
        self.regressor_params = dict(regressor_params or {})
        flat = sorted(set(self.regressor_params) - set(MODELS))
        if self.model in (AUTO, "ensemble") and flat:
            raise StrategyError(
                f"under model={self.model!r} give regressor_params per model, e.g. "
                f'{{"lightgbm": {{"n_estimators": 300}}}}; {flat} name no model of {list(MODELS)}'
            )
        self.max_fit = int(max_fit)

    # ---- propose -------------------------------------------------------------------------------
    def propose(
        self,
        space: SearchSpace,
        history: Sequence[Observation],
        n: int,
        seed: int,
        pending: Sequence[Candidate] = (),
    ) -> list[Candidate]:
        f = space.fidelity(self.fidelity) if self.fidelity else space.target_fidelity
        lo, hi = space.bounds(f.tokens)
        rng = np.random.default_rng(seed)
        done = np.array([o.weights for o in at_fidelity(history, f.name)], dtype=float).reshape(-1, space.k)
        out = np.empty((0, space.k))
        for _ in range(20):
            if len(out) >= n:
                break
            draws = simplex.dirichlet(rng, self.prior(space), self.concentrations, 2 * (n - len(out)), lo, hi)
            out = simplex.dedupe(np.concatenate([out, self._floor(draws, lo, hi)]))
            out = out[simplex.unseen(out, done)]
        if len(out) < n:
            logger.warning("only %d distinct feasible mixtures found of %d asked", len(out), n)
        return [Candidate(tuple(float(x) for x in w), f.name) for w in out[:n]]

    def prior(self, space: SearchSpace) -> np.ndarray:
        """Natural weights, flattened by ``temperature`` (w ∝ p^(1/T); the paper used T=2)."""
        p = space.natural() ** (1.0 / self.temperature)
        return p / p.sum()

    def _floor(self, w: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Zero weights under ``min_weight``, handing their mass to the others in proportion, up to caps.

        Rows where that cannot be done within the bounds are kept as they were.
        """
        cut = np.where((w < self.min_weight) & (lo <= 0), 0.0, w)
        for _ in range(w.shape[1]):
            room = np.where(cut < hi - 1e-12, cut, 0.0)
            deficit = 1.0 - cut.sum(axis=1, keepdims=True)
            share = np.divide(
                room,
                room.sum(axis=1, keepdims=True),
                out=np.zeros_like(room),
                where=room.sum(axis=1, keepdims=True) > 0,
            )
            cut = np.minimum(cut + deficit * share, hi)
        return np.where(simplex.is_feasible(cut, lo, hi)[:, None], cut, w)

    # ---- fit -----------------------------------------------------------------------------------
    def fit(self, space: SearchSpace, history: Sequence[Observation]) -> MixtureModel | None:
        """Fit on the chosen fidelity (or the highest with enough runs); None if no fidelity has enough."""
        order = list(reversed(range(len(space.fidelities))))
        if self.fidelity:
            chosen = space.fidelities.index(space.fidelity(self.fidelity))
            order = [chosen] + [i for i in order if i != chosen]
        targets = {d: w for d, w in space.target.items() if w > 0}
        for i in order:
            obs = [o for o in at_fidelity(history, space.fidelities[i].name) if np.isfinite(o.target_loss)]
            per_domain = all(d in o.losses for o in obs for d in targets)
            if per_domain:
                obs = [o for o in obs if all(np.isfinite(o.losses[d]) for d in targets)]
            if len(obs) > self.max_fit:
                obs = [obs[j] for j in seeded_subset(len(obs), self.max_fit, self.seed)]
            if len(obs) >= MIN_RUNS:
                return self._fit_runs(space, obs, i, per_domain, targets)
        return None

    def _fit_runs(
        self,
        space: SearchSpace,
        obs: list[Observation],
        index: int,
        per_domain: bool,
        targets: Mapping[str, float],
    ) -> MixtureModel:
        X = np.array([o.weights for o in obs], dtype=float)
        if X.shape[1] != space.k:
            raise StrategyError(f"observations have {X.shape[1]} weights but the space has {space.k} domains")

        y = np.array(
            [sum(w * o.losses[d] for d, w in targets.items()) if per_domain else o.target_loss for o in obs]
        )
        per_target = [np.array([o.losses[d] for o in obs]) for d in targets] if per_domain else [y]

        def fit(model: str, params: Mapping[str, Any]) -> CVEnsemble:
            parts = [fit_with_cv(X, part, model, self.folds, self.seed, params) for part in per_target]
            return combine(parts, list(targets.values()), y) if per_domain else parts[0]

        model, ensemble, candidates = fit_chosen(fit, y, self.model, self.regressor_params)
        return MixtureModel(ensemble, space.fidelities[index], index, per_domain, X, model, candidates)

    # ---- recommend -----------------------------------------------------------------------------
    def recommend(self, space: SearchSpace, history: Sequence[Observation]) -> Recommendation:
        model = self.fit(space, history)
        if model is None:
            return self._fallback(space, history)
        return self.optimise(space, model)

    def optimise(self, space: SearchSpace, model: MixtureModel) -> Recommendation:
        """Search the simplex, capped at ``space.recommend_budget()``, for the model's lowest loss."""
        lo, hi = space.bounds(space.recommend_budget())
        rng = np.random.default_rng(self.seed)
        prior = simplex.project(self.prior(space), lo, hi)
        pool = np.concatenate(
            [
                simplex.dirichlet(rng, self.prior(space), self.concentrations, self.n_search, lo, hi),
                prior,
                simplex.project(model.X, lo, hi),
            ]
        )
        near, radius = _near_data(model.X)
        pred, reachable = model.predict(pool), near(pool)
        if reachable.any():
            pred = np.where(reachable, pred, np.inf)
        else:  # the caps at the target budget moved every run's mixture away
            logger.warning("regmix: no feasible mixture within %.2f (L1) of a run; searching all", radius)
            near = _anywhere
        for sigma in _REFINE_SIGMAS:
            elite = pool[np.argsort(pred)[:_N_ELITE]]
            kids = np.repeat(elite, _N_CHILDREN, axis=0)
            kids = simplex.project(kids + rng.normal(0.0, sigma, kids.shape), lo, hi)
            kid_pred = np.where(near(kids), model.predict(kids), np.inf)
            pool, pred = np.concatenate([pool, kids]), np.concatenate([pred, kid_pred])
        order = np.argsort(pred, kind="stable")
        ranked = pool[order[np.isfinite(pred[order])]]
        best = self._floor(simplex.project(ranked[: self.average_top].mean(axis=0), lo, hi), lo, hi)
        if not near(best)[0]:  # the mean of near points can lie between them, far from every run
            best = ranked[:1]
        loss, std = model.predict_with_std(best)
        diagnostics = {
            **model.diagnostics(),
            "predicted_prior": float(model.predict(prior)[0]),
            "n_search": float(len(pool)),
            "search_radius_l1": radius,
        }
        return Recommendation(
            tuple(float(x) for x in best[0]),
            float(loss[0]),
            float(std[0]),
            diagnostics,
            self._alternatives(model, ranked, best[0]),
        )

    def _alternatives(
        self, model: MixtureModel, ranked: np.ndarray, best: np.ndarray
    ) -> tuple[tuple[tuple[float, ...], float], ...]:
        """The ``top_k`` best distinct points (2-decimal resolution) other than the recommendation."""
        if self.top_k == 0:
            return ()
        # The whole ranking, not only its head: a smooth model (the GP) refines its head into one point.
        distinct = simplex.dedupe(np.concatenate([best[None], ranked]), decimals=2)[1:]
        distinct = distinct[np.abs(distinct - best).sum(axis=1) > 1e-2][: self.top_k]
        losses = model.predict(distinct) if len(distinct) else np.empty(0)
        return tuple((tuple(float(x) for x in w), float(v)) for w, v in zip(distinct, losses, strict=True))

    def _fallback(self, space: SearchSpace, history: Sequence[Observation]) -> Recommendation:
        """Too few runs to fit: the best feasible observed mixture, else the prior; says which."""
        lo, hi = space.bounds(space.recommend_budget())
        for f in reversed(space.fidelities):
            obs = [
                o
                for o in at_fidelity(history, f.name)
                if np.isfinite(o.target_loss) and simplex.is_feasible(np.asarray(o.weights), lo, hi)[0]
            ]
            if obs:
                best = min(obs, key=lambda o: _current_target(space, o))
                loss = _current_target(space, best)
                logger.warning("regmix: %d runs are too few to fit; recommending the best observed", len(obs))
                diag = {"fallback_best_observed": 1.0, "n_train": float(len(obs))}
                return Recommendation(best.weights, loss, None, diag)
        logger.warning("regmix: no usable runs; recommending the prior")
        w = simplex.project(self.prior(space), lo, hi)[0]
        diag = {"fallback_natural": 1.0, "n_train": 0.0}
        return Recommendation(tuple(float(x) for x in w), None, None, diag)


def _near_data(X: np.ndarray) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """Which mixtures lie within ``trust.far_limit`` (L1) of a fitted run, the only ones the search may
    recommend, and that limit. A model is fitted where the runs are; beyond them its optimum is an
    extrapolation that can promise far more than it delivers (a linear fit drives weights to a vertex)."""
    limit = trust.far_limit(X)
    return (lambda W: trust.nearest_l1(X, W) <= limit), limit


def _anywhere(W: np.ndarray) -> np.ndarray:
    return np.ones(len(W), dtype=bool)


def _current_target(space: SearchSpace, obs: Observation) -> float:
    """The run's loss under the space's target now (it may have changed since the run was scored)."""
    if all(d in obs.losses for d in space.target):
        return space.target_loss(obs.losses)
    return obs.target_loss
