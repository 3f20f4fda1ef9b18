"""How much compute each search method needs to find a good mixture: simple regret against cost.

The truths are fitted to the public RegMix runs; the report is on truths and seeds nothing was tuned on.

Two splits (``--split``):

- ``heldout`` (the default, the one to report): the truths of ``bench/truths.py`` — LightGBM and MLP
  targets, each with a cheap fidelity (1/60 of the cost) that is a *different* function with Spearman
  0.5, 0.8 or 0.95 to the target, its own optimum and mixture-dependent noise — plus ``real`` (GPs on
  ``bench/data/two_fidelity_runs.csv``) where that file exists; seeds 100-109. Budgets 1-16 for the GP
  methods, 1-64 for the rest.
- ``tune-family``: the held-out construction (``bench/truths.py``, ``build_tuning``) on two other targets,
  the HackerNews and Gutenberg losses, at Spearman 0.65 and 0.9; seeds 0-4. The same kind of truth as the
  held-out one, none of the same truths or seeds: where admire's defaults are tuned from 2026-12-06 on.
- ``tune``: the ``gp`` and ``dml`` truths of ``bench/simulator.py`` (cheap fidelities = truth + offset +
  pull + noise, three fidelities), seeds 0-4: where admire's earlier defaults were tuned. Not a fair test.

For every method, truth and seed, the method spends a budget counted in target-fidelity runs (FLOPs / FLOPs
of one target run) and recommends a mixture at each checkpoint, seeing only the runs that fit within
that checkpoint's budget; its simple regret is the truth's loss there minus the best loss on the capped
simplex. Tables give the mean and a 95 % Student-t interval over seeds. Each truth's *transfer floor*
is the target regret at the cheap fidelity's own optimum: a search that trusts cheap runs alone lands
there at best. *Coverage*: how often the recommendation's true loss lies within 1.645 predicted std of
its predicted loss (nominal 90 %).

Methods are a table, ``METHODS``: name → function(simulator, budgets, seed) → ``Trace`` (the
recommendation at each budget, and the cost spent per fidelity). The baselines spend the same cost:
single-fidelity GP-EI (admire's initial design, its target-aligned first and contrasting second target
runs included, and recommendation rule), Optuna TPE, random draws, RegMix and CLIMB at the target
fidelity; on request (``--methods``) RegMix and CLIMB on cheap runs only (``regmix_cheap``,
``climb_cheap``: the small-proxy way they are meant to be used). ``uniform``, ``natural`` and
``aligned`` (the target-aligned mixture admire starts from, ``mf_design.anchor``) are single mixtures,
no search.

    .venv/bin/python bench/search_efficiency.py [--quick] [--split heldout|tune-family|tune] [--seeds N]
        [--jobs 2]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.simulator import Runs, SimulatedRuns, build, load_runs  # noqa: E402
from bench.truths import FidelitySurfaces, build_heldout, build_tuning  # noqa: E402
from strategies import botorch_utils as bt  # noqa: E402
from strategies import get_strategy, simplex  # noqa: E402
from strategies.admire import Admire, feasible_set, usable  # noqa: E402
from strategies.base import (  # noqa: E402
    Candidate,
    Observation,
    Recommendation,
    SearchSpace,
    Strategy,
    StrategyError,
)
from strategies.mf_design import anchor, contrast, design  # noqa: E402


@dataclass
class Trace:
    """One optimisation: the recommendation at each budget, and the cost spent per fidelity."""

    recommended: dict[float, Recommendation]
    spent: dict[str, float] = field(default_factory=dict)  # in target-run units


Method = Callable[[SimulatedRuns, Sequence[float], int], Trace]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
THRESHOLD = 0.01
Z90 = 1.645  # two-sided 90 % of a normal: the coverage band is predicted loss ± Z90 std


class Ledger:
    """Spends a budget run by run; when the next run would overrun a checkpoint, records what the method
    recommends from the runs so far."""

    def __init__(self, sim: SimulatedRuns, budgets: Sequence[float]) -> None:
        self.unit, self.pending = sim.unit, sorted(budgets)
        self.spent, self.trace = 0.0, Trace({})

    def spend(self, obs: Observation, recommend: Callable[[], Recommendation]) -> bool:
        """Account for ``obs``; False once every checkpoint is recorded (then ``obs`` is not spent)."""
        if self.pending and self.spent + obs.cost > self.pending[0] * self.unit:
            rec = recommend()
            while self.pending and self.spent + obs.cost > self.pending[0] * self.unit:
                self.trace.recommended[self.pending.pop(0)] = rec
        if not self.pending:
            return False
        self.spent += obs.cost
        self.trace.spent[obs.fidelity] = self.trace.spent.get(obs.fidelity, 0.0) + obs.cost / self.unit
        return True

    def close(self, recommend: Callable[[], Recommendation]) -> None:
        """The method stopped short of its budget: its last recommendation stands at every checkpoint left."""
        if self.pending:
            rec = recommend()
            self.trace.recommended |= dict.fromkeys(self.pending, rec)
            self.pending = []


def drive(strategy: Strategy, sim: SimulatedRuns, budgets: Sequence[float], seed: int, batch: int) -> Trace:
    """The service's loop in miniature: propose a batch, run it, recommend at each checkpoint."""
    rng, ledger, history = np.random.default_rng(seed), Ledger(sim, budgets), []

    def recommend() -> Recommendation:
        return strategy.recommend(sim.space, history)

    while ledger.pending:
        proposed = strategy.propose(sim.space, history, batch, seed=seed * 100_003 + len(history))
        if not proposed:
            ledger.close(recommend)
        for cand in proposed:
            obs = sim.run(cand, rng)
            if not ledger.spend(obs, recommend):
                break
            history.append(obs)
    return ledger.trace


