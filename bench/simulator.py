"""A mixture → loss simulator grounded in the 768 public RegMix runs, with cheaper, biased fidelities.

The target-fidelity truth is a smooth function fitted on every RegMix run (train + test, 17 Pile domains,
target Pile-CC validation loss), from one of two families so that no surrogate family is flattered:

- ``gp``: the posterior mean of a Matern GP (hyperparameters by marginal likelihood on 256 runs, then
  conditioned on all 768);
- ``dml``: the Data Mixing Law ``L(w) = c + exp(a + sum_j t_j w_j)`` (Ye et al. 2024), least squares.

Lower fidelities are ``truth + offset + lam * z(w) + noise`` where ``z`` is a DML fit of the *average*
loss over all 13 evaluated Pile domains (standardised): a small proxy is pulled towards mixtures that
are good in general rather than for the target. ``lam`` is set by bisection so that, over RegMix-style
random mixtures, a fidelity's noisy observations have a chosen Spearman correlation with the truth.

The corpus has 1.25x the target run's tokens, split as the mean RegMix training mixture, with
``max_epochs = 4``: the caps bind (Pile-CC at 0.58, small domains at a few per cent), as they do for
users whose data are not unlimited. Costs are FLOPs, 6 x params x tokens; the target run is 1 unit.

    .venv/bin/python bench/simulator.py [--quick]    # fits both truths, prints their quality
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from botorch.exceptions import InputDataWarning
from botorch.models import SingleTaskGP
from scipy.optimize import least_squares, linprog
from scipy.stats import spearmanr

from strategies import botorch_utils as bt
from strategies import simplex
from strategies.base import Candidate, Fidelity, Observation, SearchSpace
from strategies.regmix import DEFAULT_CONCENTRATIONS
from strategies.tabular import align, parse_mixtures, parse_table

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "regmix"  # ../shared from the repo root
TARGET_COLUMN = "metric/the_pile_pile_cc_val_loss"
TARGET_DOMAIN = "pile_cc"
TARGET_TOKENS = 1_000_000_000
CORPUS_TOKENS = 1_250_000_000
# (name, params, tokens, wanted Spearman with the truth, offset, noise std)
FIDELITY_SPECS = (
    ("xs", 250_000, TARGET_TOKENS // 4, 0.65, 0.45, 0.02),
    ("s", 500_000, TARGET_TOKENS // 2, 0.85, 0.20, 0.015),
    ("m", 1_000_000, TARGET_TOKENS, 1.0, 0.0, 0.01),
)
COST_JITTER = 0.05  # log-normal spread of a run's FLOPs around its preset's (padding, restarts)


@dataclass(frozen=True)
class Runs:
    domains: tuple[str, ...]
    weights: np.ndarray  # (768, 17)
    target: np.ndarray  # (768,) Pile-CC loss
    average: np.ndarray  # (768,) mean loss over the 13 evaluated domains


def load_runs() -> Runs:
    """All RegMix runs, train and test, read in place (never copied)."""
    parts = []
    for split in ("train", "test"):
        mix = parse_mixtures((DATA / f"{split}_mixture_1m.csv").read_text(), f"{split} mixtures")
        loss = align(mix, parse_table((DATA / f"{split}_pile_loss_1m.csv").read_text(), f"{split} losses"))
        parts.append((mix, loss))
    columns = parts[0][0].columns
    weights = np.concatenate([m.select(columns).values for m, _ in parts])
    target = np.concatenate([loss.column(TARGET_COLUMN) for _, loss in parts])
    average = np.concatenate([loss.values.mean(axis=1) for _, loss in parts])
    domains = tuple(c.removeprefix("train_the_pile_") for c in columns)
    return Runs(domains, weights / weights.sum(axis=1, keepdims=True), target, average)


def make_space(runs: Runs) -> SearchSpace:
    share = runs.weights.mean(axis=0)
    fidelities = tuple(
        Fidelity(name, tokens, 6.0 * params * tokens, {"params": params})
        for name, params, tokens, *_ in FIDELITY_SPECS
    )
    return SearchSpace(
        domains=runs.domains,
        tokens=tuple(int(t) for t in np.round(share / share.sum() * CORPUS_TOKENS)),
        target={TARGET_DOMAIN: 1.0},
        fidelities=fidelities,
        max_epochs=4.0,
    )


class DataMixingLaw:
    """``L(w) = c + exp(a + sum_j t_j w_j)``, ``t`` of the last domain fixed at 0 (only differences matter
    on the simplex)."""

    family = "dml"

    def __init__(self, weights: np.ndarray, y: np.ndarray) -> None:
        k = weights.shape[1]
        start = np.r_[y.min() - 0.5, np.log(max(y.mean() - y.min() + 0.5, 1e-3)), np.zeros(k - 1)]
        fit = least_squares(lambda p: self._eval(p, weights) - y, start)
        self.params = fit.x

    @staticmethod
    def _eval(p: np.ndarray, w: np.ndarray) -> np.ndarray:
        return p[0] + np.exp(p[1] + w[:, :-1] @ p[2:])

    def loss(self, w: np.ndarray) -> np.ndarray:
        return self._eval(self.params, np.atleast_2d(w))

    def optimum(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Exact: the exponent is linear in w, so its minimum over the capped simplex is an LP."""
        t = np.r_[self.params[2:], 0.0]
        res = linprog(t, A_eq=np.ones((1, len(t))), b_eq=[1.0], bounds=list(zip(lo, hi, strict=True)))
        return simplex.project(res.x, lo, hi)[0]


