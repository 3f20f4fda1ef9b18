"""CLIMB (Diao et al., 2025): iterative bootstrap mixture search with a predictor, in a few rounds.

The run budget is split over rounds (default 3 rounds, 4:2:1 — 16, 8 and 4 of 28 runs):

- round 1 explores: feasible Dirichlet draws around the natural prior, over sparse-to-dense concentrations;
- every later round exploits: a predictor (the same LightGBM mixture → loss model as RegMix, refitted on all
  runs so far) scores a large pool — broad Dirichlet draws plus tight Dirichlet draws around the best runs,
  tighter each round — and the best-predicted mixtures, kept apart from each other and from runs already
  made, are trained next.

Strategies are stateless, so the round is derived from the history: with h runs at the search fidelity, the
round is the one whose share of the budget h falls in. ``propose`` never crosses a round boundary (the next
round needs a refit on this round's results first), so it may return fewer candidates than asked; the loop
calls again once results are in. The same history and seed always give the same proposals, so a worker that
restarts between (or within) rounds picks up where it left off.

Runs still training are invisible in the history. A loop that keeps several runs in flight should pass them
as ``pending``: they count towards their round, proposals keep away from them, and no run of the next round
is proposed until every run of the current one has finished. Without ``pending`` such a loop overshoots a
round by up to (runs in flight - 1); the total budget still holds, the split only approximately.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from strategies import simplex
from strategies.base import Candidate, Observation, Recommendation, SearchSpace, StrategyError, at_fidelity
from strategies.regmix import DEFAULT_CONCENTRATIONS, RegMix

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundState:
    """Where the search stands.

    ``round`` (0-based; == n_rounds once the budget is spent) is the round of the next run to create,
    ``remaining`` how many runs may be proposed now (0 while it waits on the previous round's results),
    ``done`` and ``pending`` the finished and in-flight runs at the search fidelity.
    """

    round: int
    remaining: int
    done: int
    pending: int = 0


def round_sizes(budget: int, split: Sequence[float]) -> list[int]:
    """Runs per round, proportional to ``split`` (largest remainders first; every round gets at least one)."""
    shares = np.asarray(split, dtype=float)
    if len(shares) == 0 or np.any(shares <= 0):
        raise StrategyError(f"split must be a non-empty list of positive numbers, got {list(split)}")
    if budget < len(shares):
        raise StrategyError(f"a budget of {budget} runs cannot cover {len(shares)} rounds")
    exact = budget * shares / shares.sum()
    sizes = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - sizes), kind="stable")[: budget - sizes.sum()]:
        sizes[i] += 1
    for i in np.flatnonzero(sizes == 0):  # a tiny share still gets its round, paid by the largest
        sizes[np.argmax(sizes)] -= 1
        sizes[i] = 1
    return [int(s) for s in sizes]


DEFAULT_BUDGET = 28


class Climb:
    """Clustering-based iterative data mixture bootstrapping; see the module docstring.

    ``model``, ``folds``, ``seed`` and ``regressor_params`` configure the predictor (see RegMix).

    Parameters:
        budget: total runs at the search fidelity, over all rounds; default: the experiment's budget
            (28 if it has none)
        split: relative round sizes, one per round, e.g. (4, 2, 1); every round gets at least one run
        pool_size: candidates the predictor scores in each later round (half broad draws, half local
            draws around the best runs); also the samples scored when recommending
        concentrations: Dirichlet strengths around the natural prior for round 1, the broad draws and
            the final search (low = sparse); default: RegMix's 15 values from 0.1 to 5
        local_concentration: Dirichlet strength of the local draws around the best runs in round 2,
            doubling each later round (higher = tighter)
        n_elite: best runs so far (lowest target loss at the search fidelity) the local draws centre on
        min_distance: least L1 distance from a proposal to the others and to runs already made
        model: the predictor's regressor, "lightgbm", "linear", "gp" or "ensemble" (see RegMix)
        folds: cross-validation folds of the predictor's fit (at least 2)
        fidelity: name of the fidelity to search at and to fit the predictor on first; default: the target
        seed: seed of the predictor's fits and of the recommendation search (proposals use each call's seed)
        regressor_params: overrides of the predictor regressor's settings (e.g. LightGBM parameters)
    """

    name = "climb"

    def __init__(
        self,
        budget: int | None = None,
        split: Sequence[float] = (4, 2, 1),
        pool_size: int = 20000,
        concentrations: Sequence[float] = DEFAULT_CONCENTRATIONS,
        local_concentration: float = 30.0,
        n_elite: int = 5,
        min_distance: float = 0.02,
        model: str = "lightgbm",
        folds: int = 5,
        fidelity: str | None = None,
        seed: int = 0,
        regressor_params: Mapping[str, Any] | None = None,
    ) -> None:
        self.budget = int(budget) if budget is not None else None
        self.split = tuple(float(s) for s in split)
        round_sizes(self.budget or DEFAULT_BUDGET, self.split)  # a bad split or budget fails here, not later
        self.n_rounds = len(self.split)
        if pool_size < 1 or n_elite < 1 or not local_concentration > 0 or min_distance < 0:
            raise StrategyError(
                "need pool_size >= 1, n_elite >= 1, local_concentration > 0 and min_distance >= 0"
            )
        self.pool_size, self.n_elite = int(pool_size), int(n_elite)
        self.local_concentration, self.min_distance = float(local_concentration), float(min_distance)
        self.fidelity = fidelity
        # The predictor and the final optimiser are RegMix's: same model, CV diagnostics and cap handling.
        self.predictor = RegMix(
            model=model,
            concentrations=concentrations,
            n_search=pool_size,
            folds=folds,
            fidelity=fidelity,
            seed=seed,
            regressor_params=regressor_params,
        )
        self.concentrations = self.predictor.concentrations

    def state(
        self, space: SearchSpace, history: Sequence[Observation], pending: Sequence[Candidate] = ()
    ) -> RoundState:
        """The current round and how many of its runs may be proposed now."""
        fidelity = self._fidelity(space)
        done = len(at_fidelity(history, fidelity))
        in_flight = sum(c.fidelity == fidelity for c in pending)
        created = done + in_flight
        ends = np.cumsum(self.sizes(space))
        r = int(np.searchsorted(ends, created, side="right"))
        if r >= self.n_rounds:
            return RoundState(self.n_rounds, 0, done, in_flight)
        start = int(ends[r - 1]) if r > 0 else 0
        remaining = int(ends[r]) - created if done >= start else 0  # a new round needs all earlier results
        return RoundState(r, remaining, done, in_flight)

    def sizes(self, space: SearchSpace) -> list[int]:
        """Runs per round: this strategy's budget, else the experiment's (from the space)."""
        budget = self.budget if self.budget is not None else int(space.budget or DEFAULT_BUDGET)
        return round_sizes(budget, self.split)

    def _fidelity(self, space: SearchSpace) -> str:
        return space.fidelity(self.fidelity).name if self.fidelity else space.target_fidelity.name

    # ---- propose -------------------------------------------------------------------------------
    def propose(
        self,
        space: SearchSpace,
        history: Sequence[Observation],
        n: int,
        seed: int,
        pending: Sequence[Candidate] = (),
    ) -> list[Candidate]:
        """Up to ``n`` runs of the current round (fewer at its end); ``pending``: runs still training."""
        fidelity = self._fidelity(space)
        st = self.state(space, history, pending)
        want = min(n, st.remaining)
        if want <= 0:
            return []
        lo, hi = space.bounds(space.fidelity(fidelity).tokens)
        rng = np.random.default_rng(seed)
        made = [o.weights for o in at_fidelity(history, fidelity)]
        made += [c.weights for c in pending if c.fidelity == fidelity]
        seen = np.array(made, dtype=float).reshape(-1, space.k)
        model = self.predictor.fit(space, history) if st.round > 0 else None
        if model is None:
            if st.round > 0:
                logger.warning("climb: too few runs to fit a predictor in round %d; sampling", st.round + 1)
            pool = simplex.dirichlet(rng, space.natural(), self.concentrations, 4 * want, lo, hi)
            chosen = self._spread(pool, seen, want)
        else:
            pool = self._pool(space, history, fidelity, st.round, rng, lo, hi)
            chosen = self._spread(pool[np.argsort(model.predict(pool), kind="stable")], seen, want)
        logger.info(
            "climb round %d/%d: proposing %d of %d remaining",
            st.round + 1,
            self.n_rounds,
            len(chosen),
            st.remaining,
        )
        return [Candidate(tuple(float(x) for x in w), fidelity) for w in chosen]

    def _pool(
        self,
        space: SearchSpace,
        history: Sequence[Observation],
        fidelity: str,
        round_: int,
        rng: np.random.Generator,
        lo: np.ndarray,
        hi: np.ndarray,
    ) -> np.ndarray:
        """Broad draws around the prior plus local draws around the best runs, tighter each round."""
        obs = sorted(at_fidelity(history, fidelity), key=lambda o: o.target_loss)[: self.n_elite]
        broad = simplex.dirichlet(rng, space.natural(), self.concentrations, self.pool_size // 2, lo, hi)
        local_conc = [self.local_concentration * 2 ** (round_ - 1)]
        per_elite = max(1, (self.pool_size - len(broad)) // max(1, len(obs)))
        local = [simplex.dirichlet(rng, np.asarray(o.weights), local_conc, per_elite, lo, hi) for o in obs]
        return np.concatenate([broad, *local])

    def _spread(self, ranked: np.ndarray, seen: np.ndarray, want: int) -> np.ndarray:
        """The first ``want`` rows of ``ranked`` at L1 distance >= ``min_distance`` from each other and from
        ``seen`` (runs already made), so a round does not spend runs on near-copies."""
        kept: list[np.ndarray] = []
        others = seen
        for w in ranked:
            if len(others) and np.abs(others - w).sum(axis=1).min() < self.min_distance:
                continue
            kept.append(w)
            others = np.vstack([others, w])
            if len(kept) == want:
                break
        if len(kept) < want:
            logger.warning("climb: only %d distinct mixtures found of %d asked", len(kept), want)
        return np.array(kept).reshape(-1, len(ranked[0]) if len(ranked) else 0)

    # ---- recommend -----------------------------------------------------------------------------
    def recommend(self, space: SearchSpace, history: Sequence[Observation]) -> Recommendation:
        """The final predictor's optimum within the caps at ``space.recommend_budget()``."""
        rec = self.predictor.recommend(space, history)
        st = self.state(space, history)
        diagnostics = {**rec.diagnostics, "climb_rounds_done": float(st.round), "climb_runs": float(st.done)}
        return Recommendation(rec.weights, rec.predicted_loss, rec.std, diagnostics, rec.alternatives)