class GpEi:
    """Single-fidelity BO baseline (not registered): GP at the target fidelity, batches by sequential
    greedy qLogNoisyExpectedImprovement. Same simplex handling, initial-design generator, feasible set and
    recommendation rule (lowest predicted loss + ``pessimism`` x std among the mean's local maxima and
    the observed mixtures) as ``admire``, so the comparison isolates the fidelities."""

    name = "gp_ei"

    def __init__(
        self,
        n_initial: int = 8,
        num_restarts: int = 2,
        raw_samples: int = 256,
        pessimism: float = Admire().pessimism,
    ) -> None:
        self.n_initial, self.num_restarts, self.raw_samples = n_initial, num_restarts, raw_samples
        self.pessimism = pessimism

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
            guesses = [anchor(space, lo, hi), contrast(space, lo, hi)]  # admire's first two target runs
            weights = design(np.random.default_rng(seed), n, lo, hi, taken, guesses)
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
        if not obs:
            return get_strategy("natural").recommend(space, [])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = self._model(space, obs)
            optima = bt.maximise_mean(model, lo, hi, num_restarts=4, raw_samples=256)
        pool = np.concatenate([optima, simplex.project(np.array([o.weights for o in obs]), lo, hi)])
        (w, loss, std), *_ = bt.ranked_by_loss(model, pool, {}, 1, self.pessimism)
        return Recommendation(tuple(float(v) for v in w), loss, std)


def fixed(name: str) -> Method:
    """A mixture chosen without runs: the same at every budget."""

    def run(sim: SimulatedRuns, budgets: Sequence[float], seed: int) -> Trace:
        rec = get_strategy(name).recommend(sim.space, [])
        return Trace(dict.fromkeys(budgets, rec))

    return run


