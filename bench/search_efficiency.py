"""How much compute each search method needs to find a good mixture, on a RegMix-grounded simulator.

For every method, truth family (``gp``, ``dml``; see ``bench/simulator.py``) and seed, the method spends
a budget counted in target-fidelity runs (FLOPs / FLOPs of one target run) and recommends a mixture at
each checkpoint; its simple regret is the truth's loss there minus the best loss on the capped simplex.
A checkpoint's recommendation sees only the runs that fit within that checkpoint's budget.

Methods are a table, ``METHODS``: name → function(simulator, budgets, seed) → ``Trace`` (the mixture
recommended at each budget, and the cost spent per fidelity).
GP methods stop at ``--bo-max`` (they are the slow ones on 2 cores); the rest go on to 512.

    .venv/bin/python bench/search_efficiency.py [--quick] [--seeds 5] [--first-seed 0] [--jobs 2]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.simulator import Simulator, build, load_runs  # noqa: E402
from strategies import botorch_utils as bt  # noqa: E402
from strategies import get_strategy, simplex  # noqa: E402
from strategies.admire import feasible_set, usable  # noqa: E402
from strategies.base import Candidate, Observation, Recommendation, SearchSpace, Strategy  # noqa: E402
from strategies.mf_design import space_filling  # noqa: E402


@dataclass
class Trace:
    """One optimisation: the mixture recommended at each budget, and the cost spent per fidelity."""

    recommended: dict[float, np.ndarray]
    spent: dict[str, float] = field(default_factory=dict)  # in target-run units


Method = Callable[[Simulator, Sequence[float], int], Trace]
ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "search_efficiency.png"
THRESHOLD = 0.01


class Ledger:
    """Spends a budget run by run; when the next run would overrun a checkpoint, records what the method
    recommends from the runs so far."""

    def __init__(self, sim: Simulator, budgets: Sequence[float]) -> None:
        self.unit, self.pending = sim.unit, sorted(budgets)
        self.spent, self.trace = 0.0, Trace({})

    def spend(self, obs: Observation, recommend: Callable[[], np.ndarray]) -> bool:
        """Account for ``obs``; False once every checkpoint is recorded (then ``obs`` is not spent)."""
        if self.pending and self.spent + obs.cost > self.pending[0] * self.unit:
            weights = recommend()
            while self.pending and self.spent + obs.cost > self.pending[0] * self.unit:
                self.trace.recommended[self.pending.pop(0)] = weights
        if not self.pending:
            return False
        self.spent += obs.cost
        self.trace.spent[obs.fidelity] = self.trace.spent.get(obs.fidelity, 0.0) + obs.cost / self.unit
        return True


def drive(strategy: Strategy, sim: Simulator, budgets: Sequence[float], seed: int, batch: int) -> Trace:
    """The service's loop in miniature: propose a batch, run it, recommend at each checkpoint."""
    rng, ledger, history = np.random.default_rng(seed), Ledger(sim, budgets), []

    def recommend() -> np.ndarray:
        return np.asarray(strategy.recommend(sim.space, history).weights)

    while ledger.pending:
        for cand in strategy.propose(sim.space, history, batch, seed=seed * 100_003 + len(history)):
            obs = sim.run(cand, rng)
            if not ledger.spend(obs, recommend):
                break
            history.append(obs)
    return ledger.trace


class GpEi:
    """Single-fidelity BO baseline (not registered): GP at the target fidelity, batches by sequential
    greedy qLogNoisyExpectedImprovement, recommendation = posterior-mean argmax. Same simplex handling,
    initial design and feasible set as ``admire``, so the comparison isolates the fidelities."""

    name = "gp_ei"

    def __init__(self, n_initial: int = 8, num_restarts: int = 2, raw_samples: int = 256) -> None:
        self.n_initial, self.num_restarts, self.raw_samples = n_initial, num_restarts, raw_samples

    def _model(self, space: SearchSpace, obs: Sequence[Observation]) -> SingleTaskGP:
        x = bt.as_tensor([o.weights for o in obs])
        model = SingleTaskGP(
            x, bt.as_tensor([[-o.target_loss] for o in obs]), outcome_transform=Standardize(m=1)
        )
        bt.fit(model)
        return model

    def _target_runs(self, space: SearchSpace, history: Sequence[Observation]) -> list[Observation]:
        return [o for o in usable(space, history) if o.fidelity == space.target_fidelity.name]

    def propose(
        self, space: SearchSpace, history: Sequence[Observation], n: int, seed: int
    ) -> list[Candidate]:
        lo, hi = feasible_set(space)
        obs = self._target_runs(space, history)
        if len(obs) < self.n_initial:
            taken = np.array([o.weights for o in obs]).reshape(-1, space.k)
            weights = space_filling(np.random.default_rng(seed), n, lo, hi, taken)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = self._model(space, obs)
                acq = qLogNoisyExpectedImprovement(model, X_baseline=model.train_inputs[0])
                x, _ = optimize_acqf(
                    acq,
                    bt.box(lo, hi),
                    q=n,
                    num_restarts=self.num_restarts,
                    raw_samples=self.raw_samples,
                    equality_constraints=bt.simplex_equality(space.k),
                    options={"seed": seed, "maxiter": 50},
                    sequential=True,
                )
            weights = bt.feasible_rows(x, space.k, lo, hi)
        return [Candidate(tuple(float(v) for v in w), space.target_fidelity.name) for w in weights]

    def recommend(self, space: SearchSpace, history: Sequence[Observation]) -> Recommendation:
        lo, hi = space.bounds(space.recommend_budget())
        obs = self._target_runs(space, history)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = self._model(space, obs)
            optima = bt.maximise_mean(model, lo, hi, num_restarts=4, raw_samples=256)
        pool = np.concatenate([optima, simplex.project(np.array([o.weights for o in obs]), lo, hi)])
        (w, loss, std), *_ = bt.ranked_by_loss(model, pool, {}, 1)
        return Recommendation(tuple(float(v) for v in w), loss, std)


