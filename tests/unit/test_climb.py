"""CLIMB: budget split over rounds, round boundaries, feasibility under caps, restart safety, exploitation."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import Fidelity, Observation, SearchSpace, StrategyError, get_strategy
from strategies.climb import Climb, round_sizes
from strategies.simplex import is_feasible

DOMAINS = ("a", "b", "c", "d")
# Synthetic mixing law L(w) = c + Σ k_i exp(t_i w_i): convex, decreasing in every weight.
K, T = np.array([1.0, 0.8, 0.6, 1.2]), np.array([-3.0, -5.0, -2.0, -4.0])
FAST = {"pool_size": 2000, "folds": 3, "regressor_params": {"n_estimators": 200}}


def law(w: np.ndarray) -> float:
    return float(2.0 + np.sum(K * np.exp(T * np.asarray(w))))


def make_space(**kw) -> SearchSpace:
    kw.setdefault("fidelities", (Fidelity("s", 1000, 1.0),))
    return SearchSpace(DOMAINS, kw.pop("tokens", (1000, 1000, 1000, 1000)), {"eval": 1.0}, **kw)


def observe(cands) -> list[Observation]:
    return [Observation(c.weights, c.fidelity, {"eval": law(c.weights)}, law(c.weights)) for c in cands]


def run_loop(strategy: Climb, space: SearchSpace, batch: int, seed: int = 0) -> list[list[Observation]]:
    """Ask for ``batch`` runs at a time, 'train' them all, repeat until the strategy stops proposing."""
    history: list[Observation] = []
    calls: list[list[Observation]] = []
    for _ in range(100):
        cands = strategy.propose(space, history, batch, seed=seed + len(history))
        if not cands:
            return calls
        calls.append(observe(cands))
        history += calls[-1]
    raise AssertionError("the loop never stopped")


@pytest.mark.parametrize(
    ("budget", "split", "sizes"),
    [
        (28, (4, 2, 1), [16, 8, 4]),
        (7, (4, 2, 1), [4, 2, 1]),
        (3, (4, 2, 1), [1, 1, 1]),
        (10, (1, 1, 1), [4, 3, 3]),
        (4, (10, 1, 1), [2, 1, 1]),
        (9, (1,), [9]),
    ],
)
def test_round_sizes_follow_the_split_and_sum_to_the_budget(budget, split, sizes) -> None:
    assert round_sizes(budget, split) == sizes


def test_bad_budget_or_split_is_a_strategy_error() -> None:
    with pytest.raises(StrategyError, match="cannot cover"):
        Climb(budget=2, split=(4, 2, 1))
    with pytest.raises(StrategyError, match="positive"):
        get_strategy("climb", split=(1, 0))


def test_loop_spends_exactly_its_budget_in_the_configured_split() -> None:
    space = make_space()
    calls = run_loop(Climb(budget=14, split=(4, 2, 1), **FAST), space, batch=5)
    # Batches of 5 never cross a round boundary: round 1 (8 runs) ends with a short batch of 3.
    assert [len(c) for c in calls] == [5, 3, 4, 2]
    history = [o for c in calls for o in c]
    assert len(history) == 14
    assert Climb(budget=14, **FAST).propose(space, history, 5, seed=1) == []


def test_runs_in_flight_count_towards_their_round_and_the_next_round_waits() -> None:
    """A loop keeping 3 runs in flight, finishing one at a time, passes them as ``pending``."""
    space = make_space()
    climb = Climb(budget=14, split=(4, 2, 1), **FAST)
    history: list[Observation] = []
    in_flight: list = []
    created_at: list[tuple[int, int]] = []  # (round, finished runs) when each run was created
    for step in range(40):
        st = climb.state(space, history, in_flight)
        new = climb.propose(space, history, 3 - len(in_flight), seed=step, pending=in_flight)
        assert len(new) <= st.remaining
        created_at += [(st.round, len(history))] * len(new)
        in_flight += new
        if not in_flight:
            break
        history += observe([in_flight.pop(0)])
    rounds = [r for r, _ in created_at]
    assert [rounds.count(r) for r in range(3)] == [8, 4, 2] and len(history) == 14
    assert all(done >= 8 for r, done in created_at if r == 1)
    assert all(done >= 12 for r, done in created_at if r == 2)
    W = np.array([o.weights for o in history])
    assert (np.abs(W[:, None] - W[None]).sum(axis=2) + 9 * np.eye(14)).min() >= climb.min_distance


def test_rounds_are_derived_from_history_at_the_search_fidelity() -> None:
    space = make_space(fidelities=(Fidelity("xs", 500, 0.2), Fidelity("s", 1000, 1.0)))
    climb = Climb(budget=7, **FAST)
    other = [Observation((0.25,) * 4, "xs", {"eval": 3.0}, 3.0)] * 5  # runs elsewhere do not count
    assert climb.state(space, other).round == 0
    assert len(climb.propose(space, other, 10, seed=0)) == 4
    mine = observe(climb.propose(space, [], 4, seed=0))
    st = climb.state(space, other + mine)
    assert (st.round, st.remaining, st.done) == (1, 2, 4)


def test_proposals_are_feasible_under_epoch_caps_and_apart_from_history() -> None:
    # At 1000 tokens and 2 epochs, domain d (50 tokens) may take at most 10% of a run.
    space = make_space(tokens=(1000, 1000, 400, 50), max_epochs=2.0, target_tokens=4000)
    lo, hi = space.bounds(1000)
    climb = Climb(budget=14, min_distance=0.02, **FAST)
    calls = run_loop(climb, space, batch=14)
    W = np.array([o.weights for c in calls for o in c])
    assert is_feasible(W, lo, hi).all() and W[:, 3].max() <= 0.1 + 1e-9
    gaps = np.abs(W[:, None, :] - W[None, :, :]).sum(axis=2) + np.eye(len(W)) * 9
    assert gaps.min() >= 0.02
    rec = climb.recommend(space, [o for c in calls for o in c])
    lo_t, hi_t = space.bounds(space.recommend_budget())  # the cap is 2.5% at the 4000-token target
    assert is_feasible(np.asarray(rec.weights), lo_t, hi_t)[0] and rec.weights[3] <= 0.025 + 1e-9
    assert rec.diagnostics["climb_rounds_done"] == 3 and rec.diagnostics["climb_runs"] == 14


def test_same_history_and_seed_give_the_same_proposals_in_every_round() -> None:
    """A worker restarting between rounds rebuilds the same state from the stored runs."""
    space = make_space()
    calls = run_loop(Climb(budget=14, **FAST), space, batch=14)
    history: list[Observation] = []
    for call in calls:
        first = Climb(budget=14, **FAST).propose(space, history, 14, seed=11)
        again = Climb(budget=14, **FAST).propose(space, history, 14, seed=11)
        assert first == again and len(first) == len(call)
        history += call
    assert Climb(budget=14, **FAST).propose(space, [], 4, seed=1) != Climb(budget=14, **FAST).propose(
        space, [], 4, seed=2
    )


def test_later_rounds_exploit_the_predictor() -> None:
    space = make_space()
    calls = run_loop(Climb(budget=28, **FAST), space, batch=28)
    assert [len(c) for c in calls] == [16, 8, 4]
    mean_loss = [np.mean([o.target_loss for o in c]) for c in calls]
    assert mean_loss[1] < mean_loss[0] and mean_loss[2] < mean_loss[0]
    best_explored = min(o.target_loss for o in calls[0])
    assert min(o.target_loss for c in calls[1:] for o in c) < best_explored
    rec = Climb(budget=28, **FAST).recommend(space, [o for c in calls for o in c])
    assert law(rec.weights) < best_explored


def test_too_few_runs_to_fit_falls_back_to_sampling() -> None:
    space = make_space()
    climb = Climb(budget=3, split=(1, 1, 1), **FAST)
    history = observe(climb.propose(space, [], 5, seed=0))
    assert len(history) == 1
    nxt = climb.propose(space, history, 5, seed=1)
    assert len(nxt) == 1 and nxt[0].weights != history[0].weights
