"""Loss at scale: fit L(N, D) per mixture on a ladder of proxy runs, predict beyond it.

N is the model's non-embedding parameter count and D its training tokens. Three forms of the law:

- ``additive``, L = E + A/N^α + B/D^β (Hoffmann et al., the Chinchilla form): what a model size
  gains does not depend on the tokens;
- ``joint``, L = E + A·(B/N^α + 1/D)^β (Kaplan et al. 2020, eq. 1.5, plus E): a larger model gains
  more from more tokens. On our ladders the largest preset trains at half the smaller ones' learning
  rate or less and is far from converged on its shortest budgets, so it improves faster with tokens
  than the smaller presets do: in ``bench/transfer.py`` (at 30a40f4 and 41f4087) the additive law,
  fitted below each ladder's top rung, put that rung too high every time it missed it (by 2.7 % and
  6.9 %).
- ``plateau``, L = E + A/N^α + B/D^β + P·exp(-D/(τ·N^γ)): short runs still leaving an early plateau,
  where each doubling of tokens gains more than the last. Neither form above can bend that way (both
  are convex in log D), and the service's own ladder is there: in ``bench/transfer.py --ladder-tokens
  preset`` (at 1b9fdaa) presets ``s`` and ``m`` lost more on their second doubling than their first,
  and every law put the held-out ``m`` rung 5.7-9.1 % too high. τ·N^γ is how many tokens a model of
  size N takes to leave the plateau (larger presets train at a lower learning rate); far beyond the
  ladder the term is gone and the additive law is left. It is only tried where some preset has three
  token budgets or more, so that a bend can be seen, with τ, γ and the exponents shared by the mixtures.

Mixtures share α and β when that extrapolates better (the Data Mixing Laws' nested laws: the mixture
moves the constants, the exponents are a property of the model family): with only two or three sizes
and token budgets per mixture, five free parameters each would chase seed noise. Which form and which
exponents a ladder gets is decided on the ladder itself (``auto``): the one whose law, fitted without
each mixture's largest-compute rung, predicted those rungs best.

For fixed exponents (and, in the joint form, each mixture's B) the law is linear in E and A (and B in
the additive form), so the fit is variable projection: an outer bounded
``scipy.optimize.least_squares`` over the nonlinear parameters and, inside, non-negative least squares
for each mixture's linear constants. That has no starting point for E to guess.

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

Form = Literal["additive", "joint", "plateau"]
Exponents = Literal["shared", "separate"]
EXPONENT_BOUNDS = (0.05, 1.5)
LOG_B_BOUNDS = (-12.0, 12.0)  # the joint form's B, whose scale is free
LOG_TAU_BOUNDS = (-4.0, 4.0)  # the plateau form's τ, in units of the ladder's smallest budget
GAMMA_BOUNDS = (0.0, 3.0)  # the plateau form's γ
BEND_BUDGETS = 3  # token budgets at one model size that show whether the loss curve bends
# How much more the last doubling of tokens must gain than the one before for a size to count as still
# in the early regime: a margin so that seed noise alone rarely flags one (not tuned on any ladder).
ACCELERATION_MARGIN = 0.1
BAND = 0.9  # central share of the bootstrap predictions the band holds
N_BOOTSTRAP = 200
SEPARATE_PARAMS = 5  # E, A, α, B, β of one mixture's own law
# How the backtest's error grows with reach: (reach / backtest's reach) ** REACH_GROWTH. 1 is what a
# wrong exponent alone would give, but the terms it multiplies shrink with scale. Chosen on truths of
# other forms than the law's, at a seed the bench does not report: ``bench/scaling_band.py --tune
# --ladders 60``, when the law had only the additive form (the 90 % band held 85 % of the
# truths 8x beyond the ladder with 0.5, 96 % with 0.75, 99 % with 1.0).
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
    """One mixture's fitted law; ``predict`` takes raw N and D. The constants mean what ``form`` says:
    E + A·n^-α + B·d^-β (``additive``), E + A·(B·n^-α + 1/d)^β (``joint``) or
    E + A·n^-α + B·d^-β + P·exp(-d/(τ·n^γ)) (``plateau``)."""

    e: float
    a: float
    alpha: float
    b: float
    beta: float
    n0: float  # N and D are divided by these (the ladder's smallest) to keep the fit well scaled
    d0: float
    form: Form = "additive"
    p: float = 0.0
    tau: float = 0.0
    gamma: float = 0.0

    def predict(self, params: float | np.ndarray, tokens: float | np.ndarray) -> np.ndarray:
        n = np.asarray(params, dtype=float) / self.n0
        d = np.asarray(tokens, dtype=float) / self.d0
        if self.form == "joint":
            return np.asarray(self.e + self.a * (self.b * n**-self.alpha + 1 / d) ** self.beta)
        additive = self.e + self.a * n**-self.alpha + self.b * d**-self.beta
        if self.form == "plateau":
            return np.asarray(additive + self.p * np.exp(-d / (self.tau * n**self.gamma)))
        return np.asarray(additive)

    def to_json(self) -> dict[str, float]:
        """The constants as stored (``ScalingFit.to_json`` keeps the form, ``n0`` and ``d0`` once for all)."""
        out = {"E": self.e, "A": self.a, "alpha": self.alpha, "B": self.b, "beta": self.beta}
        if self.form == "plateau":
            out |= {"P": self.p, "tau": self.tau, "gamma": self.gamma}
        return out

    @classmethod
    def from_json(cls, stored: Mapping[str, float], n0: float, d0: float, form: Form = "additive") -> Law:
        plateau = (stored.get("P", 0.0), stored.get("tau", 0.0), stored.get("gamma", 0.0))
        return cls(
            stored["E"], stored["A"], stored["alpha"], stored["B"], stored["beta"], n0, d0, form, *plateau
        )


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
    form: Form
    exponents: Exponents
    rmse: float  # in-sample, over all points
    residuals: tuple[float, ...] = field(repr=False)
    boot: Mapping[str, tuple[Law, ...]] = field(repr=False)  # bootstrap refits per mixture
    top_compute: Mapping[str, float] = field(repr=False)  # largest N·D each mixture was fitted on
    backtest: Backtest | None = None  # None: the ladder is too short to hold a rung out
    early_regime: tuple[float, ...] = ()  # model sizes still in it (``early_regime``)
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
            "form": self.form,
            "exponents": self.exponents,
            "rmse": self.rmse,
            "laws": {m: law.to_json() for m, law in self.laws.items()},
            "n0": next(iter(self.laws.values())).n0,
            "d0": next(iter(self.laws.values())).d0,
            "backtest": None if self.backtest is None else vars(self.backtest),
            "early_regime": list(self.early_regime),
        }


class ScalingLawError(ValueError):
    """The ladder cannot support a fit (too few points or sizes)."""


Kind = tuple[Form, Exponents]
# Backtests within BACKTEST_TIE of the lowest are a tie, which goes to the kind listed first here: the
# additive form before the joint, shared exponents before separate, the plateau form (which holds the
# additive one, P = 0) last. On a ladder that the additive law fits exactly, both backtest at rounding
# level, and which is lower then depends on the CPU's floating point.
BACKTEST_TIE = 1e-6
KINDS: tuple[Kind, ...] = (
    ("additive", "shared"),
    ("joint", "shared"),
    ("additive", "separate"),
    ("joint", "separate"),
    ("plateau", "shared"),
)


def fit_scaling_law(
    points: Sequence[LadderPoint],
    *,
    form: Form | Literal["auto"] = "auto",
    exponents: Exponents | Literal["auto"] = "auto",
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> ScalingFit:
    """Fit every mixture's law on ``points``. ``auto`` (form, exponents): of the kinds allowed, the one
    that predicted each mixture's held-out largest-compute rung best (a tie goes to the simpler); the
    additive form with shared exponents where the ladder is too short to hold a rung out, or no other
    kind did better."""
    _check(points)
    n0 = min(p.params for p in points)
    d0 = min(p.tokens for p in points)
    kinds = [k for k in KINDS if form in ("auto", k[0]) and exponents in ("auto", k[1])]
    if not kinds:
        raise ScalingLawError(
            f"no law of the {form} form with {exponents} exponents; the plateau form shares them"
        )
    backtests = _backtests(points, n0, d0, kinds)
    lowest = min((b.rel_rms for b in backtests.values()), default=0.0)
    kind = next(
        (k for k in kinds if k in backtests and backtests[k].rel_rms <= lowest + BACKTEST_TIE), kinds[0]
    )
    laws = _fit(points, kind, n0, d0)
    fitted = np.array([float(laws[p.mixture].predict(p.params, p.tokens)) for p in points])
    y = np.array([p.loss for p in points])
    residuals = y - fitted
    # Residuals shrink in the fit by the parameters it spent; inflate them back (the usual leverage fix).
    n_free = (
        2 * (1 if kind[1] == "shared" else len(laws))
        + 3 * len(laws)
        + (2 + len(laws)) * (kind[0] == "plateau")
    )
    scale = math.sqrt(len(points) / max(1, len(points) - n_free))
    residuals = residuals * scale
    rng = np.random.default_rng(seed)
    boot: dict[str, list[Law]] = {m: [] for m in laws}
    for _ in range(n_bootstrap):
        y_b = fitted + rng.choice(residuals, size=len(points))
        resampled = [
            LadderPoint(p.mixture, p.params, p.tokens, float(v)) for p, v in zip(points, y_b, strict=True)
        ]
        for m, law in _fit(resampled, kind, n0, d0, laws).items():
            boot[m].append(law)
    return ScalingFit(
        laws=laws,
        form=kind[0],
        exponents=kind[1],
        rmse=float(np.sqrt(np.mean((y - fitted) ** 2))),
        residuals=tuple(float(r) for r in residuals),
        boot={m: tuple(v) for m, v in boot.items()},
        top_compute=_top_compute(points),
        backtest=backtests.get(kind),
        early_regime=early_regime(points),
        seed=seed,
    )


def early_regime(points: Sequence[LadderPoint]) -> tuple[float, ...]:
    """Model sizes at which some mixture's loss fell by ``ACCELERATION_MARGIN`` more per doubling of
    tokens on its last two budgets than on the two before (seed means). Such runs are still short of
    the power-law regime: a law that cannot bend that way predicts too high beyond them, and one that
    can rests on where the bend ends, which the ladder has not seen."""
    sizes = set()
    for m in _mixtures(points):
        for n in _sizes(points, m):
            mine = [p for p in points if p.mixture == m and p.params == n]
            budgets = sorted({p.tokens for p in mine})[-BEND_BUDGETS:]
            if len(budgets) < BEND_BUDGETS:
                continue
            loss = [float(np.mean([p.loss for p in mine if p.tokens == d])) for d in budgets]
            drops = [(loss[i] - loss[i + 1]) / math.log2(budgets[i + 1] / budgets[i]) for i in (0, 1)]
            if drops[1] > drops[0] + ACCELERATION_MARGIN * abs(drops[0]):
                sizes.add(n)
    return tuple(sorted(sizes))


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


def _shows_bend(points: Sequence[LadderPoint]) -> bool:
    """Whether every mixture has ``BEND_BUDGETS`` token budgets at one model size at least: the least
    that shows how its loss curve bends, which the plateau form's τ and γ are fitted to."""
    return all(
        max(len({p.tokens for p in points if p.mixture == m and p.params == n}) for n in _sizes(points, m))
        >= BEND_BUDGETS
        for m in _mixtures(points)
    )


