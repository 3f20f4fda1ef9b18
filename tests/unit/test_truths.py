"""The held-out truths of ``bench/truths.py``: cheap fidelities that rank mixtures as asked yet prefer another
mixture, noise that depends on the mixture, and optima that nothing sampled beats."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bench.simulator import load_runs, make_space, reference_mixtures, search_minimum
from bench.truths import (
    RHOS,
    TUNE_RHOS,
    TUNE_TARGETS,
    TWO_FIDELITIES,
    FidelitySurfaces,
    blended,
    build_real,
    fit_pair,
)
from strategies import simplex
from strategies.base import Candidate

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "regmix"  # ../shared from the repo root
needs_regmix = pytest.mark.skipif(not DATA.exists(), reason="shared RegMix data not mounted")


@pytest.fixture(scope="module")
def truths() -> dict[float, FidelitySurfaces]:
    runs = load_runs()
    space = make_space(runs, TWO_FIDELITIES)
    pair = fit_pair("lightgbm", runs)
    return {rho: blended("lightgbm", rho, pair, space) for rho in RHOS}


@needs_regmix
@pytest.mark.parametrize("rho", RHOS)
def test_cheap_runs_rank_fresh_mixtures_with_the_asked_spearman(
    truths: dict[float, FidelitySurfaces], rho: float
) -> None:
    sim = truths[rho]
    measured = sim.correlations(n=2000, seed=7)  # mixtures and noise other than the calibration's
    assert measured["xs"] == pytest.approx(rho, abs=0.05)
    assert measured["m"] > 0.99


@needs_regmix
def test_cheap_run_costs_a_sixtieth_of_a_target_run(truths: dict[float, FidelitySurfaces]) -> None:
    cheap, target = truths[0.8].space.fidelities
    assert cheap.cost / target.cost == pytest.approx(1 / 60, rel=1e-6)


@needs_regmix
@pytest.mark.parametrize("rho", [min(RHOS), max(RHOS)])
def test_cheap_optimum_is_another_mixture_with_real_target_regret(
    truths: dict[float, FidelitySurfaces], rho: float
) -> None:
    sim = truths[rho]
    floor = sim.transfer_floors()["xs"]
    assert floor > 0.02
    cheap_best = sim.optimum_at("xs")
    assert np.abs(cheap_best - sim.best_weights).sum() > 0.2
    assert sim.regret(cheap_best) == pytest.approx(floor)


@needs_regmix
def test_run_noise_grows_as_the_mixture_concentrates(truths: dict[float, FidelitySurfaces]) -> None:
    sim = truths[0.8]
    lo, hi = sim.space.bounds(sim.space.recommend_budget())
    spread = simplex_mixture(lo, hi, concentrated=False)
    peaked = simplex_mixture(lo, hi, concentrated=True)
    rng = np.random.default_rng(0)

    def scatter(w: np.ndarray) -> float:
        return float(np.std([sim.run(Candidate(tuple(w), "xs"), rng).target_loss for _ in range(400)]))

    assert scatter(peaked) > 1.5 * scatter(spread)
    noise = sim.noise_at(reference_mixtures(sim.space, 500, seed=3), "xs")
    assert noise.max() > 1.5 * noise.min()


def simplex_mixture(lo: np.ndarray, hi: np.ndarray, concentrated: bool) -> np.ndarray:
    """A feasible mixture: as even as the caps allow, or piled onto the domains with the largest caps."""
    if not concentrated:
        return simplex.project(np.full(len(lo), 1 / len(lo)), lo, hi)[0]
    w = np.zeros(len(lo))
    for i in np.argsort(-hi):
        w[i] = min(hi[i], 1 - w.sum())
    return w


@needs_regmix
def test_no_sampled_or_searched_mixture_beats_the_optimum(truths: dict[float, FidelitySurfaces]) -> None:
    sim = truths[0.8]
    lo, hi = sim.space.bounds(sim.space.recommend_budget())
    assert sim.regret(sim.best_weights) == pytest.approx(0.0, abs=1e-12)
    assert sim.truth.loss(reference_mixtures(sim.space, 3000, seed=5)).min() > sim.best_loss
    assert sim.regret(search_minimum(sim.truth.loss, lo, hi, seed=11)) > -1e-3


def test_real_truth_reads_the_two_fidelity_table(tmp_path: Path) -> None:
    domains = ("a", "b", "c")
    rng = np.random.default_rng(0)
    path = tmp_path / "two_fidelity_runs.csv"
    with path.open("w", newline="") as fh:
        fh.write("# a comment line, as bench/two_fidelity_data.py writes\n")
        columns = ["mixture", "fidelity", "preset", "tokens", "seed", "cost_flops"]
        columns += [f"w_{d}" for d in domains] + [f"loss_{d}" for d in domains] + ["target_loss"]
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for fidelity, n, flops, level in (("xs", 16, 1e12, 5.0), ("s", 8, 6e13, 4.0)):
            for i, w in enumerate(rng.dirichlet(np.ones(3), n)):
                loss = level + (w[0] - 0.6) ** 2 + rng.normal(0, 0.01)
                row = {
                    "mixture": f"m{i}",
                    "fidelity": fidelity,
                    "preset": fidelity,
                    "tokens": 1000,
                    "seed": 0,
                }
                row |= {"cost_flops": flops, "target_loss": loss}
                row |= {f"w_{d}": x for d, x in zip(domains, w, strict=True)}
                row |= {f"loss_{d}": loss for d in domains}
                writer.writerow(row)

    sim = build_real(path)
    assert [f.name for f in sim.space.fidelities] == ["xs", "s"]
    assert sim.space.fidelities[0].cost / sim.unit == pytest.approx(1 / 60)
    assert sim.best_weights[0] == pytest.approx(0.6, abs=0.15)
    obs = sim.run(Candidate(tuple(sim.best_weights), "xs"), np.random.default_rng(1))
    assert obs.target_loss == pytest.approx(5.0, abs=0.2)


@needs_regmix
def test_the_tuning_family_models_another_target_than_the_held_out_truths() -> None:
    held_out, tuning = load_runs(), load_runs(TUNE_TARGETS[0])
    assert np.array_equal(held_out.weights, tuning.weights)  # the same runs, another loss
    assert not np.allclose(held_out.target, tuning.target)
    assert np.array_equal(held_out.average, tuning.average)
    space = make_space(tuning, TWO_FIDELITIES)
    assert dict(space.target) == {TUNE_TARGETS[0]: 1.0} and TUNE_TARGETS[0] in space.domains
    assert not set(TUNE_RHOS) & set(RHOS)