def best_observed(
    sim: SimulatedRuns, budgets: Sequence[float], seed: int, mixtures: Generator[np.ndarray, float, None]
) -> Trace:
    """Runs what ``mixtures`` yields at the target fidelity, sending it each loss back; recommends the best
    run so far (such methods have no model to ask)."""
    target = sim.space.target_fidelity.name
    rng, ledger, seen = np.random.default_rng(seed), Ledger(sim, budgets), []

    def recommend() -> Recommendation:  # the best run so far (natural weights before the first)
        return get_strategy("random").recommend(sim.space, seen)

    w = next(mixtures)
    while ledger.pending:
        obs = sim.run(Candidate(tuple(float(v) for v in w), target), rng)
        if not ledger.spend(obs, recommend):
            break
        seen.append(obs)
        w = mixtures.send(obs.target_loss)
    return ledger.trace


def tpe_mixtures(space: SearchSpace, seed: int) -> Generator[np.ndarray, float, None]:
    """Optuna's multivariate TPE on normalised weights ``w = z / sum(z)``, projected onto the caps."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lo, hi = space.bounds(space.recommend_budget())
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
    while True:
        trial = study.ask()
        z = np.array([trial.suggest_float(f"z{j}", 1e-6, 1.0) for j in range(space.k)])
        study.tell(trial, (yield simplex.project(z / z.sum(), lo, hi)[0]))


def random_mixtures(space: SearchSpace, seed: int) -> Generator[np.ndarray, float, None]:
    """Random mixtures within the caps: half uniform on the capped simplex, half flat-Dirichlet draws
    projected onto its faces (the points admire starts its searches from, ``bt.start_pool``)."""
    lo, hi = space.bounds(space.recommend_budget())
    rng = np.random.default_rng(seed)
    for draw in itertools.count():
        pool = bt.start_pool(lo, hi, {}, 32, seed * 1_000 + draw)[:, 0].cpu().numpy()
        # not ``yield from``: it would pass the losses sent back on to the array, which cannot take them
        for w in pool[rng.permutation(len(pool))]:  # noqa: UP028
            yield w


def climb(sim: SimulatedRuns, budgets: Sequence[float], seed: int, fidelity: str | None = None) -> Trace:
    """CLIMB run afresh for each checkpoint with the runs at ``fidelity`` (default: the target) that
    checkpoint buys, so its rounds scale with its budget (at least 3 runs: one per round); batches of 64,
    as regmix."""
    trace, f = Trace({}), sim.space.fidelity(fidelity) if fidelity else sim.space.target_fidelity
    per_unit = sim.space.target_fidelity.cost / f.cost
    for b in sorted(budgets):
        strategy = get_strategy("climb", budget=max(3, int(b * per_unit + 1e-9)), seed=seed, fidelity=f.name)
        part = drive(strategy, sim, (b,), seed, batch=64)
        trace.recommended |= part.recommended
        trace.spent = part.spent
    return trace


def aligned(sim: SimulatedRuns, budgets: Sequence[float], seed: int) -> Trace:
    """The target-aligned mixture admire's and GP-EI's first target run tries (``mf_design.anchor``)."""
    lo, hi = feasible_set(sim.space)
    w = anchor(sim.space, lo, hi)
    w = simplex.project(sim.space.natural(), lo, hi)[0] if w is None else w
    return Trace(dict.fromkeys(budgets, Recommendation(tuple(float(v) for v in w))))


METHODS: dict[str, Method] = {
    "uniform": fixed("uniform"),
    "natural": fixed("natural"),
    "aligned": aligned,
    "random": lambda sim, budgets, seed: best_observed(sim, budgets, seed, random_mixtures(sim.space, seed)),
    "regmix": lambda sim, budgets, seed: drive(
        get_strategy("regmix", seed=seed), sim, budgets, seed, batch=64
    ),
    "climb": climb,
    # the small-proxy way RegMix and CLIMB are meant to be used: every run at the cheapest fidelity
    "regmix_cheap": lambda sim, budgets, seed: drive(
        get_strategy("regmix", seed=seed, fidelity=sim.space.fidelities[0].name), sim, budgets, seed, batch=64
    ),
    "climb_cheap": lambda sim, budgets, seed: climb(sim, budgets, seed, sim.space.fidelities[0].name),
    "tpe": lambda sim, budgets, seed: best_observed(sim, budgets, seed, tpe_mixtures(sim.space, seed)),
    "gp_ei": lambda sim, budgets, seed: drive(GpEi(), sim, budgets, seed, batch=4),
    # 8 a round: with half the cost at the target that is ~4 target runs a round, as gp_ei's q = 4.
    "admire": lambda sim, budgets, seed: drive(
        get_strategy("admire", **ADMIRE_OPTIONS), sim, budgets, seed, batch=8
    ),
}
ADMIRE_OPTIONS: dict[str, float] = {}  # ``--admire-option``: set before the worker pool forks
BO = {"gp_ei", "admire"}  # slow per step: run to the split's BO budget only
# the best of these is what admire must beat; the *_cheap ones only where --methods names them: CLIMB
# on cheap runs pays per run, and 64 target runs' cost is 3,840 cheap runs
BASELINES = ("regmix", "climb", "random", "tpe", "regmix_cheap", "climb_cheap")
OPT_IN = {"regmix_cheap", "climb_cheap"}


@dataclass(frozen=True)
class Split:
    """Which truths and seeds a run reports on, and its budgets."""

    about: str
    first_seed: int
    seeds: int
    budgets: tuple[float, ...]
    bo_max: float
    quick_truths: tuple[str, ...] | None  # None: all of the split's truths
    quick_budgets: tuple[float, ...]
    truths: Callable[[Runs, Sequence[str] | None], dict[str, SimulatedRuns]]  # (runs, names or all) → by name


def simulator_truths(runs: Runs, names: Sequence[str] | None) -> dict[str, SimulatedRuns]:
    return {f: build(f, runs) for f in ("gp", "dml") if names is None or f in names}


# the held-out family and its tuning twin are run at the same budgets
FAMILY_BUDGETS: dict = {
    "budgets": (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0),
    "bo_max": 16.0,
    "quick_budgets": (1.0, 2.0),
}
SPLITS = {
    "heldout": Split(
        about="bench/truths.py: lightgbm and mlp targets x cheap-fidelity Spearman 0.5/0.8/0.95 (+ real), "
        "seeds 100-109; nothing was tuned on these: report these",
        first_seed=100,
        seeds=10,
        quick_truths=("lightgbm_rho0.8",),
        **FAMILY_BUDGETS,
        truths=build_heldout,
    ),
    "tune-family": Split(
        about="bench/truths.py's construction on other targets (hackernews, gutenberg_pg_19 loss) at "
        "Spearman 0.65/0.9, seeds 0-4: the held-out family's kind of truth, for tuning",
        first_seed=0,
        seeds=5,
        quick_truths=("lightgbm_hackernews_rho0.9",),
        **FAMILY_BUDGETS,
        truths=lambda runs, names: build_tuning(names),
    ),
    "tune": Split(
        about="bench/simulator.py: gp and dml truths, 3 fidelities, seeds 0-4, where admire's defaults "
        "were tuned",
        first_seed=0,
        seeds=5,
        budgets=(4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0),
        bo_max=64.0,
        quick_truths=None,
        quick_budgets=(2.0, 4.0),
        truths=simulator_truths,
    ),
}


@dataclass
class Results:
    """Everything the runs measured, keyed by (method, truth)."""

    regret: dict[tuple[str, str], dict[float, list[float]]] = field(default_factory=dict)
    # (method, truth, cost, z) per recommendation with a std, z = (true − predicted) / std
    z_by: list[tuple[str, str, float, float]] = field(default_factory=list)
    unsure: dict[str, int] = field(default_factory=dict)  # method → recommendations without a std
    # method → the diagnostics of each recommendation in z_by, same order (std_calibration, target_amplitude…)
    diagnostics: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    shares: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # method → fidelity → share

    def z(self, method: str) -> list[float]:
        return [z for m, _, _, z in self.z_by if m == method]

    def mean(self, method: str, truth: str, budget: float) -> float:
        values = self.regret.get((method, truth), {}).get(budget)
        return float(np.mean(values)) if values else float("nan")


_SIMS: dict[str, SimulatedRuns] = {}  # filled before the worker pool forks, so workers share the fits


def _job(
    args: tuple[str, str, tuple[float, ...], int],
) -> tuple[str, str, dict, dict, dict[float, float], list[dict], int, float]:
    method, name, budgets, seed = args
    torch.set_num_threads(1)
    start = time.process_time()
    sim = _SIMS[name]
    trace = METHODS[method](sim, budgets, seed)
    regrets = {b: sim.regret(np.asarray(r.weights)) for b, r in trace.recommended.items()}
    sure = {b: r for b, r in trace.recommended.items() if r.predicted_loss is not None and r.std}
    z = {
        b: (float(sim.truth.loss(np.asarray(r.weights))[0]) - r.predicted_loss) / r.std
        for b, r in sure.items()
    }
    diagnostics = [dict(r.diagnostics) for r in sure.values()]
    unsure = len(trace.recommended) - len(z)  # e.g. admire before its first target-fidelity run
    return method, name, regrets, trace.spent, z, diagnostics, unsure, time.process_time() - start


def interval(values: Sequence[float]) -> float:
    """Half-width of the 95 % Student-t interval of the mean (nan for one value)."""
    n = len(values)
    return float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


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


def plot(results: Results, floors: dict[str, float], path: Path) -> None:
    """One panel per truth: mean regret against cost with its 95 % interval; the transfer floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(floors))
    rows = -(-len(floors) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.5 * rows), squeeze=False)
    for ax in axes.flat[len(floors) :]:
        ax.set_visible(False)
    for ax, truth in zip(axes.flat, floors, strict=False):
        for method in METHODS:
            curve = results.regret.get((method, truth))
            if not curve:
                continue
            b = sorted(curve)
            mean = np.array([np.mean(curve[x]) for x in b])
            half = np.nan_to_num([interval(curve[x]) for x in b])
            ax.plot(b, np.maximum(mean, 1e-4), marker="o", label=method)
            ax.fill_between(b, np.maximum(mean - half, 1e-4), np.maximum(mean + half, 1e-4), alpha=0.15)
        ax.axhline(THRESHOLD, color="grey", linestyle=":", linewidth=1)
        ax.axhline(
            max(floors[truth], 1e-4), color="black", linestyle="--", linewidth=1, label="transfer floor"
        )
        ax.set(xscale="log", yscale="log", xlabel="cost (target-fidelity runs)", ylabel="simple regret")
        ax.set_title(f"{truth} truth")
        ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="splits: " + "; ".join(f"{name}: {split.about}" for name, split in SPLITS.items()),
    )
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="heldout",
        help="heldout (default): truths and seeds nothing was tuned on, report these; tune: the simulator "
        "truths and seeds admire's defaults were tuned on (details below)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 1 truth (heldout), small budgets (< 60 s)"
    )
    parser.add_argument("--seeds", type=int, help="seeds to run (default: 10 heldout, 5 tune)")
    parser.add_argument(
        "--first-seed", type=int, help="seeds run from here on (default: 100 heldout, 0 tune)"
    )
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--bo-max", type=float, help="largest budget for the GP methods (16 heldout, 64 tune)"
    )
    parser.add_argument(
        "--max-budget", type=float, help="largest budget for every method (default: all of the split's)"
    )
    parser.add_argument(
        "--methods",
        default=",".join(m for m in METHODS if m not in OPT_IN),
        help=f"comma-separated, of: {', '.join(METHODS)} (default: all but {', '.join(sorted(OPT_IN))})",
    )
    parser.add_argument("--truths", help="comma-separated truth names (default: all of the split)")
    parser.add_argument(
        "--admire-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an Admire argument for the admire method, e.g. pessimism=1 (repeatable; for tuning on "
        "--split tune-family)",
    )
    args = parser.parse_args()
    ADMIRE_OPTIONS.update(admire_options(args.admire_option))
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    started = time.time()

    split = SPLITS[args.split]
    first = split.first_seed if args.first_seed is None else args.first_seed
    seeds = range(first, first + (1 if args.quick else args.seeds or split.seeds))
    budgets = split.quick_budgets if args.quick else split.budgets
    budgets = tuple(b for b in budgets if args.max_budget is None or b <= args.max_budget)
    bo_budgets = tuple(b for b in budgets if b <= (args.bo_max or split.bo_max))
    names = args.truths.split(",") if args.truths else (split.quick_truths if args.quick else None)
    _SIMS.update(split.truths(load_runs(), names))
    floors = {}
    for name, sim in _SIMS.items():
        floor = sim.transfer_floors()
        floors[name] = floor[sim.space.fidelities[0].name]
        print(
            f"[{name}] best loss {sim.best_loss:.4f}; Spearman with the truth: "
            + ", ".join(f"{f} {r:.2f}" for f, r in sim.correlations().items())
            + "; transfer floor (target regret at a cheap fidelity's optimum): "
            + ", ".join(f"{f} {r:.4f}" for f, r in floor.items())
        )
    methods = [m for m in METHODS if m in args.methods.split(",")]
    jobs = [(m, t, bo_budgets if m in BO else budgets, s) for m in methods for t in _SIMS for s in seeds]
    jobs.sort(key=lambda j: j[0] not in BO)  # slow ones first, so the pool ends together
    results = Results()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        for done, (method, truth, regrets, spent, z, diagnostics, unsure, seconds) in enumerate(
            pool.imap_unordered(_job, jobs), 1
        ):
            last = max(regrets)
            print(
                f"[{done}/{len(jobs)}] {method}, {truth} truth: regret {regrets[last]:.4f} at cost "
                f"{last:g} ({seconds:.0f} CPU s)",
                file=sys.stderr,
            )
            curve = results.regret.setdefault((method, truth), {})
            for b, r in regrets.items():
                curve.setdefault(b, []).append(r)
            results.z_by += [(method, truth, b, value) for b, value in z.items()]
            results.diagnostics.setdefault(method, []).extend(diagnostics)
            results.unsure[method] = results.unsure.get(method, 0) + unsure
            for f, c in spent.items():
                results.shares.setdefault(method, {}).setdefault(f, []).append(c / sum(spent.values()))
            results.cpu[method] = results.cpu.get(method, 0.0) + seconds

    report(results, list(_SIMS), methods, budgets)
    artifact = ARTIFACTS / f"search_efficiency_{args.split}.png"
    plot(results, floors, artifact)
    print(f"wrote {artifact}  ({time.time() - started:.0f} s)")
    if args.split == "tune":
        print(summary_tune(results, list(_SIMS)))
    else:
        print(summary_heldout(results, floors, budgets))