def _sizes(points: Sequence[LadderPoint], mixture: str) -> list[float]:
    return sorted({p.params for p in points if p.mixture == mixture})


def _mixtures(points: Sequence[LadderPoint]) -> list[str]:
    return list(dict.fromkeys(p.mixture for p in points))


def _backtests(
    points: Sequence[LadderPoint], n0: float, d0: float, kinds: Sequence[Kind]
) -> dict[Kind, Backtest]:
    """Per kind in ``kinds``, how well a law fitted without each mixture's largest-compute rung predicts
    it; a kind is left out where the shortened ladder cannot support it."""
    train, held = holdout_largest(points)
    try:
        _check(train)
    except ScalingLawError:
        return {}  # too short a ladder to hold a rung out
    if min(sum(p.mixture == m for p in train) for m in _mixtures(train)) <= SEPARATE_PARAMS:
        # Five free parameters on five points would fit anything.
        kinds = [k for k in kinds if k[1] == "shared"]
    if not _shows_bend(train):
        kinds = [k for k in kinds if k[0] != "plateau"]
    top = _top_compute(train)
    reach = float(np.mean([math.log(p.params * p.tokens / top[p.mixture]) for p in held]))
    out: dict[Kind, Backtest] = {}
    for kind in kinds:
        laws = _fit(train, kind, n0, d0)
        rel = [(p.loss - float(laws[p.mixture].predict(p.params, p.tokens))) / p.loss for p in held]
        out[kind] = Backtest(float(np.sqrt(np.mean(np.square(rel)))), reach)
    return out


