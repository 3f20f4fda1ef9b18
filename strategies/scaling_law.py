"""Loss at scale: fit L(N, D) = E + A/N^α + B/D^β per mixture on a ladder of proxy runs, predict beyond it.

N is the model's non-embedding parameter count and D its training tokens (Kaplan et al.; the
Chinchilla form). Mixtures share α and β when that extrapolates better (the Data Mixing Laws' nested
laws: the mixture moves the constants, the exponents are a property of the model family): with only
two or three sizes and token budgets per mixture, five free parameters each would chase seed noise.

For fixed exponents the law is linear in (E, A, B), so the fit is variable projection: an outer
bounded ``scipy.optimize.least_squares`` over (α, β) and, inside, non-negative least squares for each
mixture's constants. That is well-posed for any ladder and has no starting point for E to guess.

Uncertainty has two parts. A residual bootstrap (refit on fitted values plus resampled residuals,
predict, add a resampled residual again) covers fit and seed noise: the band is for the loss of one
run, not only for the mean. It cannot cover the law being wrong, which is what a prediction beyond the
ladder mostly risks: in ``bench/transfer.py`` (run at 30a40f4) a mixture heavy in code improved more at
the largest rung than the law fitted below it allowed, 2.7 % off and outside that band. So the fit also
backtests itself: it predicts each mixture's largest-compute rung from the rest of the ladder, and the
relative errors of those predictions, grown with how much farther (in log compute) the target lies
beyond the ladder than the backtest's rungs lay beyond theirs (``REACH_GROWTH``), widen every draw.
Far beyond the ladder the band is wide, which says what the ladder can support;
``bench/scaling_band.py`` measures its coverage on truths that are not of the law's form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import least_squares, nnls

Exponents = Literal["auto", "shared", "separate"]
EXPONENT_BOUNDS = (0.05, 1.5)
BAND = 0.9  # central share of the bootstrap predictions the band holds
N_BOOTSTRAP = 200
SEPARATE_PARAMS = 5  # E, A, α, B, β of one mixture's own law
# How the backtest's error grows with reach: (reach / backtest's reach) ** REACH_GROWTH. 1 is what a
# wrong exponent alone would give, but the terms it multiplies shrink with scale. Chosen on truths of
# other forms than the law's, at a seed the bench does not report: ``bench/scaling_band.py --tune
# --ladders 60`` (the 90 % band held 85 % of the truths 8x beyond the ladder with 0.5, 96 % with 0.75,
# 99 % with 1.0).
REACH_GROWTH = 0.75


@dataclass(frozen=True)
class LadderPoint:
    """One finished ladder run: which mixture, its model size and tokens, and its target loss."""

    mixture: str
    params: float
    tokens: float
    loss: float


@dataclass(frozen=True)
class Law:
    """One mixture's fitted law; ``predict`` takes raw N and D."""

    e: float
    a: float
    alpha: float
    b: float
    beta: float
    n0: float  # N and D are divided by these (the ladder's smallest) to keep the fit well scaled
    d0: float

    def predict(self, params: float | np.ndarray, tokens: float | np.ndarray) -> np.ndarray:
        n = np.asarray(params, dtype=float) / self.n0
        d = np.asarray(tokens, dtype=float) / self.d0
        return np.asarray(self.e + self.a * n**-self.alpha + self.b * d**-self.beta)

    def to_json(self) -> dict[str, float]:
        """The constants as stored (``ScalingFit.to_json`` keeps ``n0``/``d0`` once for all laws)."""
        return {"E": self.e, "A": self.a, "alpha": self.alpha, "B": self.b, "beta": self.beta}

    @classmethod
    def from_json(cls, stored: Mapping[str, float], n0: float, d0: float) -> Law:
        return cls(stored["E"], stored["A"], stored["alpha"], stored["B"], stored["beta"], n0, d0)


@dataclass(frozen=True)
class Prediction:
    loss: float
    low: float
    high: float


@dataclass(frozen=True)
class Backtest:
    """The law's own extrapolation error on the ladder: each mixture's largest-compute rung predicted
    from the rest of its rungs."""

    rel_rms: float  # root mean square of (truth - prediction) / truth over the held-out rungs
    log_reach: float  # mean ln(held-out N·D / largest N·D fitted on): how far those predictions reached

    def rel_sd(self, log_reach: float) -> float:
        """Relative misspecification error expected at ``log_reach`` beyond the ladder; 0 inside it."""
        return self.rel_rms * (max(0.0, log_reach) / self.log_reach) ** REACH_GROWTH


