"""RegMix regression on the paper's own 1M-parameter runs: train on 512 runs, score on the 256 test runs.

Prints Spearman ρ×100 and MAE on the test runs for our LightGBM settings, the paper's LightGBM settings
(without its early stopping on the evaluation set), a linear model, a GP on √weights (Matérn-5/2, ARD)
and the mean of LightGBM and that GP, then RegMix's default ``model="auto"``: the one of those four with
the best 5-fold CV Spearman on the training runs (which one it picks, and its test score), then the
fitted optimum against the natural prior. LightGBM
settings were chosen by CV on the training runs; the GP's were not tuned (its optimiser's step cap is
set for time); the test runs are only scored.

    .venv/bin/python bench/regmix_fit.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from strategies.base import Fidelity, SearchSpace
from strategies.regmix import RegMix
from strategies.regression import AUTO, cross_validate, fit_chosen, fit_regressor, fit_with_cv, score
from strategies.tabular import Table, align, parse_mixtures, parse_table, to_observations

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "regmix"  # ../shared from the repo root
TARGET = "metric/the_pile_pile_cc_val_loss"
# The paper's settings (regression_fitting/regression.ipynb), minus early stopping on the held-out runs.
PAPER_LGBM = {
    "n_estimators": 1000,
    "learning_rate": 0.01,
    "num_leaves": 31,
    "min_child_samples": 20,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "extra_trees": False,
}
# Pile token shares used as the natural prior (RegMix repo, mixture_config/synthesize_mixture.py).
PILE_TOKENS = {
    "arxiv": 0.113285273,
    "freelaw": 0.079608651,
    "nih_exporter": 0.003913491,
    "pubmed_central": 0.185375901,
    "wikipedia_en": 0.051081359,
    "dm_mathematics": 0.015962925,
    "github": 0.101750772,
    "philpapers": 0.003707518,
    "stackexchange": 0.066529351,
    "enron_emails": 0.001750772,
    "gutenberg_pg_19": 0.027085479,
    "pile_cc": 0.236869207,
    "ubuntu_irc": 0.01184346,
    "europarl": 0.007929969,
    "hackernews": 0.008032956,
    "pubmed_abstracts": 0.038825953,
    "uspto_backgrounds": 0.046446962,
}


def load(split: str) -> tuple[Table, Table]:
    mix = parse_mixtures((DATA / f"{split}_mixture_1m.csv").read_text(), f"{split} mixtures")
    loss = parse_table((DATA / f"{split}_pile_loss_1m.csv").read_text(), f"{split} losses")
    return mix, align(mix, loss)


def test_scores(
    mix: Table,
    loss: Table,
    tmix: Table,
    tloss: Table,
    column: str,
    model: str,
    params: dict | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    reg = fit_regressor(mix.values, loss.column(column), model=model, seed=seed, params=params)
    rho, mae = score(tloss.column(column), reg.predict(tmix.select(mix.columns).values))
    return 100 * rho, mae


def auto_scores(mix: Table, loss: Table, tmix: Table, tloss: Table, column: str) -> tuple[str, float, float]:
    """(model "auto" picks by CV on the training runs, its test Spearman ×100, its test MAE)."""
    X, y = mix.values, loss.column(column)
    name, chosen, _ = fit_chosen(lambda m, p: fit_with_cv(X, y, m, 5, 0, p), y, AUTO, {})
    rho, mae = score(tloss.column(column), chosen.predict(tmix.select(mix.columns).values))
    return name, 100 * rho, mae


def show_optimum(mix: Table, loss: Table, n_search: int) -> None:
    short = [c.removeprefix("train_the_pile_") for c in mix.columns]
    tokens = tuple(max(1, round(PILE_TOKENS[s] * 1e9)) for s in short)
    space = SearchSpace(tuple(mix.columns), tokens, {TARGET: 1.0}, (Fidelity("1m", 0, 0.0),))
    strategy = RegMix(model="lightgbm", n_search=n_search)
    model = strategy.fit(space, to_observations(mix, loss, {TARGET: 1.0}, "1m"))
    assert model is not None
    rec = strategy.optimise(space, model)
    prior = space.natural()
    print(
        f"\nfitted optimum for {TARGET} (LightGBM on all 512 runs, {int(rec.diagnostics['n_search'])} "
        "mixtures searched)"
    )
    print(f"  {'domain':<20} {'natural':>8} {'regmix':>8}")
    for name, p, w in zip(short, prior, rec.weights, strict=True):
        print(f"  {name:<20} {p:8.3f} {w:8.3f}")
    print(
        f"  predicted loss: natural {rec.diagnostics['predicted_prior']:.4f}, "
        f"regmix {rec.predicted_loss:.4f} ± {rec.std:.4f} (fold spread)"
    )
    best = float(loss.column(TARGET).min())
    print(f"  best of the 512 training runs: {best:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one target, one seed, smaller search (< 60 s)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    mix, loss = load("train")
    tmix, tloss = load("test")
    print(f"train {len(mix.index)} runs, test {len(tmix.index)} runs, {len(mix.columns)} domains")

    cv = cross_validate(mix.values, loss.column(TARGET), model="lightgbm", folds=5, seed=0)
    print(f"5-fold CV on the training runs (LightGBM): spearman {100 * cv.spearman:.2f}, MAE {cv.mae:.4f}")
    rho_l, mae_l = test_scores(mix, loss, tmix, tloss, TARGET, "lightgbm")
    rho_p, mae_p = test_scores(mix, loss, tmix, tloss, TARGET, "lightgbm", PAPER_LGBM)
    rho_lin, mae_lin = test_scores(mix, loss, tmix, tloss, TARGET, "linear")
    started = time.perf_counter()
    rho_gp, mae_gp = test_scores(mix, loss, tmix, tloss, TARGET, "gp")
    gp_s = time.perf_counter() - started
    rho_e, mae_e = test_scores(mix, loss, tmix, tloss, TARGET, "ensemble")
    auto_name, rho_a, mae_a = auto_scores(mix, loss, tmix, tloss, TARGET)
    print(f"\ntest runs, target {TARGET}")
    print(f"  {'model':<32} {'spearman x100':>14} {'MAE':>8}")
    for name, r, m in [
        ("lightgbm (mixlab)", rho_l, mae_l),
        ("lightgbm (paper settings)", rho_p, mae_p),
        ("linear", rho_lin, mae_lin),
        (f"gp on sqrt(weights) [{gp_s:.1f} s]", rho_gp, mae_gp),
        ("ensemble (lightgbm+gp)", rho_e, mae_e),
        (f"auto (CV picked {auto_name})", rho_a, mae_a),
    ]:
        print(f"  {name:<32} {r:14.2f} {m:8.4f}")

    if not args.quick:
        seeds = [test_scores(mix, loss, tmix, tloss, TARGET, "lightgbm", seed=s)[0] for s in range(1, 5)]
        print(
            f"  lightgbm (mixlab) over seeds 0-4: {np.mean([rho_l, *seeds]):.2f} "
            f"± {np.std([rho_l, *seeds], ddof=1):.2f}"
        )
        print("\nevery loss column (test spearman x100)")
        models = [
            ("lightgbm", None),
            ("lightgbm", PAPER_LGBM),
            ("linear", None),
            ("gp", None),
            ("ensemble", None),
        ]
        print(f"  {'column':<38} {'mixlab':>7} {'paper':>7} {'linear':>7} {'gp':>7} {'ens':>7} {'auto':>7}")
        table = []
        picks = []
        for col in loss.columns:
            row = [test_scores(mix, loss, tmix, tloss, col, m, p)[0] for m, p in models]
            pick, rho, _ = auto_scores(mix, loss, tmix, tloss, col)
            picks.append(pick)
            table.append([*row, rho])
            cells = " ".join(f"{r:7.2f}" for r in table[-1])
            print(f"  {col.removeprefix('metric/the_pile_'):<38} {cells}  (auto: {pick})")
        print(f"  {'mean':<38} " + " ".join(f"{r:7.2f}" for r in np.mean(table, axis=0)))
        print("  auto picked: " + ", ".join(f"{m} {picks.count(m)}" for m in sorted(set(picks))))

    show_optimum(mix, loss, n_search=2000 if args.quick else 100000)
    print(f"\nelapsed {time.perf_counter() - t0:.1f} s")
    print(
        f"RESULT spearman_lgbm={rho_l:.2f} spearman_linear={rho_lin:.2f} spearman_gp={rho_gp:.2f} "
        f"spearman_ensemble={rho_e:.2f} spearman_auto={rho_a:.2f} auto_model={auto_name} mae_lgbm={mae_l:.4f}"
    )


if __name__ == "__main__":
    main()
