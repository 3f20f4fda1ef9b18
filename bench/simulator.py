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

``SimulatedRuns`` is what every bench truth shares (runs, regret, rank correlations, the transfer floor);
``bench/truths.py`` builds the held-out truths on it, whose cheap fidelities are not of this form.

    .venv/bin/python bench/simulator.py [--quick]    # fits both truths, prints their quality
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

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
TARGET_DOMAIN = "pile_cc"  # the loss the truths model; bench/truths.py's tuning family uses others
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
    target: np.ndarray  # (768,) the target domain's loss
    average: np.ndarray  # (768,) mean loss over the 13 evaluated domains
    target_domain: str = TARGET_DOMAIN


def load_runs(target_domain: str = TARGET_DOMAIN) -> Runs:
    """All RegMix runs, train and test, read in place (never copied); ``target`` is ``target_domain``'s
    validation loss (one of the 13 evaluated Pile domains)."""
    column = f"metric/the_pile_{target_domain}_val_loss"
    parts = []
    for split in ("train", "test"):
        mix = parse_mixtures((DATA / f"{split}_mixture_1m.csv").read_text(), f"{split} mixtures")
        loss = align(mix, parse_table((DATA / f"{split}_pile_loss_1m.csv").read_text(), f"{split} losses"))
        parts.append((mix, loss))
    columns = parts[0][0].columns
    weights = np.concatenate([m.select(columns).values for m, _ in parts])
    target = np.concatenate([loss.column(column) for _, loss in parts])
    average = np.concatenate([loss.values.mean(axis=1) for _, loss in parts])
    domains = tuple(c.removeprefix("train_the_pile_") for c in columns)
    return Runs(domains, weights / weights.sum(axis=1, keepdims=True), target, average, target_domain)


