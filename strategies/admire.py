"""ADMIRE-style multi-fidelity Bayesian optimisation of the mixture (Chen et al. 2025, ADMIRE-BayesOpt).

Small proxies are cheap but biased; big ones are faithful but dear. One Gaussian process models the
target loss over (mixture, fidelity), and a cost-aware acquisition spends each FLOP where it teaches most
about the best loss *at the target fidelity*. Every call rebuilds everything from the history.

Choices, and why:

- **Simplex as a constraint, not a transform.** The GP sees the raw weights ``w`` (k columns); the
  acquisition is maximised over ``lo <= w <= hi`` with ``sum(w) = 1`` passed to ``optimize_acqf`` as an
  equality constraint (SLSQP). The epoch caps are plain linear bounds this way, exactly enforced; a
  softmax or ILR map would turn them into nonlinear constraints and stretch the kernel's metric near
  the simplex faces, where good mixtures (a capped domain, zeroed domains) tend to lie. The redundant
  k-th coordinate costs an ARD kernel nothing.
- **One feasible set.** Proposals and the recommendation both use the tightest caps in play: the
  element-wise minimum of every fidelity's caps and those at ``space.recommend_budget()``. A run outside
  the recommendable set would spend budget on mixtures we could never recommend.
- **Fidelity coordinate** ``s = log(cost / cheapest) / log(target / cheapest)`` from the declared costs:
  cheapest 0, target 1. Scaling laws are linear in log compute, so log cost spaces fidelities the way
  their losses differ.
- **Model**: a ``SingleTaskGP`` on ``-loss`` with ``Standardize``, made multi-fidelity by its parts
  (``mf_model``): BoTorch's linear-truncated fidelity kernel (that of ``SingleTaskMultiFidelityGP``)
  over RBF kernels with BoTorch's dimension-scaled lengthscale prior, its bias term under a scale of its
  own, its shared term under a fitted amplitude per fidelity (``AmplitudeFidelityKernel``: in BoTorch's
  kernel the target can never vary with the mixture more than the cheapest proxy, and on our own
  two-fidelity runs it varies 1.6 times as much, ``python bench/truths.py``); a mean level per fidelity
  (small proxies read higher everywhere); a noise level per fidelity (log-linear in ``s``,
  ``LogLinearNoise``: cheap runs are noisier, and one shared level let them blur the target runs).
  ``SingleTaskMultiFidelityGP`` itself (short-lengthscale Matern kernels, one mean, one scale for signal
  and bias) predicted held-out target runs worse on the tuning simulator (``bench/search_efficiency.py
  --split tune``), where this model was chosen. Duplicates stay as separate rows (their scatter is what
  tells the likelihood the noise levels); non-finite losses are dropped with a warning. Hyperparameters
  are fitted on at most ``max_fit`` runs (all target runs first) and the posterior then conditions on
  every run, so a call stays in seconds even when cheap runs pile up into the thousands. Fitting them on
  a subset of 128 runs made the mean over-optimistic at its argmax once cheap runs outnumbered target
  runs ten to one (Data-Mixing-Law truth, 64 runs' cost): the recommendation and the target runs aimed
  at that argmax both went wrong. The default cap, 512, is about the run count 64 target runs' cost buys
  when half of it goes to the cheapest fidelity (1/16 of the cost).
- **Cost model**: ``log cost = a + b s`` fitted by least squares to the mean *observed* cost at each
  fidelity (declared cost where none was observed), as an ``AffineFidelityCostModel`` whose output
  ``InverseCostWeightedUtility`` exponentiates.
- **Acquisition, two kinds.** Cheap runs: multi-fidelity GIBBON
  (``qMultiFidelityLowerBoundMaxValueEntropy``, the lower-bound form of max-value entropy search) divided
  by cost, which buys information about the best target loss where it is cheapest. It scores a point
  given pending ones without fantasy models, so greedy batches cost little more than single points;
  one-shot knowledge gradient would cost minutes per call at 17 domains. Target runs: qLogNEI on the
  same model at ``s = 1``: MES spreads target runs over wherever the optimum *might* be, EI puts them
  where it most likely *is*, the only place their evidence about the cheap fidelities' bias counts.
  Chosen on the tuning simulator, where it lowered regret from 16 runs' cost on.
- **Optimiser**: fidelities are discrete, so ``pool x fidelities`` is scored by GIBBON in one batched
  call: broad Dirichlet draws over the capped simplex plus tight draws around the best observed
  mixtures, all feasible by construction. Each greedy cheap pick is the best of a per-fidelity
  shortlist re-scored with the earlier picks and the runs in flight pending; ``polish_iters > 0`` adds
  SLSQP refinement by ``optimize_acqf`` (off by default: it did not lower regret and doubled the cost
  of a call). Each target pick is one ``optimize_acqf`` SLSQP search with the simplex as equality
  constraint and the target runs in flight or already picked as ``X_pending``, started from the best
  of one pool of uniform and cap-face points drawn once per call (``bt.start_pool``).
- **Target-share floor**: at least ``min_target_share`` (default half) of all cost, runs in flight
  included, goes to the target fidelity. A cheap fidelity that ranks mixtures well overall can be
  anti-correlated with the target near its optimum (small models like different mixtures); the MF
  kernel cannot learn that without target runs there, and MES, trusting the kernel, would otherwise
  buy almost nothing but cheap runs.
  On the tuning simulator a floor of 0.5 beat 0.3 beyond 8 runs' cost.
- **Fallback to the target alone**: the floor rises to all of the cost once the fitted kernel's
  correlation between every cheaper fidelity and the target (``fidelity_corr_<name>``, set by the bias
  term's learned scale) falls below ``min_fidelity_correlation``: cheap runs that say little about
  the target would only dilute the budget.
- **Initial design** while the history is small: best-candidate picks from Dirichlet draws on the
  capped simplex, mostly at the cheaper fidelities (weighted by 1/sqrt(cost)) plus two target runs.
  The first run at each fidelity is the target-aligned ``mf_design.anchor`` (half the mixture on the
  target's own domains, within the caps), the target's first of all: a budget of one target run buys
  it, so there is a predicted loss and std from then on, at the best prior guess. The target's second
  run is its ``mf_design.contrast`` (half on the domains the target does not name), so the first two
  target runs differ in loss and pin the target's amplitude. On the tuning family (``python
  bench/search_efficiency.py --split tune-family --methods admire --max-budget 4``) the anchor
  lowered regret at four target runs' cost from 0.27 (at 65f551b) to 0.18-0.20 (at e3c4ab6, 17a361b
  and 4a031e9), where the aligned mixture alone scores 0.18, and the contrast to 0.167 (0.193 with the
  anchor alone; at 3ea2ba7 and f39a014 on one machine: admire's path differs between machines).
- **Recommendation**: of the posterior mean's local maxima at the target fidelity (``optimize_acqf``
  on ``PosteriorMean``) and every observed mixture, under the caps at ``space.recommend_budget()``,
  the one with the lowest predicted loss + ``pessimism`` (2) x std, where the std is the latent one
  and the spread the target amplitude's uncertainty adds (``mf_model.amplitude_std``) together. The
  recommendation is spent on one big run, so it should be where the model is sure: on the tuning
  simulator the mean's own argmax drifted to where only cheap runs had been, with several times the
  std of the best target runs. And how far a mixture beats the target runs scales with the amplitude,
  which two or three target runs pin only loosely; with that term in the score, regret on the tuning
  family at four target runs' cost fell from 0.167 to 0.161 (the command above, at 087dab4 and
  8b796ab). Alternatives are the next-best candidates by the same score. Its reported std is that
  of the loss one run of the recommendation will reach: the posterior's, the error of the target's
  fitted mean level (``mf_model.level_variance``, universal kriging: the level is a point estimate
  from a few target runs), the target fidelity's fitted run noise (a run scatters by it; where the
  truth is rougher than the GP, marginal likelihood books the misfit there too), and the spread of
  the prediction over the target amplitude's uncertainty (``mf_model.amplitude_std``: with one
  target run nothing says how far the cheap runs' differences carry to the target); with no target run
  yet there is neither a predicted loss nor a std (nothing says where the target's level is), and the
  trust checks say so (``no_target_runs``). That std is then multiplied by ``std_scale`` (1.5): the
  model's own std is too small for the point picked as the best (the optimiser's curse: the minimum
  of a noisy surface is more likely to be where the model is optimistic). Chosen on the tuning split
  to cover 90 % of the true losses within ±1.645 std: ``python bench/search_efficiency.py --split
  tune --methods admire --max-budget 16`` prints the coverage and the factor on the std that would
  make it 90 %. A fixed factor cannot know how rough a given truth is, so the std is also multiplied
  by ``mf_model.loo_calibration``: the root mean square of the target runs' leave-one-out z (each predicted
  from every other run, in units of its predicted std), never below 1 (``std_calibration`` in the
  diagnostics). On the tuning split's smooth truths it barely acts (the command above at 815bbf2:
  it widened 2 of 30 stds, by 1.13 at most; coverage 93 % with or without it, where one
  recommendation is 3 points, so ``std_scale`` was left as it was), and where cheap runs mislead the
  model about the target, or the target is rougher than the kernel, the target runs show it. Its coverage
  on the held-out truths is in the README ("Search quality"), how it got there in
  ``docs/search_quality.md``.

Defaults were chosen on the tuning simulator (``--split tune``), anchor and contrast on the tuning family
(``--split tune-family``); the held-out truths of ``bench/search_efficiency.py`` (the default split)
are where its figures in the README come from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from botorch.models import SingleTaskGP

from strategies import botorch_utils as bt
from strategies import simplex
from strategies.base import Candidate, Observation, Recommendation, SearchSpace, StrategyError
from strategies.mf_acquisition import TargetImprovement, acquisition, candidate_pool, optimise
from strategies.mf_design import TargetShare, anchor, contrast, design, design_counts, fidelity_coordinates
from strategies.mf_model import (
    amplitude_std,
    diagnostics,
    fidelity_correlations,
    fit_model,
    level_variance,
)

logger = logging.getLogger(__name__)


class Admire:
    """Multi-fidelity BO: MF-GP, cost-weighted MF-GIBBON acquisition; recommends where the mean is
    low and sure.

    Parameters:
        n_initial: runs in the space-filling initial design, made before any GP is fitted (two at the
            target fidelity, the rest cheaper); default max(8, domains + 1)
        pool_size: Dirichlet draws over the capped simplex that MF-GIBBON scores at every fidelity per
            call, plus draws around the best runs; at least 16
        shortlist: best-scoring pool points per fidelity re-scored at each greedy cheap pick of a batch
        polish_iters: most SLSQP iterations refining each cheap pick with optimize_acqf; 0 = off
        max_fit: most runs the GP hyperparameters are fitted on (target runs first); the posterior uses all
        min_target_share: least share of declared cost, runs in flight included, spent at the target
            fidelity, in [0, 1]
        num_mv_samples: samples of the best target loss (over the pool) MF-GIBBON draws to score points
        n_alternatives: runner-up mixtures returned with the recommendation, ranked by the same score
        pessimism: the recommendation minimises predicted loss + pessimism x posterior std; 0 = mean only
        min_fidelity_correlation: below this fitted correlation between every cheaper fidelity and the
            target (``fidelity_corr_<name>`` in the diagnostics), only target runs are proposed
        std_scale: the reported std is this multiple of the model's (recalibration, see above)
    """

    name = "admire"

    def __init__(
        self,
        n_initial: int | None = None,
        pool_size: int = 1024,
        shortlist: int = 24,
        polish_iters: int = 0,
        max_fit: int = 512,
        min_target_share: float = 0.5,
        num_mv_samples: int = 10,
        n_alternatives: int = 5,
        pessimism: float = 2.0,
        min_fidelity_correlation: float = 0.5,
        std_scale: float = 1.5,
    ) -> None:
        if n_initial is not None and n_initial < 1:
            raise StrategyError(f"n_initial must be >= 1, got {n_initial}")
        if pool_size < 16 or shortlist < 1 or polish_iters < 0 or max_fit < 8:
            raise StrategyError("need pool_size >= 16, shortlist >= 1, polish_iters >= 0 and max_fit >= 8")
        if pessimism < 0:
            raise StrategyError(f"pessimism must be >= 0, got {pessimism}")
        if std_scale <= 0:
            raise StrategyError(f"std_scale must be > 0, got {std_scale}")
        if not 0 <= min_fidelity_correlation <= 1:
            raise StrategyError(f"min_fidelity_correlation must be in [0, 1], got {min_fidelity_correlation}")
        if not 0 <= min_target_share <= 1:
            raise StrategyError(f"min_target_share must be in [0, 1], got {min_target_share}")
        self.n_initial = n_initial
        self.pool_size = int(pool_size)
        self.shortlist = int(shortlist)
        self.polish_iters = int(polish_iters)
        self.max_fit = int(max_fit)
        self.min_target_share = float(min_target_share)
        self.num_mv_samples = int(num_mv_samples)
        self.n_alternatives = int(n_alternatives)
        self.pessimism = float(pessimism)
        self.min_fidelity_correlation = float(min_fidelity_correlation)
        self.std_scale = float(std_scale)

    def propose(
        self,
        space: SearchSpace,
        history: Sequence[Observation],
        n: int,
        seed: int,
        pending: Sequence[Candidate] = (),
    ) -> list[Candidate]:
        lo, hi = feasible_set(space)
        coords = fidelity_coordinates(space)
        obs = usable(space, history)
        known = {f.name for f in space.fidelities}
        flying = [c for c in pending if c.fidelity in known and len(c.weights) == space.k]
        n_initial = self.n_initial or max(8, space.k + 1)
        if len(obs) < n_initial:
            return initial_design(space, [*obs, *flying], n, design_counts(space, n_initial), lo, hi, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = fit_model(space, obs, coords, self.max_fit)
            pool = candidate_pool(model, space.k, obs, lo, hi, self.pool_size, seed)
            acq = acquisition(model, space, obs, coords, pool, self.num_mv_samples)
            observed = simplex.dedupe(np.array([o.weights for o in obs]))
            target = TargetImprovement(model, bt.with_columns(observed, {space.k: 1.0}), lo, hi, seed)
            floor = self._target_floor(model, space, coords, obs)
            share = TargetShare(space, [o.fidelity for o in obs] + [c.fidelity for c in flying], floor)
            in_flight = bt.as_tensor([[*c.weights, coords[c.fidelity]] for c in flying]) if flying else None
            x, names = optimise(
                acq, target, pool, coords, share, lo, hi, n, self.shortlist, self.polish_iters, in_flight
            )
        weights = bt.feasible_rows(x, space.k, lo, hi)
        logger.debug("admire proposed %s", names)
        return [Candidate(tuple(float(v) for v in w), f) for w, f in zip(weights, names, strict=True)]

    def _target_floor(
        self, model: SingleTaskGP, space: SearchSpace, coords: dict[str, float], obs: Sequence[Observation]
    ) -> float:
        """The target fidelity's least cost share: all of it once the fitted kernel says no cheaper
        fidelity tells much about the target (single-fidelity BO on the target from then on)."""
        rho = fidelity_correlations(model, space, coords, obs)
        if rho and max(rho.values()) < self.min_fidelity_correlation:
            logger.info("cheap fidelities say little about the target (%s): target runs only", rho)
            return 1.0
        return self.min_target_share

    def recommend(self, space: SearchSpace, history: Sequence[Observation]) -> Recommendation:
        lo, hi = space.bounds(space.recommend_budget())
        obs = usable(space, history)
        if not obs:
            w = simplex.project(space.natural(), lo, hi)[0]
            return Recommendation(tuple(float(v) for v in w), None, None, {"n_observations": 0.0})
        coords = fidelity_coordinates(space)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = fit_model(space, obs, coords, self.max_fit)
            optima = bt.maximise_mean(model, lo, hi, {space.k: 1.0}, num_restarts=4, raw_samples=256, seed=0)
        observed = np.array([o.weights for o in obs])
        pool = np.concatenate([optima, simplex.project(observed, lo, hi)])
        unsure_amplitude = partial(amplitude_std, model)
        ranked = bt.ranked_by_loss(
            model, pool, {space.k: 1.0}, self.n_alternatives + 1, self.pessimism, unsure_amplitude
        )
        (best_w, best_loss, best_std), rest = ranked[0], ranked[1:]
        target = [i for i, o in enumerate(obs) if o.fidelity == space.target_fidelity.name]
        predicted = std = None  # no target run: nothing says where its loss level is (trust: no_target_runs)
        info = diagnostics(model, space, obs, len(history), self.max_fit)
        if target:
            at_target = bt.with_columns(best_w, {space.k: 1.0})
            level_var = level_variance(model, at_target, target)
            run_var = bt.noise_std(model, at_target) ** 2
            calibration = float(info["std_calibration"])  # how far LOO missed the target runs
            predicted = best_loss
            total = best_std**2 + level_var + run_var  # best_std holds the amplitude's share
            std = self.std_scale * calibration * float(np.sqrt(total))
        return Recommendation(
            weights=tuple(float(v) for v in best_w),
            predicted_loss=predicted,
            std=std,
            diagnostics=info,
            alternatives=tuple((tuple(float(v) for v in w), loss) for w, loss, _ in rest),
        )


def feasible_set(space: SearchSpace) -> tuple[np.ndarray, np.ndarray]:
    """Bounds every fidelity's caps and the recommendation's caps allow at once."""
    lo, hi = space.bounds(space.recommend_budget())
    for f in space.fidelities:
        hi = np.minimum(hi, space.caps(f.tokens))
    if hi.sum() < 1 - 1e-9:
        raise StrategyError(
            f"the epoch caps of all fidelities together allow only {hi.sum():.3f} of a mixture; "
            "raise max_epochs or add data"
        )
    return lo, hi


def usable(space: SearchSpace, history: Sequence[Observation]) -> list[Observation]:
    """Observations the model can learn from: known fidelity, k weights, finite target loss."""
    names = {f.name for f in space.fidelities}
    keep: list[Observation] = []
    for o in history:
        if len(o.weights) != space.k:
            raise StrategyError(f"a run has {len(o.weights)} weights; the space has {space.k} domains")
        if o.fidelity not in names:
            logger.warning("ignoring a run at unknown fidelity %r", o.fidelity)
        elif not np.isfinite(o.target_loss):
            logger.warning("ignoring a run with non-finite target loss %r at %s", o.target_loss, o.fidelity)
        else:
            keep.append(o)
    return keep


def initial_design(
    space: SearchSpace,
    taken: Sequence[Observation | Candidate],
    n: int,
    counts: dict[str, int],
    lo: np.ndarray,
    hi: np.ndarray,
    seed: int,
) -> list[Candidate]:
    """Fill what the design (``counts``: runs per fidelity) still lacks given the runs ``taken`` (done or
    in flight), cheapest fidelity first; extra slots go to the cheapest. The first run at each fidelity
    goes to the target-aligned ``anchor`` (where the target names training domains), the target's
    before all others: its loss and std are then known from the first target run's cost on, and it is
    the best prior guess of the target's optimum. The target's second run is the anchor's ``contrast``,
    which moves the target domains' share: two target runs of much the same loss leave the target's
    amplitude to the prior, and every prediction away from them with it. The rest are space-filling
    among the runs at their own fidelity."""
    names: list[str] = []
    for f in space.fidelities:
        have = sum(o.fidelity == f.name for o in taken)
        names += [f.name] * max(0, counts[f.name] - have)
    first, target = anchor(space, lo, hi), space.target_fidelity.name
    fresh = {f.name for f in space.fidelities} - {o.fidelity for o in taken}
    if first is not None and target in fresh and target in names:
        names.insert(0, names.pop(names.index(target)))
    names = (names + [space.fidelities[0].name] * n)[:n]
    guesses = {f.name: [first] for f in space.fidelities} | {target: [first, contrast(space, lo, hi)]}
    rng, weights = np.random.default_rng(seed), np.empty((n, space.k))
    for name in dict.fromkeys(names):
        slots = [i for i, other in enumerate(names) if other == name]
        done = np.array([o.weights for o in taken if o.fidelity == name]).reshape(-1, space.k)
        weights[slots] = design(rng, len(slots), lo, hi, done, guesses[name])
    return [Candidate(tuple(float(v) for v in w), f) for w, f in zip(weights, names, strict=True)]
