"""The acquisitions and optimiser of ``admire``.

Two acquisitions, each for the job it does well: cost-weighted MF-GIBBON (information about the best
target loss per FLOP) decides what the cheap fidelities explore, maximised by batched scoring of a
candidate pool; log noisy expected improvement at the target fidelity, maximised by SLSQP on the capped
simplex, places the target runs where the optimum is likely to be."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property, partial

import numpy as np
import torch
from botorch.acquisition.cost_aware import InverseCostWeightedUtility
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.max_value_entropy_search import qMultiFidelityLowerBoundMaxValueEntropy
from botorch.acquisition.objective import GenericMCObjective
from botorch.acquisition.utils import project_to_target_fidelity
from botorch.models import AffineFidelityCostModel, SingleTaskGP
from botorch.optim import optimize_acqf

from strategies import botorch_utils as bt
from strategies import simplex
from strategies.base import Observation, SearchSpace
from strategies.mf_design import TargetShare


def cost_utility(
    space: SearchSpace, obs: Sequence[Observation], coords: dict[str, float]
) -> InverseCostWeightedUtility:
    """Inverse-cost weighting with ``log cost = a + b s`` fitted to each fidelity's mean observed cost.

    Only the slope matters to the argmax, so the model is expressed relative to the target's cost:
    ``log c(s) - log c(1) = b (s - 1)``, which keeps the numbers near 1.
    """
    s, log_cost = [], []
    for f in space.fidelities:
        seen = [o.cost for o in obs if o.fidelity == f.name and o.cost > 0]
        cost = float(np.mean(seen)) if seen else f.cost
        if cost > 0:
            s.append(coords[f.name])
            log_cost.append(np.log(cost))
    # With fewer than two known cost levels every fidelity looks equally dear and MES alone decides.
    b = float(np.polyfit(s, log_cost, 1)[0]) if len(set(s)) >= 2 else 0.0
    cost_model = AffineFidelityCostModel(fidelity_weights={space.k: b}, fixed_cost=-b)
    return InverseCostWeightedUtility(cost_model, cost_objective=GenericMCObjective(_exp))


def _exp(log_cost: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
    """Cost from the log-cost model's output ``(..., q, 1)`` → ``(..., q)``."""
    return log_cost.squeeze(-1).exp()