def admire_options(pairs: Sequence[str]) -> dict[str, float]:
    """``["pessimism=1", …]`` → keyword arguments for ``admire``, checked by building it once."""
    options: dict[str, float] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")  # no "=": value "" is no number either
        try:
            options[name] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            raise SystemExit(f"--admire-option {pair!r}: expected NAME=VALUE with a numeric VALUE") from None
    try:
        get_strategy("admire", **options)
    except StrategyError as e:
        raise SystemExit(f"--admire-option: {e}") from e
    return options


def report(results: Results, truths: Sequence[str], methods: Sequence[str], budgets: Sequence[float]) -> None:
    for truth in truths:
        print(
            f"\nsimple regret, {truth} truth (mean ± 95 % t-interval over seeds; cost in target-run units)",
        )
        print(f"{'method':>8} " + " ".join(f"{b:>15g}" for b in budgets))
        for method in methods:
            curve = results.regret.get((method, truth), {})
            cells = [
                f"{np.mean(curve[b]):.4f}±{interval(curve[b]):.4f}" if b in curve else "-" for b in budgets
            ]
            print(f"{method:>8} " + " ".join(f"{c:>15}" for c in cells))
    print("\nCPU seconds per method (all runs): " + ", ".join(f"{m} {s:.0f}" for m, s in results.cpu.items()))
    for method, by_fidelity in results.shares.items():
        if len(by_fidelity) > 1:
            parts = ", ".join(f"{f} {np.mean(v):.0%}" for f, v in sorted(by_fidelity.items()))
            print(f"{method} spent its budget as: {parts} (mean over runs)")
    for method in methods:
        z = results.z(method)
        if z:
            print(
                f"{method}: true loss within {Z90} predicted std of the predicted loss at "
                f"{coverage(z):.0%} of {len(z)} recommendations with a std (nominal 90 %; mean z "
                f"{np.mean(z):+.2f}, a std {std_scale_for_90(z):.2f}x as large would cover 90 %); "
                f"{results.unsure.get(method, 0)} more came without one"
            )
            for label, column in (("cost", 2), ("truth", 1)):
                groups: dict = {}
                for row in results.z_by:
                    if row[0] == method:
                        groups.setdefault(row[column], []).append(row[3])
                print(
                    f"  by {label}: "
                    + ", ".join(
                        f"{g}: {coverage(v):.0%} of {len(v)} (mean z {np.mean(v):+.2f})"
                        for g, v in sorted(groups.items())
                    )
                )
            factor = std_calibration(results, method)
            if (factor > 1).any():
                print(
                    f"  its leave-one-out check widened {np.mean(factor > 1):.0%} of those stds (mean "
                    f"factor {factor.mean():.2f}, largest {factor.max():.2f}); without it they would have "
                    f"covered {coverage(np.asarray(z) * factor):.0%}"
                )
            fitted = [
                d["target_amplitude"]
                for d in results.diagnostics[method]
                if "target_amplitude" in d and d.get("n_target", 0) >= 2
            ]
            if fitted:
                low, mid, high = np.quantile(fitted, [0.1, 0.5, 0.9])
                print(
                    f"  fitted target amplitude (x the cheap fidelity's; {len(fitted)} recommendations from "
                    f"two target runs on): median {mid:.2f}, 10-90 % {low:.2f} to {high:.2f}"
                )
            corr = fitted_correlations(results, method)
            if corr:
                print(
                    "  fitted correlation with the target of its best-correlated cheaper fidelity (what its "
                    "fallback to target runs reads; median, 10-90 %, from two target runs on), by truth: "
                    + ", ".join(
                        f"{truth}: {np.median(v):.2f} ({np.quantile(v, 0.1):.2f}-{np.quantile(v, 0.9):.2f})"
                        for truth, v in sorted(corr.items())
                    )
                )