@dataclass(frozen=True)
class ScalingFit:
    laws: Mapping[str, Law]
    exponents: Literal["shared", "separate"]
    rmse: float  # in-sample, over all points
    residuals: tuple[float, ...] = field(repr=False)
    boot: Mapping[str, tuple[Law, ...]] = field(repr=False)  # bootstrap refits per mixture
    top_compute: Mapping[str, float] = field(repr=False)  # largest N·D each mixture was fitted on
    backtest: Backtest | None = None  # None: the ladder is too short to hold a rung out
    seed: int = 0

    def predict(self, mixture: str, params: float, tokens: float) -> Prediction:
        """Loss of one run of ``mixture`` at N=``params``, D=``tokens``, with a ``BAND`` interval."""
        law = self.laws[mixture]
        mean = float(law.predict(params, tokens))
        rng = np.random.default_rng(self.seed)
        boots = np.array([float(b.predict(params, tokens)) for b in self.boot.get(mixture, ())])
        if len(boots) == 0:
            return Prediction(mean, mean, mean)
        draws = boots + rng.choice(np.asarray(self.residuals), size=len(boots))
        if self.backtest is not None:
            reach = math.log(params * tokens / self.top_compute[mixture])
            draws += mean * self.backtest.rel_sd(reach) * rng.standard_normal(len(boots))
        tail = (1 - BAND) / 2 * 100
        low, high = np.percentile(draws, [tail, 100 - tail])
        return Prediction(mean, float(min(low, mean)), float(max(high, mean)))

    def to_json(self) -> dict[str, object]:
        return {
            "exponents": self.exponents,
            "rmse": self.rmse,
            "laws": {m: law.to_json() for m, law in self.laws.items()},
            "n0": next(iter(self.laws.values())).n0,
            "d0": next(iter(self.laws.values())).d0,
            "backtest": None if self.backtest is None else vars(self.backtest),
        }


class ScalingLawError(ValueError):
    """The ladder cannot support a fit (too few points or sizes)."""