def fixed(name: str) -> Method:
    """A mixture chosen without runs: the same at every budget."""

    def run(sim: Simulator, budgets: Sequence[float], seed: int) -> Trace:
        w = np.asarray(get_strategy(name).recommend(sim.space, []).weights)
        return Trace({b: w for b in budgets})

    return run


def tpe(sim: Simulator, budgets: Sequence[float], seed: int) -> Trace:
    """Optuna's multivariate TPE on normalised weights ``w = z / sum(z)``, projected onto the caps; it
    recommends its best observed mixture (TPE has no model to ask)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, target = sim.space, sim.space.target_fidelity.name
    lo, hi = space.bounds(space.recommend_budget())
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
    rng, ledger = np.random.default_rng(seed), Ledger(sim, budgets)
    best: list[tuple[float, np.ndarray]] = []
    while ledger.pending:
        trial = study.ask()
        z = np.array([trial.suggest_float(f"z{j}", 1e-6, 1.0) for j in range(space.k)])
        w = simplex.project(z / z.sum(), lo, hi)[0]
        obs = sim.run(Candidate(tuple(w), target), rng)
        if not ledger.spend(obs, lambda: min(best, key=lambda b: b[0])[1]):
            break
        study.tell(trial, obs.target_loss)
        best.append((obs.target_loss, w))
    return ledger.trace


METHODS: dict[str, Method] = {
    "uniform": fixed("uniform"),
    "natural": fixed("natural"),
    "regmix": lambda sim, budgets, seed: drive(
        get_strategy("regmix", seed=seed), sim, budgets, seed, batch=64
    ),
    "tpe": tpe,
    "gp_ei": lambda sim, budgets, seed: drive(GpEi(), sim, budgets, seed, batch=4),
    # 8 a round: with half the cost at the target that is ~4 target runs a round, as gp_ei's q = 4.
    "admire": lambda sim, budgets, seed: drive(get_strategy("admire"), sim, budgets, seed, batch=8),
}
BO = {"gp_ei", "admire"}  # slow per step: run to --bo-max only


_SIMS: dict[str, Simulator] = {}  # filled before the worker pool forks, so workers share the fits


def _job(args: tuple[str, str, tuple[float, ...], int]) -> tuple[str, str, dict, dict, float]:
    method, family, budgets, seed = args
    torch.set_num_threads(1)
    start = time.process_time()
    trace = METHODS[method](_SIMS[family], budgets, seed)
    regrets = {b: _SIMS[family].regret(w) for b, w in trace.recommended.items()}
    return method, family, regrets, trace.spent, time.process_time() - start


def cost_to_reach(budgets: Sequence[float], mean_regret: Sequence[float], level: float) -> float:
    """First budget where the mean regret curve falls to ``level``, interpolated in log budget."""
    for i, (b, r) in enumerate(zip(budgets, mean_regret, strict=True)):
        if r <= level:
            if i == 0:
                return b
            b0, r0 = budgets[i - 1], mean_regret[i - 1]
            frac = (r0 - level) / (r0 - r)
            return float(np.exp(np.log(b0) + frac * (np.log(b) - np.log(b0))))
    return float("inf")


def plot(results: dict, families: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.5), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        for method in METHODS:
            curve = results.get((method, family))
            if not curve:
                continue
            b = sorted(curve)
            mean = np.array([np.mean(curve[x]) for x in b])
            std = np.array([np.std(curve[x]) for x in b])
            ax.plot(b, mean, marker="o", label=method)
            ax.fill_between(b, np.maximum(mean - std, 1e-4), mean + std, alpha=0.15)
        ax.axhline(THRESHOLD, color="grey", linestyle=":", linewidth=1)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="cost (target-fidelity runs)",
            ylabel="simple regret",
            title=f"{family} truth",
        )
        ax.legend(fontsize=8)
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(ARTIFACT, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, small budgets (< 60 s)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from here on (default 0)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--bo-max", type=float, default=64.0, help="largest budget for the GP methods")
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    started = time.time()

    seeds = 1 if args.quick else args.seeds
    budgets = (2.0, 4.0) if args.quick else (4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
    bo_budgets = tuple(b for b in budgets if b <= args.bo_max)
    families = ("gp", "dml")
    runs = load_runs()
    for family in families:
        _SIMS[family] = build(family, runs)
        rho = _SIMS[family].correlations()
        print(
            f"[{family}] best loss {_SIMS[family].best_loss:.4f}; Spearman with the truth: "
            + ", ".join(f"{f} {r:.2f}" for f, r in rho.items())
        )
    methods = [m for m in METHODS if m in args.methods.split(",")]
    jobs = [
        (m, fam, bo_budgets if m in BO else budgets, s)
        for m in methods
        for fam in families
        for s in range(args.first_seed, args.first_seed + seeds)
    ]
    jobs.sort(key=lambda j: j[0] not in BO)  # slow ones first, so the pool ends together
    results: dict[tuple[str, str], dict[float, list[float]]] = {}
    cpu: dict[str, float] = {}
    shares: dict[str, dict[str, list[float]]] = {}
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        for done, (method, family, regrets, spent, seconds) in enumerate(pool.imap_unordered(_job, jobs), 1):
            last = max(regrets)
            print(
                f"[{done}/{len(jobs)}] {method}, {family} truth: regret {regrets[last]:.4f} at cost "
                f"{last:g} ({seconds:.0f} CPU s)",
                file=sys.stderr,
            )
            curve = results.setdefault((method, family), {})
            for b, r in regrets.items():
                curve.setdefault(b, []).append(r)
            for f, c in spent.items():
                shares.setdefault(method, {}).setdefault(f, []).append(c / sum(spent.values()))
            cpu[method] = cpu.get(method, 0.0) + seconds

    report(results, families, methods, budgets, cpu)
    for method, by_fidelity in shares.items():
        if len(by_fidelity) > 1:
            parts = ", ".join(f"{f} {np.mean(v):.0%}" for f, v in sorted(by_fidelity.items()))
            print(f"{method} spent its budget as: {parts} (mean over runs)")
    plot(results, families)
    print(f"wrote {ARTIFACT}  ({time.time() - started:.0f} s)")
    print(summary(results, families))


def report(
    results: dict,
    families: Sequence[str],
    methods: Sequence[str],
    budgets: Sequence[float],
    cpu: dict[str, float],
) -> None:
    for family in families:
        print(f"\nsimple regret, {family} truth (mean ± std over seeds; cost in target-fidelity runs)")
        print(f"{'method':>8} " + " ".join(f"{b:>13g}" for b in budgets))
        for method in methods:
            curve = results.get((method, family), {})
            cells = [
                f"{np.mean(curve[b]):.4f}±{np.std(curve[b]):.4f}" if b in curve else "-" for b in budgets
            ]
            print(f"{method:>8} " + " ".join(f"{c:>13}" for c in cells))
    print("\nCPU seconds per method (all runs): " + ", ".join(f"{m} {s:.0f}" for m, s in cpu.items()))


def _reach(results: dict, method: str, family: str, level: float) -> float:
    curve = results.get((method, family), {})
    b = sorted(curve)
    return cost_to_reach(b, [float(np.mean(curve[x])) for x in b], level) if b else float("inf")


def summary(results: dict, families: Sequence[str]) -> str:
    """The RESULT line: the less favourable truth under each headline key, then each truth's own value."""
    keys: dict[str, float] = {}
    for family in families:
        for method, key in (("admire", "admire"), ("gp_ei", "gp"), ("tpe", "tpe")):
            keys[f"{key}_cost_001_{family}"] = _reach(results, method, family, THRESHOLD)
        regmix = results.get(("regmix", family), {})
        top = max(regmix, default=0.0)
        level = float(np.mean(regmix[top])) if regmix else 0.0
        keys[f"speedup_vs_regmix_{family}"] = (
            top / _reach(results, "admire", family, level) if regmix else 0.0
        )
    headline = {"speedup_vs_regmix": min(keys[f"speedup_vs_regmix_{f}"] for f in families)}
    for key in ("admire", "gp", "tpe"):
        headline[f"{key}_cost_001"] = max(keys[f"{key}_cost_001_{f}"] for f in families)
    return "RESULT " + " ".join(f"{k}={v:.3g}" for k, v in {**headline, **keys}.items())


if __name__ == "__main__":
    main()