def fitted_correlations(results: Results, method: str) -> dict[str, list[float]]:
    """Truth → the highest inter-fidelity correlation the model fitted (``fidelity_corr_<name>``) at each
    recommendation from two target runs on: does it tell a truth whose cheap fidelity says little from
    one that says much? (``diagnostics`` is in ``z_by``'s order.)"""
    rows = [row for row in results.z_by if row[0] == method]
    out: dict[str, list[float]] = {}
    for (_, truth, _, _), d in zip(rows, results.diagnostics.get(method, []), strict=True):
        values = [v for k, v in d.items() if k.startswith("fidelity_corr_")]
        if values and d.get("n_target", 0) >= 2:
            out.setdefault(truth, []).append(max(values))
    return out


def std_calibration(results: Results, method: str) -> np.ndarray:
    """The factor admire's leave-one-out check put on each std in ``z`` (1 for other methods)."""
    return np.array([d.get("std_calibration", 1.0) for d in results.diagnostics.get(method, [])])


def coverage(z: Sequence[float]) -> float:
    """Share of recommendations whose true loss lies within ``Z90`` reported std of the prediction."""
    return float(np.mean(np.abs(z) <= Z90)) if len(z) else float("nan")


def std_scale_for_90(z: Sequence[float]) -> float:
    """The factor on the reported std that would make ``coverage`` 90 % (how admire's ``std_scale``
    was chosen, on the tuning split)."""
    return float(np.quantile(np.abs(z), 0.9) / Z90) if len(z) else float("nan")