def fit_scaling_law(
    points: Sequence[LadderPoint],
    *,
    exponents: Exponents = "auto",
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> ScalingFit:
    """Fit every mixture's law on ``points``; ``auto`` keeps shared exponents unless separate ones
    predict each mixture's largest-compute rung better when it is held out."""
    _check(points)
    n0 = min(p.params for p in points)
    d0 = min(p.tokens for p in points)
    backtests = _backtests(points, n0, d0, ("shared", "separate") if exponents == "auto" else (exponents,))
    if exponents == "auto":  # shared unless separate exponents extrapolated better on the ladder itself
        rms = {kind: bt.rel_rms for kind, bt in backtests.items()}
        exponents = "separate" if rms.get("separate", math.inf) < rms.get("shared", math.inf) else "shared"
    laws = _fit(points, exponents, n0, d0)
    fitted = np.array([float(laws[p.mixture].predict(p.params, p.tokens)) for p in points])
    y = np.array([p.loss for p in points])
    residuals = y - fitted
    # Residuals shrink in the fit by the parameters it spent; inflate them back (the usual leverage fix).
    n_free = 2 * (1 if exponents == "shared" else len(laws)) + 3 * len(laws)
    scale = math.sqrt(len(points) / max(1, len(points) - n_free))
    residuals = residuals * scale
    rng = np.random.default_rng(seed)
    boot: dict[str, list[Law]] = {m: [] for m in laws}
    for _ in range(n_bootstrap):
        y_b = fitted + rng.choice(residuals, size=len(points))
        resampled = [
            LadderPoint(p.mixture, p.params, p.tokens, float(v)) for p, v in zip(points, y_b, strict=True)
        ]
        for m, law in _fit(resampled, exponents, n0, d0, laws).items():
            boot[m].append(law)
    return ScalingFit(
        laws=laws,
        exponents=exponents,
        rmse=float(np.sqrt(np.mean((y - fitted) ** 2))),
        residuals=tuple(float(r) for r in residuals),
        boot={m: tuple(v) for m, v in boot.items()},
        top_compute=_top_compute(points),
        backtest=backtests.get(exponents),
        seed=seed,
    )


def holdout_largest(points: Sequence[LadderPoint]) -> tuple[list[LadderPoint], list[LadderPoint]]:
    """Split each mixture's ladder into (fit on, held out): held out are the runs at its largest-compute
    (N·D) rung, all seeds of it."""
    train: list[LadderPoint] = []
    held: list[LadderPoint] = []
    for m, top in _top_compute(points).items():
        for p in (p for p in points if p.mixture == m):
            (held if p.params * p.tokens >= top * (1 - 1e-9) else train).append(p)
    return train, held


def _top_compute(points: Sequence[LadderPoint]) -> dict[str, float]:
    """Each mixture's largest N·D on the ladder."""
    return {m: max(p.params * p.tokens for p in points if p.mixture == m) for m in _mixtures(points)}


def _check(points: Sequence[LadderPoint]) -> None:
    if not points:
        raise ScalingLawError("no ladder runs have finished yet")
    for p in points:
        if not (p.params > 0 and p.tokens > 0 and math.isfinite(p.loss) and p.loss > 0):
            raise ScalingLawError(f"ladder point {p} needs positive params, tokens and loss")
    for m in _mixtures(points):
        mine = [p for p in points if p.mixture == m]
        sizes = {p.params for p in mine}
        budgets = {p.tokens for p in mine}
        if len(sizes) < 2 or len(budgets) < 2:
            raise ScalingLawError(
                f"mixture {m!r} has {len(sizes)} model size(s) and {len(budgets)} token budget(s) on the "
                "ladder; a law in N and D needs at least two of each"
            )


def _mixtures(points: Sequence[LadderPoint]) -> list[str]:
    return list(dict.fromkeys(p.mixture for p in points))


def _backtests(
    points: Sequence[LadderPoint], n0: float, d0: float, kinds: Sequence[Literal["shared", "separate"]]
) -> dict[str, Backtest]:
    """Per kind of exponents in ``kinds``, how well a law fitted without each mixture's largest-compute
    rung predicts it; a kind is left out where the shortened ladder cannot support it."""
    train, held = holdout_largest(points)
    try:
        _check(train)
    except ScalingLawError:
        return {}  # too short a ladder to hold a rung out
    if min(sum(p.mixture == m for p in train) for m in _mixtures(train)) <= SEPARATE_PARAMS:
        kinds = [k for k in kinds if k == "shared"]  # five free parameters on five points would fit anything
    top = _top_compute(train)
    reach = float(np.mean([math.log(p.params * p.tokens / top[p.mixture]) for p in held]))
    out: dict[str, Backtest] = {}
    for kind in kinds:
        laws = _fit(train, kind, n0, d0)
        rel = [(p.loss - float(laws[p.mixture].predict(p.params, p.tokens))) / p.loss for p in held]
        out[kind] = Backtest(float(np.sqrt(np.mean(np.square(rel)))), reach)
    return out


def _fit(
    points: Sequence[LadderPoint],
    exponents: Literal["shared", "separate"],
    n0: float,
    d0: float,
    start: Mapping[str, Law] | None = None,
) -> dict[str, Law]:
    """``start``: a fit to begin the exponent search from (bootstrap refits), instead of a grid."""
    if exponents == "shared":
        first = next(iter(start.values())) if start else None
        return _fit_group(points, n0, d0, first)
    laws: dict[str, Law] = {}
    for m in _mixtures(points):
        laws.update(_fit_group([p for p in points if p.mixture == m], n0, d0, start[m] if start else None))
    return laws


def _fit_group(
    points: Sequence[LadderPoint], n0: float, d0: float, start: Law | None = None
) -> dict[str, Law]:
    """One (α, β) for every mixture in ``points``; NNLS constants per mixture for each trial (α, β)."""
    mixtures = _mixtures(points)
    groups = [[p for p in points if p.mixture == m] for m in mixtures]
    logs = [
        (np.log(np.array([p.params / n0 for p in g])), np.log(np.array([p.tokens / d0 for p in g])))
        for g in groups
    ]
    ys = [np.array([p.loss for p in g]) for g in groups]

    def constants(alpha: float, beta: float) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for (log_n, log_d), y in zip(logs, ys, strict=True):
            design = np.column_stack([np.ones_like(y), np.exp(-alpha * log_n), np.exp(-beta * log_d)])
            coef, _ = nnls(design, y)
            out.append((coef, y - design @ coef))
        return out

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.concatenate([r for _, r in constants(float(x[0]), float(x[1]))])

    lo, hi = EXPONENT_BOUNDS
    if start is not None:
        x0 = (start.alpha, start.beta)
    else:  # the SSE surface in (α, β) can have several valleys: begin in the best cell of a grid
        grid = np.linspace(lo + 0.05, hi - 0.05, 6)
        x0 = min(
            ((a, b) for a in grid for b in grid), key=lambda ab: float(np.sum(residuals(np.array(ab)) ** 2))
        )
    alpha, beta = least_squares(residuals, np.array(x0), bounds=([lo, lo], [hi, hi])).x
    return {
        m: Law(float(c[0]), float(c[1]), float(alpha), float(c[2]), float(beta), n0, d0)
        for m, (c, _) in zip(mixtures, constants(float(alpha), float(beta)), strict=True)
    }