def _fit(
    points: Sequence[LadderPoint], kind: Kind, n0: float, d0: float, start: Mapping[str, Law] | None = None
) -> dict[str, Law]:
    """``start``: a fit to begin the search from (bootstrap refits), instead of a grid."""
    form, exponents = kind
    if exponents == "shared":
        return _fit_group(points, form, n0, d0, start)
    laws: dict[str, Law] = {}
    for m in _mixtures(points):
        laws.update(_fit_group([p for p in points if p.mixture == m], form, n0, d0, start))
    return laws


def _fit_group(
    points: Sequence[LadderPoint], form: Form, n0: float, d0: float, start: Mapping[str, Law] | None = None
) -> dict[str, Law]:
    """One (α, β) for every mixture in ``points``; the linear constants per mixture by NNLS for each
    trial of the nonlinear ones (α, β and, in the joint form, each mixture's log B; in the plateau
    form, log τ and γ)."""
    mixtures = _mixtures(points)
    groups = [[p for p in points if p.mixture == m] for m in mixtures]
    logs = [
        (np.log(np.array([p.params / n0 for p in g])), np.log(np.array([p.tokens / d0 for p in g])))
        for g in groups
    ]
    ys = [np.array([p.loss for p in g]) for g in groups]

    def design(x: np.ndarray, i: int) -> np.ndarray:
        (log_n, log_d), alpha, beta = logs[i], x[0], x[1]
        if form == "joint":
            joint = (np.exp(x[2 + i] - alpha * log_n) + np.exp(-log_d)) ** beta
            return np.column_stack([np.ones_like(log_n), joint])
        columns = [np.ones_like(log_n), np.exp(-alpha * log_n), np.exp(-beta * log_d)]
        if form == "plateau":
            columns.append(np.exp(-np.exp(log_d - x[2] - x[3] * log_n)))
        return np.column_stack(columns)

    def constants(x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for i, y in enumerate(ys):
            a = design(x, i)
            coef, _ = nnls(a, y)
            out.append((coef, y - a @ coef))
        return out

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.concatenate([r for _, r in constants(x)])

    (lo, hi), k = EXPONENT_BOUNDS, len(mixtures)
    lower, upper = [lo, lo], [hi, hi]
    if form == "joint":
        lower, upper = lower + [LOG_B_BOUNDS[0]] * k, upper + [LOG_B_BOUNDS[1]] * k
    if form == "plateau":
        lower = lower + [LOG_TAU_BOUNDS[0], GAMMA_BOUNDS[0]]
        upper = upper + [LOG_TAU_BOUNDS[1], GAMMA_BOUNDS[1]]
    if start is not None:
        first = start[mixtures[0]]
        x0 = np.array([first.alpha, first.beta])
        if form == "joint":
            x0 = np.concatenate([x0, [math.log(max(start[m].b, 1e-12)) for m in mixtures]])
        if form == "plateau":
            x0 = np.concatenate([x0, [math.log(max(first.tau, 1e-12)), first.gamma]])
        x0 = np.clip(x0, lower, upper)
    else:  # the SSE surface can have several valleys: begin in the best cell of a grid
        grid = np.linspace(lo + 0.05, hi - 0.05, 6)
        extras: list[list[float]] = [[]]
        if form == "joint":
            extras = [[lb] * k for lb in (-2.0, 0.0, 2.0)]
        if form == "plateau":
            extras = [[lt, g] for lt in (-1.0, 0.5, 2.0) for g in (0.0, 1.0)]
        cells = [np.array([a, b, *e]) for a in grid for b in grid for e in extras]
        x0 = min(cells, key=lambda x: float(np.sum(residuals(x) ** 2)))
    x = least_squares(residuals, x0, bounds=(lower, upper)).x
    laws = {}
    for i, (m, (c, _)) in enumerate(zip(mixtures, constants(x), strict=True)):
        b = math.exp(x[2 + i]) if form == "joint" else float(c[2])
        plateau = (float(c[3]), math.exp(x[2]), float(x[3])) if form == "plateau" else (0.0, 0.0, 0.0)
        laws[m] = Law(float(c[0]), float(c[1]), float(x[0]), b, float(x[1]), n0, d0, form, *plateau)
    return laws