def _reach(results: Results, method: str, truth: str, level: float) -> float:
    curve = results.regret.get((method, truth), {})
    b = sorted(curve)
    return cost_to_reach(b, [float(np.mean(curve[x])) for x in b], level) if b else float("inf")


def summary_tune(results: Results, truths: Sequence[str]) -> str:
    """The RESULT line: the less favourable truth under each headline key, then each truth's own value."""
    keys: dict[str, float] = {}
    for truth in truths:
        for method, key in (("admire", "admire"), ("gp_ei", "gp"), ("tpe", "tpe")):
            keys[f"{key}_cost_001_{truth}"] = _reach(results, method, truth, THRESHOLD)
        regmix = results.regret.get(("regmix", truth), {})
        top = max(regmix, default=0.0)
        level = float(np.mean(regmix[top])) if regmix else 0.0
        keys[f"speedup_vs_regmix_{truth}"] = top / _reach(results, "admire", truth, level) if regmix else 0.0
    headline = {"speedup_vs_regmix": min(keys[f"speedup_vs_regmix_{t}"] for t in truths)}
    for key in ("admire", "gp", "tpe"):
        headline[f"{key}_cost_001"] = max(keys[f"{key}_cost_001_{t}"] for t in truths)
    return "RESULT " + " ".join(f"{k}={v:.3g}" for k, v in {**headline, **keys}.items())


