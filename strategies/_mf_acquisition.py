"""The acquisition and optimiser of ``admire``: cost-weighted MF-GIBBON, maximised by batched scoring of
a candidate pool plus SLSQP polishing on the capped simplex."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from botorch.acquisition.cost_aware import InverseCostWeightedUtility
from botorch.acquisition.max_value_entropy_search import qMultiFidelityLowerBoundMaxValueEntropy
from botorch.acquisition.objective import GenericMCObjective
from botorch.acquisition.utils import project_to_target_fidelity
from botorch.models import AffineFidelityCostModel, SingleTaskMultiFidelityGP
from botorch.optim import optimize_acqf

from strategies import _botorch_utils as bt
from strategies import simplex
from strategies._mf_design import TargetShare
from strategies.base import Observation, SearchSpace


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
    model: SingleTaskMultiFidelityGP,
    k: int,
    obs: Sequence[Observation],
    lo: np.ndarray,
    hi: np.ndarray,
    size: int,
    seed: int,
) -> np.ndarray:
    """Mixtures to score ``(size + extra, k)``: Dirichlet draws over the whole capped simplex (sparse,
    flat and dense), plus tight draws around the five observed mixtures the model rates best."""
    rng = np.random.default_rng(seed)
    broad = simplex.dirichlet(rng, np.ones(k), [0.5 * k, 1.0 * k, 3.0 * k], size, lo, hi)
    observed = simplex.dedupe(simplex.project(np.array([o.weights for o in obs]), lo, hi))
    top = [w for w, _, _ in bt.ranked_by_loss(model, observed, {k: 1.0}, 5)]
    local = [simplex.dirichlet(rng, w, [50.0, 200.0], size // 16, lo, hi, reject=False) for w in top]
    return np.concatenate([broad, observed, *local])


def acquisition(
    model: SingleTaskMultiFidelityGP,
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


def optimise(
    acq: qMultiFidelityLowerBoundMaxValueEntropy,
    pool: np.ndarray,
    coords: dict[str, float],
    share: TargetShare,
    lo: np.ndarray,
    hi: np.ndarray,
    q: int,
    shortlist_size: int,
    polish_iters: int,
) -> tuple[torch.Tensor, list[str]]:
    """Sequential-greedy batch ``(q, k + 1)`` over a scored shortlist, and each pick's fidelity.

    Fidelities are discrete, so ``pool x fidelities`` is scored in one batched call (thousands of points
    cost less than a few SLSQP steps). The best ``shortlist`` points per fidelity are re-scored at each
    greedy step with the points already chosen pending; the winner (at the target fidelity whenever its
    cost share is due, never the same row twice) is optionally polished by ``optimize_acqf`` under the
    simplex equality constraint at its fidelity, and joins the pending set.
    """
    k = pool.shape[1]
    values = sorted(set(coords.values()))
    grid = torch.stack([bt.with_columns(pool, {k: s}) for s in values])  # (F, P, k + 1)
    with torch.no_grad():
        scores = acq(grid.reshape(-1, 1, k + 1)).reshape(grid.shape[:2])  # (F, P)
    top = scores.topk(min(max(shortlist_size, q), pool.shape[0]), dim=1).indices  # (F, M)
    shortlist = torch.cat([grid[f, top[f]] for f in range(len(values))])  # (F * M, k + 1)
    at_target = shortlist[:, k] == 1.0
    used = torch.zeros(len(shortlist), dtype=torch.bool)
    chosen: list[torch.Tensor] = []
    names: list[str] = []
    for _ in range(min(q, len(shortlist))):  # fewer only if the pool itself is smaller than q
        acq.set_X_pending(torch.stack(chosen) if chosen else None)
        with torch.no_grad():
            value = acq(shortlist.unsqueeze(1)).masked_fill(used, -torch.inf)
        if share.target_due() and bool((at_target & ~used).any()):
            value = value.masked_fill(~at_target, -torch.inf)
        pick = int(value.argmax())
        used[pick] = True
        best = shortlist[pick]
        chosen.append(_polish(acq, best, lo, hi, polish_iters) if polish_iters else best)
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
