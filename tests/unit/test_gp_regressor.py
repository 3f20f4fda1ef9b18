"""The GP on √weights and the LightGBM+GP ensemble: fit a smooth law, rank held-out mixtures, stay
deterministic per seed, and serve RegMix like any other regressor."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import get_strategy
from strategies.base import Fidelity, Observation, SearchSpace
from strategies.regression import fit_regressor, fit_with_cv, score


def _law(W: np.ndarray) -> np.ndarray:
    return 3.5 - 0.8 * np.sqrt(W[:, 0]) - 0.5 * np.sqrt(W[:, 1]) + 0.2 * W[:, 2] ** 2


@pytest.mark.parametrize("model", ["gp", "ensemble"])
def test_the_gp_models_rank_held_out_mixtures_deterministically(model: str) -> None:
    rng = np.random.default_rng(0)
    X, T = rng.dirichlet(np.ones(4), 120), rng.dirichlet(np.ones(4), 60)
    y = _law(X) + rng.normal(0, 0.002, len(X))
    reg = fit_regressor(X, y, model=model, seed=0)
    rho, mae = score(_law(T), reg.predict(T))
    assert rho > 0.95 and mae < 0.05
    assert np.array_equal(reg.predict(T), fit_regressor(X, y, model=model, seed=0).predict(T))


def test_the_gp_fits_a_seeded_subset_beyond_its_row_cap() -> None:
    rng = np.random.default_rng(1)
    X = rng.dirichlet(np.ones(3), 300)
    capped = fit_regressor(X, _law(X), model="gp", seed=3, params={"max_rows": 50})
    same = fit_regressor(X, _law(X), model="gp", seed=3, params={"max_rows": 50})
    T = rng.dirichlet(np.ones(3), 20)
    assert np.array_equal(capped.predict(T), same.predict(T))  # the same seed picks the same rows
    assert fit_with_cv(X[:40], _law(X[:40]), model="gp", folds=3).report.spearman > 0.8


def test_regmix_recommends_with_the_gp() -> None:
    domains = ("a", "b", "c")
    space = SearchSpace(domains, (10**9,) * 3, {"a": 0.5, "b": 0.5}, (Fidelity("f", 10**8, 1.0),))
    rng = np.random.default_rng(2)
    runs = []
    for w in rng.dirichlet(np.ones(3), 40):
        losses = {d: float(3.5 - 0.8 * np.sqrt(x)) for d, x in zip(domains, w, strict=True)}
        runs.append(Observation(tuple(map(float, w)), "f", losses, space.target_loss(losses)))
    rec = get_strategy("regmix", model="gp", n_search=500, average_top=10).recommend(space, runs)
    assert rec.weights[2] < 0.1 and rec.predicted_loss is not None  # c is not in the target
