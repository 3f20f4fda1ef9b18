"""Does the scaling law's band hold the truth on ladders of known truths, some of forms the law cannot take?

``strategies.scaling_law`` fits L = E + A/N^α + B/D^β, Kaplan's joint form or the additive one plus a
plateau term, whichever extrapolated best on the ladder itself. Real losses are not exactly any of
them, and a band built only from the fit's residuals (a bootstrap) says nothing about it. This bench
draws ladders from truths of several forms and counts how often the 90 % band holds the truth

- at the ladder's held-out largest rung (the check ``bench/transfer.py`` makes on real runs), and
- far beyond it (8x the largest model, 8x its tokens),

for the bootstrap band alone and with the backtest term (the law's own extrapolation error on the
ladder, scaled by the log-compute reach). The truths, per ladder of 3 mixtures on the presets' sizes
(xs, s, m) x 500k, 1M, 2M tokens, one run each, draw from:

- ``kaplan``: L = E + ((Nc/N)^(α/β) + Dc/D)^β, the joint form of Kaplan et al. (2020), which the
  library can fit since it offers that form: a check that the choice of form finds it;
- ``own_exponents``: the additive form, every mixture with its own exponents, 0.1 apart on average;
- ``interaction``: the additive form plus C/(N^γ D^δ), a term in both at once (no form has it);
- ``slow_start``: the additive form plus P/(1 + (D/(τ·N^γ))^κ), runs still leaving an early plateau,
  longer for larger models: each doubling of tokens gains more than the last, as ``bench/transfer.py
  --ladder-tokens preset`` saw at ``s`` and ``m``. The plateau form bends that way, but its plateau
  ends exponentially, this one as a power (κ), so some of it is left far beyond the ladder;

each with seed noise of sd 0.01-0.03 (``bench/transfer.py`` measured 0.027 at ``s``). The report
tunes nothing: the band's level (90 %) and the backtest's growth with reach (``REACH_GROWTH``) are fixed
in the library; ``--tune`` shows how that growth was chosen, on two of the kinds at another seed, and
``--tune-margin`` why the plateau form, with more parameters, competes on its backtest alone.

    .venv/bin/python bench/scaling_band.py [--quick] [--ladders 100] [--tune] [--tune-margin]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strategies import scaling_law  # noqa: E402
from strategies.scaling_law import (  # noqa: E402
    KINDS,
    LadderPoint,
    ScalingFit,
    fit_scaling_law,
    holdout_largest,
)

SIZES = (442_944, 2_459_200, 7_965_504)  # non-embedding params of xs, s, m at vocab 4096
BUDGETS = (500_000, 1_000_000, 2_000_000)
FAR = (8 * SIZES[-1], 8 * BUDGETS[-1])
MIXTURES = 3
TUNE_FAMILIES, TUNE_SEED, TUNE_GROWTHS = ["kaplan", "own_exponents"], 1, (0.5, 0.75, 1.0)
TUNE_MARGINS = (1.0, 0.75, 0.5, 0.25)  # --tune-margin: the plateau form's handicap in the choice
Truth = Callable[[float, float], float]


def _law(e: float, a: float, alpha: float, b: float, beta: float) -> Truth:
    return lambda n, d: e + a * (n / SIZES[0]) ** -alpha + b * (d / BUDGETS[0]) ** -beta


def _constants(rng: np.random.Generator) -> tuple[float, float, float]:
    """E, A, B of one mixture: losses of about 6 at the smallest rung, as the demo corpus gives."""
    return rng.uniform(2.5, 4.0), rng.uniform(0.8, 1.6), rng.uniform(0.8, 1.6)


def kaplan(rng: np.random.Generator) -> list[Truth]:
    beta, ratio = rng.uniform(0.3, 0.7), rng.uniform(0.5, 1.5)  # ratio: α/β

    def one() -> Truth:
        e, scale = rng.uniform(2.5, 4.0), rng.uniform(1.5, 3.0)
        nc, dc = rng.uniform(0.5, 2.0) * SIZES[0], rng.uniform(0.5, 2.0) * BUDGETS[0]
        return lambda n, d: e + scale * ((nc / n) ** ratio + dc / d) ** beta

    return [one() for _ in range(MIXTURES)]


def own_exponents(rng: np.random.Generator) -> list[Truth]:
    centre = rng.uniform(0.2, 0.5, size=2)

    def one() -> Truth:
        alpha, beta = np.clip(centre + rng.normal(0, 0.07, size=2), 0.08, 1.2)
        e, a, b = _constants(rng)
        return _law(e, a, float(alpha), b, float(beta))

    return [one() for _ in range(MIXTURES)]


def interaction(rng: np.random.Generator) -> list[Truth]:
    alpha, beta, gamma, delta = rng.uniform(0.15, 0.5, size=4)

    def one() -> Truth:
        e, a, b = _constants(rng)
        law, c = _law(e, a, float(alpha), b, float(beta)), rng.uniform(0.3, 1.0)
        return lambda n, d: law(n, d) + c * (n / SIZES[0]) ** -gamma * (d / BUDGETS[0]) ** -delta

    return [one() for _ in range(MIXTURES)]


def slow_start(rng: np.random.Generator) -> list[Truth]:
    alpha, beta, gamma = *rng.uniform(0.15, 0.5, size=2), rng.uniform(0.5, 1.2)
    tau = rng.uniform(0.5, 1.5) * BUDGETS[0]  # xs leaves its plateau within the ladder, m often not
    kappa = rng.uniform(1.5, 3.0)

    def one() -> Truth:
        e, a, b = _constants(rng)
        law, p = _law(e, a, float(alpha), b, float(beta)), rng.uniform(1.0, 2.5)
        return lambda n, d: law(n, d) + p / (1 + (d / (tau * (n / SIZES[0]) ** gamma)) ** kappa)

    return [one() for _ in range(MIXTURES)]


FAMILIES: dict[str, Callable[[np.random.Generator], list[Truth]]] = {
    "kaplan": kaplan,
    "own_exponents": own_exponents,
    "interaction": interaction,
    "slow_start": slow_start,
}


def draw_ladder(family: str, rng: np.random.Generator) -> tuple[list[LadderPoint], dict[str, Truth]]:
    truths = {f"m{i}": f for i, f in enumerate(FAMILIES[family](rng))}
    noise = rng.uniform(0.01, 0.03)
    points = [
        LadderPoint(m, n, d, f(n, d) + noise * rng.standard_normal())
        for m, f in truths.items()
        for n in SIZES
        for d in BUDGETS
    ]
    return points, truths


def score(fit: ScalingFit, mixture: str, n: float, d: float, truth: float) -> tuple[bool, float, float]:
    """(inside the band, relative error, band half-width relative to the prediction)."""
    p = fit.predict(mixture, n, d)
    return p.low <= truth <= p.high, abs(p.loss - truth) / truth, (p.high - p.low) / 2 / p.loss


Cell = tuple[bool, float, float]


def evaluate(
    families: list[str], seed: int, ladders: int, n_bootstrap: int
) -> dict[str, dict[str, list[Cell]]]:
    """Per family, per ``held``/``far`` x ``bootstrap``/``backtest``: one cell per held-out mixture."""
    rows: dict[str, dict[str, list[Cell]]] = {}
    for family in families:
        rng = np.random.default_rng([seed, list(FAMILIES).index(family)])
        rows[family] = {f"{w}/{b}": [] for w in ("held", "far") for b in ("bootstrap", "backtest")}
        for _ in range(ladders):
            points, truths = draw_ladder(family, rng)
            fit_on, held = holdout_largest(points)
            fit = fit_scaling_law(fit_on, n_bootstrap=n_bootstrap, seed=int(rng.integers(1 << 31)))
            bands = (("bootstrap", dataclasses.replace(fit, backtest=None)), ("backtest", fit))
            for p in held:
                truth_far = truths[p.mixture](*FAR)
                for band, f in bands:
                    rows[family][f"held/{band}"].append(score(f, p.mixture, p.params, p.tokens, p.loss))
                    rows[family][f"far/{band}"].append(score(f, p.mixture, *FAR, truth_far))
    return rows


def coverage(cells: list[Cell]) -> float:
    return float(np.mean([c[0] for c in cells]))


def describe(cells: list[Cell]) -> str:
    """Coverage (mean relative error, mean band half-width)."""
    error, width = np.mean([c[1] for c in cells]), np.mean([c[2] for c in cells])
    return f"{coverage(cells):6.1%} ({error:.2%}, ±{width:.2%})"


def tune(seed: int, ladders: int, n_bootstrap: int) -> None:
    """How ``REACH_GROWTH`` was chosen: on the tuning families at a tuning seed, never the reported ones."""
    result = {}
    for growth in TUNE_GROWTHS:
        scaling_law.REACH_GROWTH = growth
        rows = evaluate(TUNE_FAMILIES, seed, ladders, n_bootstrap)
        held = [c for cols in rows.values() for c in cols["held/backtest"]]
        far = [c for cols in rows.values() for c in cols["far/backtest"]]
        print(f"REACH_GROWTH {growth}: held {describe(held)}, far {describe(far)}")
        result[f"coverage_far_growth_{growth}"] = coverage(far)
    print("RESULT " + " ".join(f"{k}={v:.4g}" for k, v in result.items()))


def tune_margin(seed: int, ladders: int) -> None:
    """Why the plateau form, with its extra parameters, needs no handicap in the choice of kind: per
    ladder every kind is fitted once (no bootstrap: the choice only moves the prediction), the plateau
    form is chosen only where its backtest error is below ``margin`` times the best other kind's, and
    the chosen law's error is kept at the held-out rung and far beyond; every family, the tuning seed.
    The library chooses with margin 1 (the lowest backtest error wins)."""
    errors = {m: {f: ([], []) for f in FAMILIES} for m in TUNE_MARGINS}
    chosen = {m: 0 for m in TUNE_MARGINS}
    for family in FAMILIES:
        rng = np.random.default_rng([seed, list(FAMILIES).index(family)])
        for _ in range(ladders):
            points, truths = draw_ladder(family, rng)
            fit_on, held = holdout_largest(points)
            fits = {k: fit_scaling_law(fit_on, form=k[0], exponents=k[1], n_bootstrap=0) for k in KINDS}
            backtests = {k: f.backtest for k, f in fits.items() if f.backtest is not None}
            for margin in TUNE_MARGINS:
                error = {k: b.rel_rms / (margin if k[0] == "plateau" else 1) for k, b in backtests.items()}
                kind = min(error, key=error.__getitem__, default=KINDS[0])
                chosen[margin] += kind[0] == "plateau"
                for p in held:
                    errors[margin][family][0].append(
                        score(fits[kind], p.mixture, p.params, p.tokens, p.loss)[1]
                    )
                    truth_far = truths[p.mixture](*FAR)
                    errors[margin][family][1].append(score(fits[kind], p.mixture, *FAR, truth_far)[1])
    result = {}
    for margin, by_family in errors.items():
        cells = " ".join(f"{f} {np.mean(h):.2%}/{np.mean(x):.2%}" for f, (h, x) in by_family.items())
        held = np.mean([e for h, _ in by_family.values() for e in h])
        far = np.mean([e for _, x in by_family.values() for e in x])
        print(
            f"margin {margin}: plateau chosen on {chosen[margin]} of {ladders * len(FAMILIES)} "
            f"ladders; mean error held/far {held:.2%}/{far:.2%} ({cells})"
        )
        result[f"far_err_margin_{margin}"] = float(far)
    print("RESULT " + " ".join(f"{k}={v:.4g}" for k, v in result.items()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer ladders: under 60 s")
    parser.add_argument("--ladders", type=int, help="ladders per truth family (default 100, quick 12)")
    parser.add_argument("--seed", type=int, default=0, help="report seed (default 0; tuning used 1)")
    parser.add_argument(
        "--tune", action="store_true", help=f"re-run the choice of REACH_GROWTH on {', '.join(TUNE_FAMILIES)}"
    )
    parser.add_argument(
        "--tune-margin", action="store_true", help="show why the plateau form gets no handicap (margin 1)"
    )
    args = parser.parse_args()
    ladders = args.ladders or (12 if args.quick else 100)
    n_bootstrap = 50 if args.quick else 200
    started = time.perf_counter()
    if args.tune:
        tune(TUNE_SEED, ladders, n_bootstrap)
        return
    if args.tune_margin:
        tune_margin(TUNE_SEED, ladders)
        return
    rows = evaluate(list(FAMILIES), args.seed, ladders, n_bootstrap)
    print(f"coverage of the {scaling_law.BAND:.0%} band (mean relative error, mean band half-width)")
    print(f"{ladders} ladders of {MIXTURES} mixtures per truth; REACH_GROWTH {scaling_law.REACH_GROWTH}")
    print(f"{'truth':<14} {'where':<5} {'bootstrap only':<30} with backtest")
    pooled: dict[str, list[Cell]] = {}
    for family, cols in rows.items():
        for where in ("held", "far"):
            for key in (f"{where}/bootstrap", f"{where}/backtest"):
                pooled.setdefault(key, []).extend(cols[key])
            print(
                f"{family:<14} {where:<5} {describe(cols[f'{where}/bootstrap']):<30} "
                + describe(cols[f"{where}/backtest"])
            )
    result = {f"coverage_{k.replace('/', '_')}": coverage(v) for k, v in pooled.items()}
    result |= {
        f"halfwidth_{w}": float(np.mean([c[2] for c in pooled[f"{w}/backtest"]])) for w in ("held", "far")
    }
    print(f"{time.perf_counter() - started:.0f} s in all")
    print("RESULT " + " ".join(f"{k}={v:.4g}" for k, v in result.items()))


if __name__ == "__main__":
    main()