class GaussianProcessTruth:
    """Posterior mean of a Matern-5/2 ARD GP on standardised loss; hyperparameters from 256 runs."""

    family = "gp"

    def __init__(self, weights: np.ndarray, y: np.ndarray, seed: int = 0) -> None:
        self.mean, self.scale = float(y.mean()), float(y.std())
        x_all, y_all = bt.as_tensor(weights), bt.as_tensor(-(y - self.mean) / self.scale)[:, None]
        sub = np.random.default_rng(seed).choice(len(y), size=min(256, len(y)), replace=False)
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore", InputDataWarning)  # the subsample is only nearly standard
            torch.manual_seed(seed)
            small = SingleTaskGP(x_all[sub], y_all[sub], outcome_transform=None)
            bt.fit(small, maxiter=200)
            self.model = SingleTaskGP(x_all, y_all, outcome_transform=None)  # maximises -loss
        self.model.load_state_dict(small.state_dict())
        self.model.eval()

    def loss(self, w: np.ndarray) -> np.ndarray:
        mean, _ = bt.mean_and_std(self.model, bt.as_tensor(np.atleast_2d(w)))
        return self.mean - self.scale * mean

    def optimum(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Best of many SLSQP restarts on the posterior mean, seeded from 4096 raw samples."""
        optima = bt.maximise_mean(self.model, lo, hi, num_restarts=24, raw_samples=4096, seed=0)
        return optima[int(np.argmin(self.loss(optima)))]


Truth = DataMixingLaw | GaussianProcessTruth


class Standardised:
    """A law rescaled to mean 0, std 1 over reference mixtures."""

    def __init__(self, law: DataMixingLaw, reference: np.ndarray) -> None:
        values = law.loss(reference)
        self.law, self.mean, self.std = law, float(values.mean()), float(values.std())

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return (self.law.loss(w) - self.mean) / self.std


@dataclass
class Simulator:
    """Runs a candidate at its fidelity: noisy, biased below the target, at a jittered FLOP cost."""

    name: str
    space: SearchSpace
    truth: Truth
    distractor: Standardised  # the general-loss pull z(w), mean 0 and std 1 on RegMix-style mixtures
    bias: dict[str, tuple[float, float]]  # fidelity → (offset, lam)
    noise: dict[str, float]
    best_weights: np.ndarray = field(init=False)
    best_loss: float = field(init=False)

    def __post_init__(self) -> None:
        lo, hi = self.space.bounds(self.space.recommend_budget())
        self.best_weights = self.truth.optimum(lo, hi)
        self.best_loss = float(self.truth.loss(self.best_weights)[0])

    @property
    def unit(self) -> float:
        return self.space.target_fidelity.cost

    def mean_at(self, w: np.ndarray, fidelity: str) -> np.ndarray:
        offset, lam = self.bias[fidelity]
        return self.truth.loss(w) + offset + lam * self.distractor(np.atleast_2d(w))

    def run(self, cand: Candidate, rng: np.random.Generator) -> Observation:
        w = np.asarray(cand.weights)
        loss = float(self.mean_at(w, cand.fidelity)[0] + rng.normal(0.0, self.noise[cand.fidelity]))
        cost = self.space.fidelity(cand.fidelity).cost * float(np.exp(rng.normal(0.0, COST_JITTER)))
        return Observation(cand.weights, cand.fidelity, {TARGET_DOMAIN: loss}, loss, cost)

    def regret(self, w: np.ndarray) -> float:
        return float(self.truth.loss(np.asarray(w))[0] - self.best_loss)

    def correlations(self, n: int = 2000, seed: int = 1) -> dict[str, float]:
        """Spearman of each fidelity's noisy observations with the truth on RegMix-style mixtures."""
        w = reference_mixtures(self.space, n, seed)
        rng = np.random.default_rng(seed)
        truth = self.truth.loss(w)
        return {
            f.name: float(spearmanr(self.mean_at(w, f.name) + rng.normal(0, self.noise[f.name], n), truth)[0])
            for f in self.space.fidelities
        }


def reference_mixtures(space: SearchSpace, n: int, seed: int) -> np.ndarray:
    """RegMix's own sampling: Dirichlet around the natural prior, 15 strengths, within the caps."""
    lo, hi = space.bounds(space.recommend_budget())
    rng = np.random.default_rng(seed)
    return simplex.dirichlet(rng, space.natural(), DEFAULT_CONCENTRATIONS, n, lo, hi)


def _calibrate(truth: np.ndarray, z: np.ndarray, noise: np.ndarray, rho: float) -> float:
    """The ``lam`` making Spearman(truth + lam z + noise, truth) = rho (bisection; it falls with lam)."""
    if rho >= 1.0:
        return 0.0
    lo, hi = 0.0, 20.0 * float(truth.std())
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spearmanr(truth + mid * z + noise, truth)[0] > rho else (lo, mid)
    return (lo + hi) / 2


def build(family: str, runs: Runs | None = None) -> Simulator:
    """The simulator on a ``gp`` or ``dml`` truth."""
    runs = runs or load_runs()
    space = make_space(runs)
    truth: Truth = (
        GaussianProcessTruth(runs.weights, runs.target)
        if family == "gp"
        else (DataMixingLaw(runs.weights, runs.target))
    )
    ref = reference_mixtures(space, 2000, seed=0)
    distractor = Standardised(DataMixingLaw(runs.weights, runs.average), ref)
    truth_ref, rng = truth.loss(ref), np.random.default_rng(0)
    bias, noise = {}, {}
    for name, _, _, rho, offset, sd in FIDELITY_SPECS:
        lam = _calibrate(truth_ref, distractor(ref), rng.normal(0, sd, len(ref)), rho)
        bias[name], noise[name] = (offset, lam), sd
    return Simulator(family, space, truth, distractor, bias, noise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same fits (they are the quick part)")
    parser.parse_args()
    runs = load_runs()
    result = {}
    for family in ("gp", "dml"):
        sim = build(family, runs)
        fitted = sim.truth.loss(runs.weights)
        rho_fit = float(spearmanr(fitted, runs.target)[0])
        rho = sim.correlations()
        natural = simplex.project(sim.space.natural(), *sim.space.bounds(sim.space.recommend_budget()))[0]
        mae = np.abs(fitted - runs.target).mean()
        best = ", ".join(
            f"{d} {w:.2f}" for d, w in zip(sim.space.domains, sim.best_weights, strict=True) if w > 0.005
        )
        print(f"[{family}] fit to the 768 runs: Spearman {rho_fit:.3f}, MAE {mae:.3f}")
        print(
            f"[{family}] best loss {sim.best_loss:.4f} (natural mixture {sim.truth.loss(natural)[0]:.4f}); "
            f"best mixture: {best}"
        )
        print(
            f"[{family}] Spearman with the truth per fidelity: "
            + ", ".join(f"{f} {r:.2f} (lam {sim.bias[f][1]:.3f})" for f, r in rho.items())
        )
        result[f"{family}_rho_xs"], result[f"{family}_rho_s"] = rho["xs"], rho["s"]
        result[f"{family}_fit_spearman"] = rho_fit
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
