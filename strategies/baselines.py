"""Fixed-mixture baselines (uniform, natural, temperature) and plain random search.

A fixed mixture is proposed again for every run (repeats at new seeds measure noise); its recommendation
predicts the mean observed target loss at that mixture, with the spread across repeats as its std.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategies import simplex
from strategies.base import (
    Candidate,
    Observation,
    Recommendation,
    SearchSpace,
    StrategyError,
    at_fidelity,
)


class _Fixed:
    name = "fixed"

    def mixture(self, space: SearchSpace) -> np.ndarray:
        raise NotImplementedError

    def _feasible(self, space: SearchSpace, budget: int) -> np.ndarray:
        lo, hi = space.bounds(budget)
        return simplex.project(self.mixture(space), lo, hi)[0]

    def propose(
        self,
        space: SearchSpace,
        history: Sequence[Observation],
        n: int,
        seed: int,
        pending: Sequence[Candidate] = (),
    ) -> list[Candidate]:
        f = space.target_fidelity
        w = tuple(float(x) for x in self._feasible(space, f.tokens))
        return [Candidate(w, f.name) for _ in range(n)]

    def recommend(self, space: SearchSpace, history: Sequence[Observation]) -> Recommendation:
        w = self._feasible(space, space.recommend_budget())
        near = [
            o.target_loss
            for o in at_fidelity(history, space.target_fidelity.name)
            if np.allclose(o.weights, w, atol=1e-4)
        ]
        mean = float(np.mean(near)) if near else None
        std = float(np.std(near, ddof=1)) if len(near) > 1 else None
        return Recommendation(tuple(float(x) for x in w), mean, std, {"n_observed": float(len(near))})


class Uniform(_Fixed):
    """Equal weight on every domain (within caps)."""

    name = "uniform"

    def mixture(self, space: SearchSpace) -> np.ndarray:
        return np.full(space.k, 1.0 / space.k)


class Natural(_Fixed):
    """Weights proportional to each domain's token count."""

    name = "natural"

    def mixture(self, space: SearchSpace) -> np.ndarray:
        return space.natural()


class Temperature(_Fixed):
    """Natural weights sharpened or flattened: w ∝ p^(1/tau); tau=1 is natural, tau→∞ is uniform.

    Parameters:
        tau: temperature on the natural weights, > 0: 1 = natural, above 1 flattens, below 1 sharpens
    """

    name = "temperature"

    def __init__(self, tau: float = 2.0) -> None:
        if not tau > 0:
            raise StrategyError(f"temperature tau must be > 0, got {tau}")
        self.tau = float(tau)

    def mixture(self, space: SearchSpace) -> np.ndarray:
        w = space.natural() ** (1.0 / self.tau)
        return w / w.sum()


class RandomSearch:
    """Dirichlet draws around the natural prior; recommend the best mixture seen. The no-model baseline.

    Parameters:
        concentrations: Dirichlet strengths, one picked at random per draw (low = sparse, high = near the
            prior)
    """

    name = "random"

    def __init__(self, concentrations: Sequence[float] = (0.3, 1.0, 3.0, 10.0)) -> None:
        self.concentrations = [float(c) for c in concentrations]

    def propose(
        self,
        space: SearchSpace,
        history: Sequence[Observation],
        n: int,
        seed: int,
        pending: Sequence[Candidate] = (),
    ) -> list[Candidate]:
        f = space.target_fidelity
        lo, hi = space.bounds(f.tokens)
        rng = np.random.default_rng(seed)
        w = simplex.dirichlet(rng, space.natural() * space.k, self.concentrations, n, lo, hi)
        return [Candidate(tuple(float(x) for x in row), f.name) for row in w]

    def recommend(self, space: SearchSpace, history: Sequence[Observation]) -> Recommendation:
        lo, hi = space.bounds(space.recommend_budget())
        obs = [
            o
            for o in at_fidelity(history, space.target_fidelity.name)
            if simplex.is_feasible(np.asarray(o.weights), lo, hi)[0]
        ]
        if not obs:
            return Natural().recommend(space, history)
        best = min(obs, key=lambda o: o.target_loss)
        return Recommendation(best.weights, best.target_loss, None, {"n_observed": float(len(obs))})
