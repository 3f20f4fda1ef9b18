"""RegMix: proposals, fit + CV helpers, optimum recovery, caps and bounds, fallbacks, multi-fidelity."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from strategies import Fidelity, Observation, SearchSpace, Strategy, StrategyError, get_strategy, trust
from strategies.regmix import RegMix
from strategies.regression import combine, cross_validate, fit_regressor, fit_with_cv, kfold_indices
from strategies.simplex import is_feasible, unseen

DOMAINS = ("a", "b", "c", "d")
# Synthetic mixing law L(w) = c + Σ k_i exp(t_i w_i): convex, decreasing in every weight.
K, T, C = np.array([1.0, 0.8, 0.6, 1.2]), np.array([-3.0, -5.0, -2.0, -4.0]), 2.0


def law(w: np.ndarray) -> np.ndarray:
    return C + np.sum(K * np.exp(T * np.atleast_2d(w)), axis=1)


def law_minimiser() -> np.ndarray:
    res = minimize(
        lambda w: law(w)[0],
        np.full(4, 0.25),
        method="SLSQP",
        bounds=[(0, 1)] * 4,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
        options={"ftol": 1e-12},
    )
    return res.x


def make_space(tokens: tuple[int, ...] = (100, 100, 100, 100), **kw) -> SearchSpace:
    kw.setdefault("fidelities", (Fidelity("s", 100, 1.0),))
    return SearchSpace(DOMAINS, tokens, kw.pop("target", {"eval": 1.0}), **kw)


def observe(weights: list[tuple[float, ...]], fidelity: str, seed: int = 0, noise: float = 0.005):
    rng = np.random.default_rng(seed)
    out = []
    for w in weights:
        loss = float(law(np.asarray(w))[0] + rng.normal(0, noise))
        out.append(Observation(tuple(w), fidelity, {"eval": loss}, loss))
    return out


# ---- proposals ---------------------------------------------------------------------------------
def test_proposals_are_feasible_distinct_floored_and_seeded() -> None:
    space = make_space(tokens=(1000, 500, 200, 20), fidelities=(Fidelity("s", 1000, 1.0),), max_epochs=4)
    lo, hi = space.bounds(1000)
    history = observe([c.weights for c in RegMix().propose(space, [], 5, seed=99)], "s")
    cands = RegMix(min_weight=0.01).propose(space, history, 40, seed=3)
    W = np.array([c.weights for c in cands])
    assert len(cands) == 40 and all(c.fidelity == "s" for c in cands)
    assert is_feasible(W, lo, hi).all()
    assert hi[3] == pytest.approx(0.08) and W[:, 3].max() <= 0.08 + 1e-9  # the epoch cap binds
    assert len({tuple(np.round(w, 4)) for w in W}) == 40
    assert not {tuple(np.round(o.weights, 4)) for o in history} & {tuple(np.round(w, 4)) for w in W}
    assert np.all((W == 0) | (W >= 0.01 - 1e-12))
    assert (W == 0).any()  # sparse concentrations do produce zeroed domains
    assert RegMix(min_weight=0.01).propose(space, history, 40, seed=3) == cands
    assert RegMix(min_weight=0.01).propose(space, history, 40, seed=4) != cands
    # The same seed over a history holding its own draws: every one of them is skipped.
    again = RegMix(min_weight=0.01).propose(
        space, history + observe([c.weights for c in cands], "s"), 40, seed=3
    )
    assert len(again) == 40 and not {c.weights for c in cands} & {c.weights for c in again}


def test_unseen_compares_rows_after_rounding() -> None:
    seen = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    w = np.array([[0.5, 0.5 + 1e-6, 0.0, 0.0], [0.25, 0.25, 0.25 + 1e-3, 0.25 - 1e-3], [0.0, 0.0, 0.5, 0.5]])
    assert unseen(w, seen).tolist() == [False, True, True]
    assert unseen(w, seen[:0]).all()


def test_fidelity_param_picks_where_to_propose() -> None:
    space = make_space(fidelities=(Fidelity("xs", 200, 1.0), Fidelity("s", 100, 5.0)), max_epochs=1)
    cands = RegMix(fidelity="xs").propose(space, [], 10, seed=0)
    assert {c.fidelity for c in cands} == {"xs"}
    assert is_feasible(np.array([c.weights for c in cands]), *space.bounds(200)).all()
    assert {c.fidelity for c in RegMix().propose(space, [], 3, seed=0)} == {"s"}


# ---- regression helpers ------------------------------------------------------------------------
def test_kfold_indices_partition_the_rows() -> None:
    splits = kfold_indices(23, 5, seed=1)
    tests = np.concatenate([te for _, te in splits])
    assert sorted(tests.tolist()) == list(range(23))
    assert all(set(tr).isdisjoint(te) and len(tr) + len(te) == 23 for tr, te in splits)
    assert [te.tolist() for _, te in kfold_indices(23, 5, seed=1)] == [te.tolist() for _, te in splits]


def test_cross_validation_scores_a_learnable_and_a_random_target() -> None:
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(4), 120)
    exact = cross_validate(X, X @ np.array([1.0, 2.0, 3.0, 4.0]), model="linear")
    assert exact.spearman > 0.999 and exact.mae < 1e-9 and exact.n_train == 120 and exact.folds == 5
    noise = cross_validate(X, rng.normal(size=120), model="lightgbm", params={"n_estimators": 200})
    assert abs(noise.spearman) < 0.4
    smooth = cross_validate(X, law(X), model="lightgbm", params={"n_estimators": 500})
    assert smooth.spearman > 0.9
    assert set(smooth.diagnostics()) == {"cv_spearman", "cv_mae", "n_train", "cv_folds"}


def test_combined_ensembles_predict_the_weighted_sum() -> None:
    rng = np.random.default_rng(1)
    X = rng.dirichlet(np.ones(3), 40)
    ya, yb = X @ [1.0, 2.0, 0.0], X @ [0.0, 1.0, 3.0]
    ea, eb = fit_with_cv(X, ya, "linear"), fit_with_cv(X, yb, "linear")
    both = combine([ea, eb], [0.25, 0.75], 0.25 * ya + 0.75 * yb)
    np.testing.assert_allclose(both.predict(X[:5]), 0.25 * ya[:5] + 0.75 * yb[:5], atol=1e-9)
    mean, std = both.predict_with_std(X[:5])
    assert mean.shape == std.shape == (5,) and np.all(std >= 0)
    assert both.report.spearman > 0.999


def test_bad_model_and_bad_data_are_strategy_errors() -> None:
    with pytest.raises(StrategyError, match="unknown regressor"):
        fit_regressor(np.eye(3), np.ones(3), model="xgboost")
    with pytest.raises(StrategyError, match="finite"):
        fit_regressor(np.eye(3), np.array([1.0, np.nan, 2.0]), model="linear")
    with pytest.raises(StrategyError, match="unknown regressor"):
        get_strategy("regmix", model="xgboost")


# ---- recommend ---------------------------------------------------------------------------------
def test_recovers_the_optimum_of_a_synthetic_mixing_law() -> None:
    space, w_star = make_space(), law_minimiser()
    strategy = get_strategy("regmix", n_search=2000)
    assert isinstance(strategy, Strategy)
    history = observe([c.weights for c in strategy.propose(space, [], 100, seed=0)], "s")
    rec = strategy.recommend(space, history)
    gap = law(space.natural())[0] - law(w_star)[0]
    assert law(np.array(rec.weights))[0] - law(w_star)[0] < 0.25 * gap
    assert np.abs(np.array(rec.weights) - w_star).sum() < 0.2
    assert rec.predicted_loss == pytest.approx(law(w_star)[0], abs=0.05)
    assert rec.std is not None and rec.std >= 0
    assert rec.diagnostics["cv_spearman"] > 0.95 and rec.diagnostics["n_train"] == 100
    assert rec.diagnostics["predicted_prior"] > rec.predicted_loss
    assert 1 <= len(rec.alternatives) <= 5
    assert all(loss >= rec.predicted_loss - 0.05 for _, loss in rec.alternatives)


def test_linear_model_finds_the_capped_vertex() -> None:
    # Loss falls fastest with d, then a; d is capped at 4 * 10 / 100 = 0.4 of the budget.
    space = make_space(tokens=(1000, 1000, 1000, 10), max_epochs=4, target_tokens=100)
    rng = np.random.default_rng(0)
    W = rng.dirichlet(np.ones(4), 30)
    losses = 5 - W @ np.array([2.0, 1.0, 0.5, 3.0])
    history = [Observation(tuple(w), "s", {"eval": y}, y) for w, y in zip(W, losses, strict=True)]
    rec = RegMix(model="linear", n_search=2000).recommend(space, history)
    np.testing.assert_allclose(rec.weights, [0.6, 0, 0, 0.4], atol=0.02)


def random_space(rng: np.random.Generator) -> SearchSpace:
    """A feasible space whose epoch caps, lower and upper bounds often bind (redrawn until feasible)."""
    while True:
        k = int(rng.integers(3, 7))
        domains = tuple(f"d{i}" for i in range(k))
        tokens = tuple(int(t) for t in rng.integers(10, 10_000, k))
        max_epochs = float(rng.uniform(0.5, 4))
        budget = int(max_epochs * sum(tokens) / rng.uniform(1.05, 2.5))  # caps sum to 1.05..2.5
        try:
            space = SearchSpace(
                domains,
                tokens,
                {domains[0]: 0.5, domains[-1]: 0.5},
                (Fidelity("s", budget // 2, 1.0),),
                lower=tuple(np.where(rng.random(k) < 0.3, rng.uniform(0, 0.5 / k, k), 0.0)),
                upper=tuple(np.where(rng.random(k) < 0.3, rng.uniform(1.5 / k, 1.0, k), 1.0)),
                max_epochs=max_epochs,
                target_tokens=budget,
            )
            space.bounds(space.recommend_budget())
            space.bounds(space.target_fidelity.tokens)
            return space
        except StrategyError:
            continue


@pytest.mark.parametrize("case", range(12))
def test_recommendations_never_break_caps_or_bounds(case: int) -> None:
    rng = np.random.default_rng(case)
    space = random_space(rng)
    domains, k = space.domains, space.k
    lo, hi = space.bounds(space.recommend_budget())
    fast_trees = {"model": "lightgbm", "regressor_params": {"n_estimators": 300}}
    strategy = RegMix(**(fast_trees if case % 4 == 0 else {"model": "linear"}), n_search=500, top_k=3)
    coef = rng.uniform(-1, 1, k)
    history = []
    for c in strategy.propose(space, [], 15, seed=case):
        losses = {d: float(3 + coef[i] * c.weights[i] + rng.normal(0, 0.01)) for i, d in enumerate(domains)}
        history.append(Observation(c.weights, "s", losses, space.target_loss(losses)))
    rec = strategy.recommend(space, history)
    assert is_feasible(np.array(rec.weights), lo, hi, tol=1e-6)[0], (rec.weights, lo, hi)
    for weights, _ in rec.alternatives:
        assert is_feasible(np.array(weights), lo, hi, tol=1e-6)[0]


def test_target_can_change_without_new_runs() -> None:
    rng = np.random.default_rng(2)
    W = rng.dirichlet(np.ones(4), 40)
    history = [Observation(tuple(w), "s", {"ea": 4 - 2 * w[0], "eb": 4 - 2 * w[1]}, 4 - 2 * w[0]) for w in W]
    for target, best in (({"ea": 1.0}, 0), ({"eb": 1.0}, 1)):
        rec = RegMix(model="linear", n_search=1000).recommend(make_space(target=target), history)
        assert int(np.argmax(rec.weights)) == best
        assert rec.diagnostics["per_domain_models"] == 1.0


def test_too_few_runs_fall_back_and_say_so() -> None:
    space = make_space()
    history = observe([(0.7, 0.1, 0.1, 0.1), (0.25, 0.25, 0.25, 0.25), (0.1, 0.1, 0.1, 0.7)], "s")
    rec = RegMix().recommend(space, history)
    best = min(history, key=lambda o: o.target_loss)
    assert rec.weights == best.weights and rec.diagnostics["fallback_best_observed"] == 1.0
    empty = RegMix().recommend(space, [])
    assert empty.diagnostics["fallback_natural"] == 1.0
    np.testing.assert_allclose(empty.weights, space.natural())


def test_fits_the_highest_fidelity_with_enough_runs() -> None:
    space = make_space(fidelities=(Fidelity("xs", 100, 1.0), Fidelity("s", 100, 4.0)))
    cands = RegMix().propose(space, [], 24, seed=5)
    history = observe([c.weights for c in cands[:20]], "xs") + observe([c.weights for c in cands[20:]], "s")
    rec = RegMix(model="linear", n_search=500).recommend(space, history)
    assert rec.diagnostics["fit_fidelity_index"] == 0.0 and rec.diagnostics["n_train"] == 20
    history += observe([c.weights for c in RegMix().propose(space, history, 6, seed=6)], "s")
    rec = RegMix(model="linear", n_search=500).recommend(space, history)
    assert rec.diagnostics["fit_fidelity_index"] == 1.0 and rec.diagnostics["n_train"] == 10
    rec = RegMix(model="linear", n_search=500, fidelity="xs").recommend(space, history)
    assert rec.diagnostics["fit_fidelity_index"] == 0.0


def test_constructor_rejects_bad_params() -> None:
    for bad in ({"concentrations": []}, {"min_weight": 0.7}, {"folds": 1}, {"temperature": 0}):
        with pytest.raises(StrategyError):
            RegMix(**bad)


def test_auto_keeps_the_best_cross_validated_model_and_says_which() -> None:
    space = make_space()
    strategy = get_strategy("regmix", n_search=500)
    history = observe([c.weights for c in strategy.propose(space, [], 60, seed=1)], "s")
    fitted = strategy.fit(space, history)
    assert fitted is not None
    scores = {k.removeprefix("cv_spearman_"): v for k, v in fitted.candidates.items()}
    assert set(scores) == {"lightgbm", "gp", "linear", "ensemble"}
    assert fitted.model == max(scores, key=scores.__getitem__)
    assert fitted.ensemble.report.spearman == pytest.approx(scores[fitted.model])
    rec = strategy.recommend(space, history)
    assert rec.diagnostics["model"] == fitted.model
    fixed = get_strategy("regmix", model="linear", n_search=500).fit(space, history)
    assert fixed is not None and fixed.model == "linear" and fixed.candidates == {}
    assert fixed.ensemble.report.spearman == pytest.approx(scores["linear"])


def test_the_recommendation_stays_within_reach_of_the_runs() -> None:
    """A loss linear in the weights, falling fastest with domain a: a linear fit's optimum is the vertex
    a, and runs near the centre of the simplex cannot vouch for it."""
    space = make_space()
    X = np.random.default_rng(2).dirichlet(np.full(4, 30.0), 20)
    y = 3.0 - X @ np.array([1.0, 0.5, 0.3, 0.2]) + np.random.default_rng(0).normal(0, 0.002, len(X))
    history = [Observation(tuple(w), "s", {"eval": v}, v) for w, v in zip(X, y, strict=True)]
    rec = get_strategy("regmix", model="linear", n_search=2000).recommend(space, history)
    nearest = np.abs(X - np.asarray(rec.weights)).sum(axis=1).min()
    assert rec.diagnostics["search_radius_l1"] == pytest.approx(trust.far_limit(X))
    assert nearest <= trust.far_limit(X) + 1e-9
    assert rec.weights[0] > max(X[:, 0])  # it still moves toward the optimum, as far as the runs reach
    assert "far_from_data" not in {w.code for w in trust.check(space, history, rec)}


def test_flat_regressor_params_under_auto_are_refused_not_ignored() -> None:
    with pytest.raises(StrategyError, match="per model"):
        get_strategy("regmix", regressor_params={"n_estimators": 300})
    get_strategy("regmix", regressor_params={"lightgbm": {"n_estimators": 300}, "gp": {"maxiter": 5}})
    get_strategy("regmix", model="lightgbm", regressor_params={"n_estimators": 300})
