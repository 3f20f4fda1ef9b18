"""The contract every registered strategy keeps (Optuna-style: one suite, all samplers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from strategies import Fidelity, Observation, SearchSpace, StrategyError, available_strategies, get_strategy
from strategies.simplex import is_feasible

STRATEGIES = available_strategies()


def space() -> SearchSpace:
    """Four domains, one of them small enough that its epoch cap binds at the larger budget."""
    return SearchSpace(
        domains=("web", "code", "books", "tiny"),
        tokens=(10_000_000, 3_000_000, 2_000_000, 20_000),
        target={"web": 0.5, "code": 0.5},
        fidelities=(Fidelity("lo", 200_000, 1.0), Fidelity("hi", 1_000_000, 5.0)),
        lower=(0.0, 0.05, 0.0, 0.0),
        upper=(1.0, 1.0, 0.6, 1.0),
        max_epochs=2.0,
    )


def law(w: np.ndarray) -> dict[str, float]:
    return {d: 3.0 - np.log1p(4 * w[i]) for i, d in enumerate(("web", "code", "books", "tiny"))}


def history(sp: SearchSpace, n: int = 12, seed: int = 0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        fid = sp.fidelities[i % 2]
        lo, hi = sp.bounds(fid.tokens)
        w = np.clip(rng.dirichlet(np.ones(sp.k)), lo, hi)
        from strategies.simplex import project

        w = project(w, lo, hi)[0]
        losses = law(w)
        out.append(Observation(tuple(w), fid.name, losses, sp.target_loss(losses), fid.cost))
    return out


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("n_hist", [0, 12])
def test_proposals_are_feasible_and_reproducible(name: str, n_hist: int) -> None:
    sp = space()
    hist = history(sp, n_hist)
    strategy = get_strategy(name)
    first = strategy.propose(sp, hist, 3, seed=7)
    assert 1 <= len(first) <= 3
    for cand in first:
        fid = sp.fidelity(cand.fidelity)
        lo, hi = sp.bounds(fid.tokens)
        assert is_feasible(np.asarray(cand.weights), lo, hi, tol=1e-6)[0], (name, cand)
    assert get_strategy(name).propose(sp, hist, 3, seed=7) == first


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("n_hist", [0, 12])
def test_recommendation_respects_caps_at_target_budget(name: str, n_hist: int) -> None:
    sp = space()
    rec = get_strategy(name).recommend(sp, history(sp, n_hist))
    lo, hi = sp.bounds(sp.recommend_budget())
    assert is_feasible(np.asarray(rec.weights), lo, hi, tol=1e-6)[0], (name, rec.weights)
    json.dumps({k: v for k, v in rec.diagnostics.items()})  # stored on a JSON column
    if rec.predicted_loss is not None:
        assert np.isfinite(rec.predicted_loss)


def test_unknown_name_and_bad_params_are_strategy_errors() -> None:
    with pytest.raises(StrategyError, match="unknown strategy"):
        get_strategy("nope")
    with pytest.raises(StrategyError, match="bad parameters"):
        get_strategy("uniform", not_a_param=1)


def test_registering_a_duplicate_name_fails() -> None:
    from strategies import register

    with pytest.raises(StrategyError, match="already registered"):
        register("uniform")(lambda: None)  # type: ignore[arg-type,return-value]


def test_infeasible_caps_are_a_clear_error() -> None:
    sp = SearchSpace(("a", "b"), (10, 10), {"a": 1.0}, (Fidelity("x", 1_000_000, 1.0),), max_epochs=1)
    with pytest.raises(StrategyError, match="no mixture fits"):
        get_strategy("uniform").propose(sp, [], 1, seed=0)