def summary_heldout(results: Results, floors: dict[str, float], budgets: Sequence[float]) -> str:
    """The RESULT line of the held-out split, at a budget of 4 target runs (means over truths and seeds)."""
    at = 4.0 if 4.0 in budgets else max(b for b in budgets if b <= 4.0)
    if at != 4.0:
        print(f"note: the _b4 keys below are at budget {at:g}, the largest this run has")

    def regret(method: str, truths: Sequence[str]) -> float:
        values = [r for t in truths for r in results.regret.get((method, t), {}).get(at, [])]
        return float(np.mean(values)) if values else float("nan")

    truths = list(floors)
    rho = {t: s.rho for t, s in _SIMS.items() if isinstance(s, FidelitySurfaces) and s.rho is not None}
    low_rho = [t for t in truths if rho.get(t) == min(rho.values(), default=None)]
    factor = std_calibration(results, "admire")
    admire = regret("admire", truths)
    best_baseline = min((regret(m, truths) for m in BASELINES), key=lambda v: (np.isnan(v), v))
    keys = {
        "admire_regret_b4": admire,
        "best_baseline_regret_b4": best_baseline,
        "admire_vs_best_baseline_b4": admire / best_baseline,
        "transfer_floor": float(np.mean(list(floors.values()))),
        "admire_below_floor_b4": float(sum(results.mean("admire", t, at) < floors[t] for t in truths)),
        "admire_vs_gp_ei_low_rho": regret("admire", low_rho) / regret("gp_ei", low_rho),
        "coverage_admire": coverage(results.z("admire")),
        "coverage_gp_ei": coverage(results.z("gp_ei")),
        "admire_std_calibration": float(factor.mean()) if len(factor) else float("nan"),
    }
    return "RESULT " + " ".join(f"{k}={v:.3g}" for k, v in keys.items())


if __name__ == "__main__":
    main()
