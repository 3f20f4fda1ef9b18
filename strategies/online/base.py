"""The contract every online mixing strategy implements, the signal it consumes, and its registry.

Call order (an online session on the service, or :class:`proxy_models.online.OnlineController`):

1. ``state = strategy.start(space, seed)``; train on ``strategy.weights(state)``.
2. Every so often, measure a :class:`Signal` and call ``state, weights = strategy.update(state, signal)``;
   train on ``weights`` until the next update.

The state is a plain JSON object (lists, floats, ints, strings) that carries everything the strategy needs,
domains and bounds included, so it can live on a database row and a session survives a restart:
``update(json.loads(json.dumps(state)), signal)`` gives exactly what ``update(state, signal)`` gives.
The strategy object itself holds only its hyper-parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from strategies import simplex
from strategies.base import SearchSpace, StrategyError
from strategies.registry import Registry

OnlineState = dict[str, Any]


@dataclass(frozen=True)
class Signal:
    """What a training run reports at one update.

    ``losses`` holds the per-domain loss now (training or held-out; the training domains and, for
    strategies that optimise the target, the target's domains). ``alignment`` is each training domain's
    gradient alignment with the target gradient (DGA). ``reference_losses`` are a reference model's
    per-domain losses at this point (DoReMi).
    """

    step: int
    losses: Mapping[str, float]
    alignment: Mapping[str, float] | None = None
    reference_losses: Mapping[str, float] | None = None


@runtime_checkable
class OnlineStrategy(Protocol):
    """Changes the mixture during one training run. See the module docstring for the call order."""

    name: str
    signals: tuple[str, ...]  # which Signal fields update reads: "losses", "alignment"

    def start(self, space: SearchSpace, seed: int = 0) -> OnlineState: ...

    def weights(self, state: OnlineState) -> tuple[float, ...]: ...

    def update(self, state: OnlineState, signal: Signal) -> tuple[OnlineState, tuple[float, ...]]: ...


# ---------------------------------------------------------------- helpers shared by the strategies


def initial_state(
    name: str, space: SearchSpace, seed: int, budget_tokens: int | None, init: str
) -> OnlineState:
    """Fields every online state has: the domains, the capped bounds, the target, the first mixture."""
    budget = budget_tokens if budget_tokens is not None else space.recommend_budget()
    lo, hi = space.bounds(budget)
    if init == "uniform":
        start = np.full(space.k, 1.0 / space.k)
    elif init == "natural":
        start = space.natural()
    else:
        raise StrategyError(f"init must be 'uniform' or 'natural', got {init!r}")
    return {
        "strategy": name,
        "domains": list(space.domains),
        "lower": to_list(lo),
        "upper": to_list(hi),
        "target": {d: float(w) for d, w in space.target.items()},
        "seed": int(seed),
        "step": None,
        "updates": 0,
        "weights": to_list(simplex.project(start, lo, hi)[0]),
    }


def to_list(x: np.ndarray | Sequence[float]) -> list[float]:
    """Plain Python floats, so ``json.dumps`` round-trips them bit for bit."""
    return [float(v) for v in np.asarray(x, dtype=float).ravel()]


def project(state: OnlineState, w: np.ndarray) -> np.ndarray:
    """``w`` moved onto the session's capped simplex."""
    lo, hi = np.asarray(state["lower"], dtype=float), np.asarray(state["upper"], dtype=float)
    return simplex.project(np.asarray(w, dtype=float), lo, hi)[0]


def vector(values: Mapping[str, float] | None, names: Sequence[str], what: str) -> np.ndarray:
    """``values`` as an array in ``names`` order; missing or non-finite entries are an error."""
    if values is None:
        raise StrategyError(f"the signal carries no {what}")
    missing = [n for n in names if n not in values]
    if missing:
        raise StrategyError(f"{what} lack domains {missing}")
    out = np.array([float(values[n]) for n in names])
    if not np.all(np.isfinite(out)):
        bad = [n for n, v in zip(names, out, strict=True) if not math.isfinite(v)]
        raise StrategyError(f"{what} are not finite for {bad}")
    return out


def check_state(name: str, state: OnlineState, signal: Signal) -> None:
    """Reject a state of another strategy and signals that go back in time (a stale replay)."""
    if state.get("strategy") != name:
        raise StrategyError(f"this state belongs to strategy {state.get('strategy')!r}, not {name!r}")
    if state["step"] is not None and signal.step < state["step"]:
        raise StrategyError(f"signal step {signal.step} is before the last update's step {state['step']}")


def stamped(state: OnlineState, signal: Signal) -> OnlineState:
    """A copy of ``state`` that records this update; strategies never mutate their input state."""
    new = dict(state)
    new["step"] = int(signal.step)
    new["updates"] = int(state["updates"]) + 1
    return new


def exponentiated_step(w: np.ndarray, direction: np.ndarray, eta: float) -> np.ndarray:
    """Mirror-descent step on the simplex: ``w * exp(eta * direction)``, renormalised (in log space)."""
    logits = np.log(np.clip(w, 1e-12, None)) + eta * direction
    logits -= logits.max()
    out = np.exp(logits)
    return out / out.sum()


# ---------------------------------------------------------------- registry

ONLINE_STRATEGIES: Registry[OnlineStrategy] = Registry(
    "online strategy",
    {
        "aioli": "strategies.online.aioli:Aioli",
        "dga": "strategies.online.dga:DGA",
        "doremi": "strategies.online.doremi:DoReMi",
    },
)
register_online = ONLINE_STRATEGIES.register
available_online_strategies = ONLINE_STRATEGIES.available
get_online_strategy = ONLINE_STRATEGIES.get
