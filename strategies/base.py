"""Types shared by every strategy, and the one protocol they implement.

Call order (the loop in ``app/services/loop.py`` and the offline CLI both follow it):

1. ``propose(space, history, n, seed, pending)`` any number of times; each call sees every finished run
   so far and the runs still in flight (``pending``), and returns at most ``n`` candidates — fewer, or none,
   when it must wait for results (an empty answer with nothing in flight means the strategy is done).
2. ``recommend(space, history)`` whenever a fresh answer is wanted (after each batch, and at the end).

Strategies hold no state between calls: everything they need is in the arguments, so a crashed worker
loses nothing and the same history always gives the same answer for the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


class StrategyError(ValueError):
    """A strategy cannot do what was asked (bad parameters, infeasible space, too little history)."""


@dataclass(frozen=True)
class Fidelity:
    """One proxy setting: a model preset trained for ``tokens`` tokens, costing ``cost`` FLOPs."""

    name: str
    tokens: int
    cost: float
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchSpace:
    """The simplex over ``domains`` with per-domain bounds and epoch caps.

    ``tokens[i]`` is how many training tokens domain i really has. At a budget of D tokens a domain
    cannot supply more than ``max_epochs * tokens[i]``, so ``w_i <= max_epochs * tokens[i] / D``.
    ``fidelities`` are ordered cheapest first; the last one is the target fidelity.
    ``target_tokens`` is the user's real training budget, used to cap recommendations.
    ``budget`` is the search budget in target-fidelity-equivalent runs, where the caller has one.
    """

    domains: tuple[str, ...]
    tokens: tuple[int, ...]
    target: Mapping[str, float]
    fidelities: tuple[Fidelity, ...]
    lower: tuple[float, ...] = ()
    upper: tuple[float, ...] = ()
    max_epochs: float = 4.0
    target_tokens: int | None = None
    budget: float | None = None

    def __post_init__(self) -> None:
        k = len(self.domains)
        if k < 2:
            raise StrategyError("a search space needs at least two domains")
        if len(set(self.domains)) != k:
            raise StrategyError("domain names must be unique")
        if len(self.tokens) != k:
            raise StrategyError(f"got {len(self.tokens)} token counts for {k} domains")
        if not self.fidelities:
            raise StrategyError("a search space needs at least one fidelity")
        if not self.target or not math.isclose(sum(self.target.values()), 1.0, abs_tol=1e-6):
            raise StrategyError("target weights must be non-empty and sum to 1")
        object.__setattr__(self, "lower", tuple(self.lower) or (0.0,) * k)
        object.__setattr__(self, "upper", tuple(self.upper) or (1.0,) * k)
        if len(self.lower) != k or len(self.upper) != k:
            raise StrategyError("lower and upper bounds need one value per domain")
        if sum(self.lower) > 1 + 1e-9:
            raise StrategyError(f"lower bounds sum to {sum(self.lower):.4g}; they must sum to at most 1")

    @property
    def k(self) -> int:
        return len(self.domains)

    @property
    def target_fidelity(self) -> Fidelity:
        return self.fidelities[-1]

    def fidelity(self, name: str) -> Fidelity:
        for f in self.fidelities:
            if f.name == name:
                return f
        raise StrategyError(f"unknown fidelity {name!r}; known: {[f.name for f in self.fidelities]}")

    def natural(self) -> np.ndarray:
        """Token-proportional weights."""
        t = np.asarray(self.tokens, dtype=float)
        return t / t.sum()

    def caps(self, budget_tokens: int | None) -> np.ndarray:
        """Per-domain upper bounds at a training budget: user bound and epoch cap, whichever is lower."""
        upper = np.asarray(self.upper, dtype=float)
        if not budget_tokens:
            return upper
        epoch_cap = self.max_epochs * np.asarray(self.tokens, dtype=float) / float(budget_tokens)
        return np.minimum(upper, epoch_cap)

    def bounds(self, budget_tokens: int | None) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` at a budget; raises if no mixture satisfies them."""
        lo, hi = np.asarray(self.lower, dtype=float), self.caps(budget_tokens)
        if np.any(hi < lo - 1e-12) or hi.sum() < 1 - 1e-9:
            raise StrategyError(
                f"no mixture fits at {budget_tokens} tokens: the epoch caps and bounds allow at most "
                f"{hi.sum():.3f} of the budget (raise max_epochs, add data, or lower the budget)"
            )
        return lo, hi

    def recommend_budget(self) -> int:
        """Token budget whose caps a recommendation must respect."""
        return self.target_tokens or self.target_fidelity.tokens

    def target_loss(self, losses: Mapping[str, float]) -> float:
        """Target-weighted loss from per-domain losses."""
        missing = [d for d in self.target if d not in losses]
        if missing:
            raise StrategyError(f"losses lack target domains {missing}")
        return float(sum(w * losses[d] for d, w in self.target.items()))


@dataclass(frozen=True)
class Observation:
    """A finished run: where it was trained, what it cost, and what it scored."""

    weights: tuple[float, ...]
    fidelity: str
    losses: Mapping[str, float]
    target_loss: float
    cost: float = 0.0


@dataclass(frozen=True)
class Candidate:
    """A mixture to train next, at a fidelity."""

    weights: tuple[float, ...]
    fidelity: str


@dataclass(frozen=True)
class Recommendation:
    """The mixture a strategy would use at scale, with what it expects it to score."""

    weights: tuple[float, ...]
    predicted_loss: float | None = None
    std: float | None = None
    diagnostics: Mapping[str, float | str] = field(default_factory=dict)  # numbers, and names (a model)
    alternatives: tuple[tuple[tuple[float, ...], float], ...] = ()


@runtime_checkable
class Strategy(Protocol):
    """Propose mixtures to try; recommend the best one. See the module docstring for the call order."""

    name: str

    def propose(
        self,
        space: SearchSpace,
        history: Sequence[Observation],
        n: int,
        seed: int,
        pending: Sequence[Candidate] = (),
    ) -> list[Candidate]: ...

    def recommend(self, space: SearchSpace, history: Sequence[Observation]) -> Recommendation: ...


def at_fidelity(history: Sequence[Observation], fidelity: str) -> list[Observation]:
    """The observations made at one fidelity."""
    return [o for o in history if o.fidelity == fidelity]


def best_observed(history: Sequence[Observation], fidelity: str) -> Observation | None:
    """Lowest target loss at a fidelity, or None."""
    obs = at_fidelity(history, fidelity)
    return min(obs, key=lambda o: o.target_loss) if obs else None
