"""Geometry of the capped simplex {w : lo <= w <= hi, sum(w) = 1}, shared by all strategies."""

from __future__ import annotations

import numpy as np

from strategies.base import StrategyError


def project(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, iters: int = 60) -> np.ndarray:
    """Euclidean projection of ``x`` (shape (k,) or (n, k)) onto the capped simplex.

    The projection is ``clip(x - tau, lo, hi)`` for the scalar tau making the sum 1; tau is found by
    bisection, vectorised over rows.
    """
    x = np.atleast_2d(np.asarray(x, dtype=float))
    if hi.sum() < 1 - 1e-9 or lo.sum() > 1 + 1e-9:
        raise StrategyError("the bounds admit no mixture")
    a = (x - hi).min(axis=1) - 1.0
    b = (x - lo).max(axis=1) + 1.0
    for _ in range(iters):
        tau = (a + b) / 2
        s = np.clip(x - tau[:, None], lo, hi).sum(axis=1)
        a = np.where(s > 1, tau, a)
        b = np.where(s > 1, b, tau)
    w = np.clip(x - ((a + b) / 2)[:, None], lo, hi)
    w = w / w.sum(axis=1, keepdims=True)
    return w


def fill(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``x`` (k,) rescaled onto the capped simplex keeping its proportions where the bounds allow: a
    weight clipped at a bound hands the difference to the others in proportion to theirs. Unlike
    ``project``, which shifts every weight by one constant (zeroing the small ones), small domains stay
    small but present."""
    if hi.sum() < 1 - 1e-9 or lo.sum() > 1 + 1e-9:
        raise StrategyError("the bounds admit no mixture")
    x = np.clip(np.asarray(x, dtype=float), 0.0, None)
    w = np.clip(x / x.sum(), lo, hi) if x.sum() > 0 else lo.copy()
    for _ in range(len(w) + 1):
        gap = 1.0 - w.sum()
        if abs(gap) < 1e-12:
            break
        free = w < hi - 1e-12 if gap > 0 else w > lo + 1e-12
        if not free.any():  # the bounds sum to 1 within the check's tolerance: renormalise below
            break
        share = np.where(free, x, 0.0)
        share = share / share.sum() if share.sum() > 0 else free / free.sum()
        w = np.clip(w + gap * share, lo, hi)
    return w / w.sum()


def is_feasible(w: np.ndarray, lo: np.ndarray, hi: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Row-wise test that each mixture lies in the capped simplex."""
    w = np.atleast_2d(w)
    return (np.abs(w.sum(axis=1) - 1) <= tol) & np.all(w >= lo - tol, axis=1) & np.all(w <= hi + tol, axis=1)


def dirichlet(
    rng: np.random.Generator,
    center: np.ndarray,
    concentrations: np.ndarray | list[float],
    n: int,
    lo: np.ndarray,
    hi: np.ndarray,
    reject: bool = True,
    max_rounds: int = 50,
) -> np.ndarray:
    """``n`` feasible Dirichlet draws around ``center``, spread over ``concentrations`` (sparse to dense).

    With ``reject`` (the RegMix recipe) draws that break a bound are thrown away and redrawn; whatever
    is still missing after ``max_rounds`` is filled by projecting draws onto the bounds.
    """
    center = np.clip(np.asarray(center, dtype=float), 1e-6, None)
    center = center / center.sum()
    conc = np.asarray(concentrations, dtype=float)
    out: list[np.ndarray] = []
    for _ in range(max_rounds if reject else 1):
        need = n - sum(len(o) for o in out)
        if need <= 0:
            break
        c = conc[rng.integers(len(conc), size=need * 2)]
        draws = np.stack([rng.dirichlet(center * ci) for ci in c])
        draws = np.nan_to_num(draws, nan=0.0)
        draws = draws[np.isclose(draws.sum(axis=1), 1.0)]
        if reject:
            out.append(draws[is_feasible(draws, lo, hi)][:need])
        else:
            out.append(project(draws[:need], lo, hi))
    w = np.concatenate(out) if out else np.empty((0, len(center)))
    if len(w) < n:
        c = conc[rng.integers(len(conc), size=n - len(w))]
        extra = np.stack([rng.dirichlet(center * ci) for ci in c])
        w = np.concatenate([w, project(extra, lo, hi)])
    return w[:n]


def broad(rng: np.random.Generator, n: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``n`` feasible draws over the whole capped simplex: sparse, flat and dense Dirichlets (alpha 0.5,
    1 and 3 per domain), so that corners, faces and the middle are all visited."""
    k = len(lo)
    return dirichlet(rng, np.ones(k), [0.5 * k, 1.0 * k, 3.0 * k], n, lo, hi)


def dedupe(w: np.ndarray, decimals: int = 4) -> np.ndarray:
    """Drop rows equal after rounding, keeping first occurrences in order."""
    _, idx = np.unique(np.round(w, decimals), axis=0, return_index=True)
    return w[np.sort(idx)]


def unseen(w: np.ndarray, seen: np.ndarray, decimals: int = 4) -> np.ndarray:
    """Mask of the rows of ``w`` equal to no row of ``seen`` after rounding. Rows are compared as raw
    bytes in one vectorised sort, not as a set of Python tuples rebuilt from the whole history on every
    planner pass (weights are never negative, so rounding never gives -0.0)."""
    w, seen = np.ascontiguousarray(np.round(w, decimals)), np.ascontiguousarray(np.round(seen, decimals))
    row = np.dtype((np.void, w.dtype.itemsize * w.shape[1]))
    return ~np.isin(w.view(row).ravel(), seen.astype(w.dtype).view(row).ravel())