def candidate_pool(
    model: SingleTaskGP,
    k: int,
    obs: Sequence[Observation],
    lo: np.ndarray,
    hi: np.ndarray,
    size: int,
    seed: int,
) -> np.ndarray:
    """Mixtures to score ``(size + extra, k)``: ``simplex.broad`` draws over the whole capped simplex,
    plus tight draws around the five observed mixtures the model rates best."""
    rng = np.random.default_rng(seed)
    broad = simplex.broad(rng, size, lo, hi)
    observed = simplex.dedupe(simplex.project(np.array([o.weights for o in obs]), lo, hi))
    top = [w for w, _, _ in bt.ranked_by_loss(model, observed, {k: 1.0}, 5)]
    local = [simplex.dirichlet(rng, w, [50.0, 200.0], size // 16, lo, hi, reject=False) for w in top]
    return np.concatenate([broad, observed, *local])


def acquisition(
    model: SingleTaskGP,
    space: SearchSpace,
    obs: Sequence[Observation],
    coords: dict[str, float],
    pool: np.ndarray,
    num_mv_samples: int,
) -> qMultiFidelityLowerBoundMaxValueEntropy:
    """Cost-weighted MF-GIBBON; max values are sampled over ``pool`` at the target fidelity.

    GIBBON (the lower-bound form of max-value entropy search) scores a point given pending ones without
    fantasy models, so sequential-greedy batches cost about as much as single points.
    """
    return qMultiFidelityLowerBoundMaxValueEntropy(
        model,
        candidate_set=bt.with_columns(pool, {space.k: 1.0}),
        num_mv_samples=num_mv_samples,
        cost_aware_utility=cost_utility(space, obs, coords),
        project=partial(project_to_target_fidelity, target_fidelities={space.k: 1.0}, d=space.k + 1),
    )


class TargetImprovement:
    """Picks target-fidelity runs by qLogNEI on the MF model at ``s = 1``, one SLSQP search per pick.

    Max-value entropy spreads target runs over everywhere the optimum *might* be; once the cheap runs
    have mapped the simplex, target runs earn more where it most likely *is*, which is what expected
    improvement asks for. Pending target runs (in flight, or picked earlier in this batch) are
    ``X_pending``, so a batch spreads out; pending cheap runs are not, since their losses are not
    target losses. The baseline is every observed mixture at ``s = 1``: NEI uses the posterior there,
    not the observed losses, so cheap runs' mixtures are valid incumbents too.
    """

    def __init__(
        self,
        model: SingleTaskGP,
        baseline: torch.Tensor,
        lo: np.ndarray,
        hi: np.ndarray,
        seed: int,
        num_restarts: int = 2,
        raw_samples: int = 256,
        maxiter: int = 50,
    ) -> None:
        self.model, self.baseline, self.lo, self.hi, self.seed = model, baseline, lo, hi, seed
        self.num_restarts, self.raw_samples, self.maxiter = num_restarts, raw_samples, maxiter

    @cached_property
    def starts(self) -> torch.Tensor:
        """One start pool for every pick of a call, drawn at the first pick: a batch of cheap runs
        only never pays for the hit-and-run draw."""
        return bt.start_pool(self.lo, self.hi, {len(self.lo): 1.0}, self.raw_samples // 2, self.seed)

    def pick(self, pending: Sequence[torch.Tensor]) -> torch.Tensor:
        """The next target run ``(k + 1,)`` given pending target runs ``(k + 1,)`` each."""
        k = len(self.lo)
        acq = qLogNoisyExpectedImprovement(
            self.model,
            X_baseline=self.baseline,
            X_pending=torch.stack(list(pending)) if pending else None,
        )
        x, _ = optimize_acqf(
            acq,
            bounds=bt.box(self.lo, self.hi, extra=1),
            q=1,
            num_restarts=self.num_restarts,
            batch_initial_conditions=bt.restart_points(
                acq, self.starts, self.num_restarts, self.seed + len(pending)
            ),
            fixed_features={k: 1.0},
            equality_constraints=bt.simplex_equality(k),
            options={"maxiter": self.maxiter},
        )
        return x.detach().reshape(-1)


def optimise(
    acq: qMultiFidelityLowerBoundMaxValueEntropy,
    target: TargetImprovement,
    pool: np.ndarray,
    coords: dict[str, float],
    share: TargetShare,
    lo: np.ndarray,
    hi: np.ndarray,
    q: int,
    shortlist_size: int,
    polish_iters: int,
    pending: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Sequential-greedy batch ``(q, k + 1)`` and each pick's fidelity.

    Whenever the target fidelity's cost share is due, the pick is ``target``'s (expected improvement
    at the target). Otherwise it is the best of a shortlist by cost-weighted MF-GIBBON: fidelities are
    discrete, so ``pool x fidelities`` is scored in one batched call (thousands of points cost less
    than a few SLSQP steps), and the best ``shortlist`` points per fidelity are re-scored at each
    greedy step with everything already chosen, and ``pending`` ``(p, k + 1)`` runs in flight, as
    pending (never the same row twice); optionally polished by ``optimize_acqf`` under the simplex
    equality constraint at its fidelity.
    """
    k = pool.shape[1]
    values = sorted(set(coords.values()))
    grid = torch.stack([bt.with_columns(pool, {k: s}) for s in values])  # (F, P, k + 1)
    with torch.no_grad():
        scores = acq(grid.reshape(-1, 1, k + 1)).reshape(grid.shape[:2])  # (F, P)
    top = scores.topk(min(max(shortlist_size, q), pool.shape[0]), dim=1).indices  # (F, M)
    shortlist = torch.cat([grid[f, top[f]] for f in range(len(values))])  # (F * M, k + 1)
    used = torch.zeros(len(shortlist), dtype=torch.bool)
    in_flight = list(pending) if pending is not None else []
    chosen: list[torch.Tensor] = []
    names: list[str] = []
    for _ in range(q):
        if share.target_due() or bool(used.all()):
            best = target.pick([x for x in in_flight + chosen if float(x[k]) == 1.0])
        else:
            acq.set_X_pending(torch.stack(in_flight + chosen) if in_flight or chosen else None)
            with torch.no_grad():
                value = acq(shortlist.unsqueeze(1)).masked_fill(used, -torch.inf)
            pick = int(value.argmax())
            used[pick] = True
            best = shortlist[pick]
            best = _polish(acq, best, lo, hi, polish_iters) if polish_iters else best
        chosen.append(best)
        names.append(_nearest_fidelity(coords, float(best[k])))
        share.add(names[-1])
    acq.set_X_pending(None)
    return torch.stack(chosen), names


def _polish(
    acq: qMultiFidelityLowerBoundMaxValueEntropy,
    start: torch.Tensor,
    lo: np.ndarray,
    hi: np.ndarray,
    iters: int,
) -> torch.Tensor:
    """Local SLSQP ascent from ``start`` ``(k + 1,)`` on the capped simplex, its fidelity held fixed."""
    k = start.shape[0] - 1
    x, _ = optimize_acqf(
        acq,
        bounds=bt.box(lo, hi, extra=1),
        q=1,
        num_restarts=1,
        batch_initial_conditions=start.reshape(1, 1, -1),
        fixed_features={k: float(start[k])},
        equality_constraints=bt.simplex_equality(k),
        options={"maxiter": iters},
    )
    return x.detach().reshape(-1)


def _nearest_fidelity(coords: dict[str, float], s: float) -> str:
    """The fidelity at coordinate ``s``; ties go to the later (dearer, more faithful) one."""
    names = list(coords)
    dist = [abs(coords[name] - s) for name in names]
    return names[len(dist) - 1 - int(np.argmin(dist[::-1]))]