def make_space(runs: Runs, specs: Sequence[tuple] = FIDELITY_SPECS) -> SearchSpace:
    """The RegMix space; ``specs`` rows start ``(name, params, tokens)``, cheapest first."""
    share = runs.weights.mean(axis=0)
    fidelities = tuple(
        Fidelity(name, tokens, 6.0 * params * tokens, {"params": params})
        for name, params, tokens, *_ in specs
    )
    return SearchSpace(
        domains=runs.domains,
        tokens=tuple(int(t) for t in np.round(share / share.sum() * CORPUS_TOKENS)),
        target={runs.target_domain: 1.0},
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


class Surface(Protocol):
    """A noise-free loss over mixtures, and where on the capped simplex it is lowest."""

    def loss(self, w: np.ndarray) -> np.ndarray: ...

    def optimum(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray: ...


def search_minimum(
    loss: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, hi: np.ndarray, seed: int = 0
) -> np.ndarray:
    """The lowest ``loss`` found on the capped simplex without derivatives, so that tree ensembles
    (piecewise constant) can be searched too. 4096 projected Dirichlet draws from very sparse to dense
    (projection puts many on the cap faces, where optima tend to lie); 16 rounds of Gaussian steps, from
    0.2 down to 3e-4, around the 16 best points so far, projected back onto the caps; then pairwise
    descent from the 8 best distinct points. On the LightGBM truth, four seeds agree within 3e-4."""
    rng = np.random.default_rng(seed)
    k = len(lo)
    points = simplex.dirichlet(rng, np.ones(k), [0.05 * k, 0.25 * k, k, 4.0 * k], 4096, lo, hi, reject=False)
    values = loss(points)
    for step in np.geomspace(0.2, 3e-4, 16):
        parents = np.repeat(points[np.argsort(values)[:16]], 64, axis=0)
        moved = simplex.project(parents + rng.normal(0.0, step, parents.shape), lo, hi)
        points, values = np.concatenate([points, moved]), np.concatenate([values, loss(moved)])
    starts = simplex.dedupe(points[np.argsort(values)[:256]], decimals=2)[:8]
    return min((pairwise_descent(loss, w, lo, hi) for w in starts), key=lambda w: float(loss(w)[0]))


def pairwise_descent(
    loss: Callable[[np.ndarray], np.ndarray], w: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Greedy moves of weight from one domain to another (every ordered pair at once), in steps from 0.2
    down to 0.001: axis-aligned moves are what cross a tree ensemble's splits."""
    k = len(w)
    give, take = np.nonzero(~np.eye(k, dtype=bool))
    rows = np.arange(len(give))
    best = float(loss(w)[0])
    for step in (0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001):
        while True:
            moves = np.repeat(w[None], len(give), axis=0)
            amount = np.minimum(step, np.minimum(moves[rows, give] - lo[give], hi[take] - moves[rows, take]))
            moves[rows, give] -= amount
            moves[rows, take] += amount
            values = loss(moves)
            i = int(np.argmin(values))
            if values[i] >= best - 1e-12:
                break
            w, best = moves[i], float(values[i])
    return w


class Standardised:
    """A law rescaled to mean 0, std 1 over reference mixtures."""

    def __init__(self, law: Surface, reference: np.ndarray) -> None:
        values = law.loss(reference)
        self.law, self.mean, self.std = law, float(values.mean()), float(values.std())

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return (self.law.loss(w) - self.mean) / self.std


@dataclass
class SimulatedRuns:
    """What every bench truth shares: a run scores its fidelity's mean loss plus noise, at a jittered FLOP
    cost; regret is measured on the target fidelity's noise-free loss. Subclasses give the mean and noise."""

    name: str
    space: SearchSpace
    truth: Surface  # the target fidelity's loss
    best_weights: np.ndarray = field(init=False)
    best_loss: float = field(init=False)

    def __post_init__(self) -> None:
        lo, hi = self.space.bounds(self.space.recommend_budget())
        self.best_weights = self.truth.optimum(lo, hi)
        self.best_loss = float(self.truth.loss(self.best_weights)[0])

    def mean_at(self, w: np.ndarray, fidelity: str) -> np.ndarray:
        raise NotImplementedError

    def noise_at(self, w: np.ndarray, fidelity: str) -> np.ndarray:
        """Noise std of a run at each mixture of ``w`` (n, k): ``(n,)``."""
        raise NotImplementedError

    @property
    def unit(self) -> float:
        return self.space.target_fidelity.cost

    def run(self, cand: Candidate, rng: np.random.Generator) -> Observation:
        w = np.atleast_2d(cand.weights)
        loss = float(self.mean_at(w, cand.fidelity)[0] + rng.normal(0.0, self.noise_at(w, cand.fidelity)[0]))
        cost = self.space.fidelity(cand.fidelity).cost * float(np.exp(rng.normal(0.0, COST_JITTER)))
        return Observation(cand.weights, cand.fidelity, dict.fromkeys(self.space.target, loss), loss, cost)

    def regret(self, w: np.ndarray) -> float:
        return float(self.truth.loss(np.asarray(w))[0] - self.best_loss)

    def observe(self, w: np.ndarray, fidelity: str, rng: np.random.Generator) -> np.ndarray:
        """Noisy losses of runs at every mixture of ``w`` (n, k), costs aside."""
        return self.mean_at(w, fidelity) + rng.normal(0.0, 1.0, len(w)) * self.noise_at(w, fidelity)

    def correlations(self, n: int = 2000, seed: int = 1) -> dict[str, float]:
        """Spearman of each fidelity's noisy observations with the truth on RegMix-style mixtures."""
        w = reference_mixtures(self.space, n, seed)
        rng = np.random.default_rng(seed)
        truth = self.truth.loss(w)
        return {
            f.name: float(spearmanr(self.observe(w, f.name, rng), truth)[0]) for f in self.space.fidelities
        }

    def optimum_at(self, fidelity: str) -> np.ndarray:
        """Where a fidelity's noise-free mean loss is lowest on the capped simplex (derivative-free)."""
        lo, hi = self.space.bounds(self.space.recommend_budget())
        return search_minimum(partial(self.mean_at, fidelity=fidelity), lo, hi)

    def transfer_floors(self) -> dict[str, float]:
        """Per cheaper fidelity, the target regret at that fidelity's own optimum: where a search that
        trusted only that fidelity's runs would land at best."""
        return {f.name: self.regret(self.optimum_at(f.name)) for f in self.space.fidelities[:-1]}


@dataclass
class Simulator(SimulatedRuns):
    """Cheaper fidelities are the truth plus an offset, a pull towards generally good mixtures, and noise."""

    distractor: Standardised  # the general-loss pull z(w), mean 0 and std 1 on RegMix-style mixtures
    bias: dict[str, tuple[float, float]]  # fidelity → (offset, lam)
    noise: dict[str, float]

    def mean_at(self, w: np.ndarray, fidelity: str) -> np.ndarray:
        offset, lam = self.bias[fidelity]
        return self.truth.loss(w) + offset + lam * self.distractor(np.atleast_2d(w))

    def noise_at(self, w: np.ndarray, fidelity: str) -> np.ndarray:
        return np.full(len(np.atleast_2d(w)), self.noise[fidelity])


def reference_mixtures(space: SearchSpace, n: int, seed: int) -> np.ndarray:
    """RegMix's own sampling: Dirichlet around the natural prior, 15 strengths, within the caps."""
    lo, hi = space.bounds(space.recommend_budget())
    rng = np.random.default_rng(seed)
    return simplex.dirichlet(rng, space.natural(), DEFAULT_CONCENTRATIONS, n, lo, hi)


def calibrate(spearman_at: Callable[[float], float], rho: float, upper: float) -> float:
    """The ``x`` in ``[0, upper]`` where ``spearman_at(x) = rho``, by bisection (it must fall with x)."""
    lo, hi = 0.0, upper
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spearman_at(mid) > rho else (lo, mid)
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
    z, upper = distractor(ref), 20.0 * float(truth_ref.std())
    for name, _, _, rho, offset, sd in FIDELITY_SPECS:
        e = rng.normal(0, sd, len(ref))
        lam = (
            calibrate(lambda x, e=e: spearmanr(truth_ref + x * z + e, truth_ref)[0], rho, upper)
            if rho < 1
            else 0.0
        )
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
