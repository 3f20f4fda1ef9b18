"""Where a multi-fidelity search starts: the fidelity coordinate and a space-filling first design."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strategies import simplex
from strategies.base import SearchSpace, StrategyError


def _scale(space: SearchSpace) -> np.ndarray:
    """Declared cost per fidelity (tokens where a cost is missing): what makes one fidelity dearer."""
    cost = np.array([f.cost for f in space.fidelities], dtype=float)
    if np.all(cost > 0):
        return cost
    tokens = np.array([f.tokens for f in space.fidelities], dtype=float)
    if np.all(tokens > 0):
        return tokens
    raise StrategyError("every fidelity needs a positive cost or token count")


def fidelity_coordinates(space: SearchSpace) -> dict[str, float]:
    """Fidelity name → ``s`` in [0, 1]: log cost, cheapest 0, target 1 (all 1 when costs are equal)."""
    log_cost = np.log(_scale(space))
    span = log_cost[-1] - log_cost.min()
    if span <= 0:
        return {f.name: 1.0 for f in space.fidelities}
    s = np.clip((log_cost - log_cost.min()) / span, 0.0, 1.0)
    return {f.name: float(v) for f, v in zip(space.fidelities, s, strict=True)}


def design_counts(space: SearchSpace, n_initial: int) -> dict[str, int]:
    """Runs per fidelity in the first design: two at the target, the rest ∝ 1/sqrt(cost) below it.

    The target runs pin the GP's offset between fidelities; the cheap ones buy coverage of the simplex.
    """
    target = space.target_fidelity.name
    lower = [f for f in space.fidelities if f.name != target]
    counts = {f.name: 0 for f in space.fidelities}
    counts[target] = n_initial if not lower else min(2, n_initial)
    rest = n_initial - counts[target]
    if rest <= 0:
        return counts
    scale = _scale(space)[:-1]
    share = rest * scale**-0.5 / np.sum(scale**-0.5)
    floor = np.floor(share).astype(int)
    for i in np.argsort(floor - share)[: rest - floor.sum()]:  # largest remainders get the leftovers
        floor[i] += 1
    for f, c in zip(lower, floor, strict=True):
        counts[f.name] += int(c)
    return counts


def anchor(space: SearchSpace, lo: np.ndarray, hi: np.ndarray, share: float = 0.5) -> np.ndarray | None:
    """The mixture a practitioner tries first: ``share`` of it on the target's own domains (by target
    weight), the rest as the corpus comes (natural), within the bounds (``simplex.fill``); None when no
    target domain is a training domain.

    Training on the data you are evaluated on is the first prior a practitioner reaches for, and with
    epoch caps the target's domains often sit at their caps in the best mixture. On the tuning family of
    ``bench/truths.py`` this one mixture has target regret 0.15-0.23 (mean 0.18), where admire without
    it (at 65f551b) reached 0.27 after four target runs' cost and TPE's best of four target runs 0.27
    (``python bench/search_efficiency.py --split tune-family --methods aligned,admire,tpe
    --max-budget 4``).
    """
    t = np.array([space.target.get(d, 0.0) for d in space.domains], dtype=float)
    if t.sum() <= 0:
        return None
    return simplex.fill((1.0 - share) * space.natural() + share * t / t.sum(), lo, hi)


def contrast(space: SearchSpace, lo: np.ndarray, hi: np.ndarray, share: float = 0.5) -> np.ndarray | None:
    """The anchor's opposite: ``share`` of the mixture on the domains the target does not name (as the
    corpus comes), the rest natural; None unless the target names some training domains and not all.

    A second target run that differs from the anchor mostly in the domains the target ignores (both
    heavy on web and code, say, for a web-and-code target) scores much like it, which leaves the target's
    amplitude to the prior; this one moves the target's own share, the direction its loss moves most.
    """
    t = np.array([space.target.get(d, 0.0) > 0 for d in space.domains])
    if not t.any() or t.all():
        return None
    other = np.where(t, 0.0, space.natural())
    return simplex.fill((1.0 - share) * space.natural() + share * other / other.sum(), lo, hi)


def design(
    rng: np.random.Generator,
    n: int,
    lo: np.ndarray,
    hi: np.ndarray,
    done: np.ndarray,
    guesses: Sequence[np.ndarray | None],
) -> np.ndarray:
    """``n`` more runs at one fidelity that has the runs ``done``: the prior ``guesses`` not yet reached
    (the first runs at a fidelity are the guesses, in order), then ``space_filling`` from all of them."""
    k = len(lo)
    chosen = np.array([g for g in guesses if g is not None][len(done) :][:n]).reshape(-1, k)
    ref = np.concatenate([np.asarray(done, dtype=float).reshape(-1, k), chosen])
    return np.concatenate([chosen, space_filling(rng, n - len(chosen), lo, hi, ref)])


def space_filling(
    rng: np.random.Generator,
    n: int,
    lo: np.ndarray,
    hi: np.ndarray,
    taken: np.ndarray,
    tries: int = 10,
) -> np.ndarray:
    """``n`` feasible mixtures spread out from each other and from ``taken`` (Mitchell's best candidate).

    Each new point is the one of ``tries`` Dirichlet draws farthest from everything chosen so far, which
    spreads points evenly without the pull towards vertices that a global maximin design has. The
    draws are ``simplex.broad``'s.
    """
    k = len(lo)
    pool = simplex.broad(rng, n * tries, lo, hi)
    chosen: list[np.ndarray] = []
    existing = np.asarray(taken, dtype=float).reshape(-1, k)
    for i in range(n):
        draws = pool[i * tries : (i + 1) * tries]
        ref = np.concatenate([existing, np.array(chosen).reshape(-1, k)])
        if len(ref) == 0:
            chosen.append(draws[0])
            continue
        dist = np.linalg.norm(draws[:, None, :] - ref[None, :, :], axis=-1).min(axis=1)
        chosen.append(draws[int(np.argmax(dist))])
    return np.array(chosen).reshape(-1, k)


class TargetShare:
    """Keeps at least ``floor`` of all (declared) cost at the target fidelity.

    A cheap fidelity's bias can flip sign near the optimum, where the target's own runs are the only
    evidence of it; a multi-fidelity kernel fitted on few target runs cannot see this and keeps rating
    cheap runs as near-perfect stand-ins. The floor guarantees those target runs keep coming.
    """

    def __init__(self, space: SearchSpace, fidelities: list[str], floor: float) -> None:
        scale = _scale(space)
        self.cost = {f.name: float(c / scale[-1]) for f, c in zip(space.fidelities, scale, strict=True)}
        self.target_name, self.floor = space.target_fidelity.name, floor
        self.total = sum(self.cost[f] for f in fidelities)
        self.target = sum(self.cost[f] for f in fidelities if f == self.target_name)

    def target_due(self) -> bool:
        return self.target < self.floor * self.total

    def add(self, fidelity: str) -> None:
        self.total += self.cost[fidelity]
        if fidelity == self.target_name:
            self.target += self.cost[fidelity]
