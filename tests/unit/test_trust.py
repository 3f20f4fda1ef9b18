"""Warnings on recommendations: each check fires on the case it is for and stays quiet on a sound fit."""

from __future__ import annotations

import numpy as np

from strategies import get_strategy
from strategies.base import Fidelity, Observation, Recommendation, SearchSpace
from strategies.trust import check

DOMAINS = ("web", "code", "law")
SPACE = SearchSpace(DOMAINS, (10**9, 10**9, 10**9), {"web": 0.5, "code": 0.5}, (Fidelity("f", 10**8, 1.0),))


def _runs(n: int, seed: int = 0, concentration: float = 1.0) -> list[Observation]:
    rng = np.random.default_rng(seed)
    out = []
    for w in rng.dirichlet(concentration * np.ones(3), n):
        losses = {
            d: float(3.5 - 0.8 * np.sqrt(x) + rng.normal(0, 0.005)) for d, x in zip(DOMAINS, w, strict=True)
        }
        out.append(Observation(tuple(map(float, w)), "f", losses, SPACE.target_loss(losses)))
    return out


def _codes(space: SearchSpace, runs: list[Observation], rec: Recommendation) -> set[str]:
    return {w.code for w in check(space, runs, rec)}


def test_a_sound_fit_gets_no_warning() -> None:
    runs = _runs(120)
    rec = get_strategy("regmix", model="linear").recommend(SPACE, runs)
    assert check(SPACE, runs, rec) == []


def test_a_weak_fit_few_runs_and_extrapolation_are_named() -> None:
    runs = _runs(5)
    best = min(o.target_loss for o in runs)
    rec = Recommendation((0.4, 0.4, 0.2), best - 1.0, 0.01, {"cv_spearman": -0.119, "cv_mae": 0.05})
    warnings = {w.code: w.message for w in check(SPACE, runs, rec)}
    assert set(warnings) == {"low_cv_rho", "few_runs", "extrapolation"}
    assert "-0.119" in warnings["low_cv_rho"] and "5 runs" in warnings["few_runs"]
    assert f"{best:.4f}" in warnings["extrapolation"]
    close = Recommendation((0.4, 0.4, 0.2), best - 0.04, 0.01, {"cv_spearman": 0.9, "cv_mae": 0.05})
    assert "extrapolation" not in _codes(SPACE, runs, close)  # within the model's error


def test_a_mixture_far_from_every_run_is_flagged() -> None:
    runs = _runs(60, concentration=50.0)  # every run near uniform
    far = Recommendation((1.0, 0.0, 0.0), None, None, {})
    assert "far_from_data" in _codes(SPACE, runs, far)
    near = Recommendation(runs[0].weights, None, None, {})
    assert "far_from_data" not in _codes(SPACE, runs, near)


def test_binding_epoch_caps_are_named() -> None:
    scarce = SearchSpace(
        DOMAINS, (10**9, 10**6, 10**9), SPACE.target, SPACE.fidelities, max_epochs=4.0, target_tokens=10**8
    )  # code: 4 epochs of 1M tokens is 4 % of a 100M-token run
    capped = Recommendation((0.56, 0.04, 0.40), None, None, {})
    warnings = check(scarce, _runs(60), capped)
    assert [w.code for w in warnings] == ["epoch_cap"] and "code at 0.040" in warnings[0].message
    assert "epoch_cap" not in _codes(scarce, _runs(60), Recommendation((0.6, 0.02, 0.38), None, None, {}))


def test_a_recommendation_with_no_target_run_says_so() -> None:
    cheap = Fidelity("cheap", 10**7, 1 / 60)
    space = SearchSpace(DOMAINS, SPACE.tokens, SPACE.target, (cheap, SPACE.fidelities[0]))
    runs = [Observation(o.weights, "cheap", o.losses, o.target_loss, 1 / 60) for o in _runs(40)]
    rec = Recommendation((0.4, 0.4, 0.2), min(o.target_loss for o in runs), 0.01, {})
    assert "no_target_runs" in _codes(space, runs, rec)
    assert "no_target_runs" not in _codes(space, [*runs, _runs(1, seed=1)[0]], rec)  # one target run
    assert "no_target_runs" not in _codes(SPACE, _runs(40), rec)  # one fidelity: nothing cheaper


def test_a_model_that_mispredicts_its_own_runs_is_flagged() -> None:
    runs = _runs(60)
    rec = Recommendation((0.4, 0.4, 0.2), min(o.target_loss for o in runs), 0.05, {"std_calibration": 2.4})
    warnings = [w for w in check(SPACE, runs, rec) if w.code == "misfit"]
    assert len(warnings) == 1 and "2.4x worse" in warnings[0].message
    calm = Recommendation(rec.weights, rec.predicted_loss, rec.std, {"std_calibration": 1.3})
    assert "misfit" not in _codes(SPACE, runs, calm)
