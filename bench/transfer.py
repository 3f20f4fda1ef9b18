"""Does a mixture recommended from small proxies transfer to a larger scale? Real runs on the demo corpus.

mixlab searches at the proxy scale and recommends for a larger one; that is only worth doing if the
ranking of mixtures survives the change of scale. On the 7 bundled domains (5 BBC news topics, Python
code, licence texts; target: the uniform average of every domain's validation loss, the service's
default, or of the domains ``--target`` names) this bench

1. gives every strategy the same proxy budget at the smallest preset ``xs`` (``--proxy-runs`` runs of
   ``--proxy-tokens``, counted in FLOPs, proposed 4 at a time) and takes its recommendation; ``uniform``
   and ``natural`` need no runs; ``aioli`` spends the budget's tokens as one online run (capped where
   uniform weights would repeat a domain more than ``max_epochs`` times) and recommends its final weights;
2. trains every recommendation and a seeded sample of RegMix's proxy mixtures at preset ``s`` on 4x the
   proxy tokens, and at the proxy scale, ``--seeds`` seeds each: the target-scale loss per strategy, and
   the Spearman rho between proxy-scale and target-scale losses (seed means) over all those mixtures;
   the same mixtures are also trained at the proxy preset on half the proxy tokens, whose rho says how
   much the proxies' length matters (``rho_half_proxy``);
3. fits ``strategies.scaling_law`` to a ladder (xs, s, m x 1/4, 1/2, 1 of the transfer tokens, one seed;
   ``--ladder-tokens preset``: of each preset's own budget, as the service's ladder scales them, so
   ``m`` trains up to 4M tokens; ``--ladder-presets xs,s`` leaves ``m`` out; ``--ladder-fractions``
   sets the budgets) for the best learned
   mixture, uniform and natural, holds out each one's largest rung (the last preset at the most tokens)
   and reports how well the law predicts it, and whether its 90 %
   band holds the truth (beside the band, the part of it that the bootstrap alone gives, without the
   law's backtested error);
4. with ``--margin-seeds K``, trains the best learned mixture, uniform and natural at the target scale on
   K seeds each and tests whether the learned one is lower beyond seed noise (Welch's t on those runs).

Runs already made at the same preset, tokens, mixture and seed, and aioli's online run at the same
settings, are reused, also across invocations (``artifacts/transfer_cache/*/runs.jsonl``; ``--fresh``
retrains). Writes every raw result to ``--out`` (``artifacts/transfer.json``) and a PNG beside it (loss
vs training FLOPs; proxy vs target scatter); the prepared corpus is cached under
``artifacts/transfer_cache/``. CUDA is used when present (``--device``).

    .venv/bin/python bench/transfer.py [--quick] [--proxy-runs 24] [--proxy-tokens 500000] [--seeds 2]
        [--margin-seeds 8] [--strategies uniform,natural,regmix] [--no-ladder] [--target all]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr, ttest_ind

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.online import HELDOUT_TOKENS, ONLINE_PARAMS, UPDATE_TOKENS, WARMUP_SHARE  # noqa: E402
from proxy_models.corpora import BBC_TOPICS, SOURCES, documents, take, write_jsonl  # noqa: E402
from proxy_models.data import PreparedData, prepare  # noqa: E402
from proxy_models.device import resolve_device  # noqa: E402
from proxy_models.online import OnlineController  # noqa: E402
from proxy_models.presets import get_preset, run_flops  # noqa: E402
from proxy_models.train import RunConfig, train_proxy  # noqa: E402
from strategies import get_strategy, simplex  # noqa: E402
from strategies.base import Fidelity, Observation, SearchSpace, Strategy  # noqa: E402
from strategies.scaling_law import (  # noqa: E402
    KINDS,
    LadderPoint,
    ScalingFit,
    ScalingLawError,
    early_regime,
    fit_scaling_law,
    holdout_largest,
)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
FIXED, LEARNED = ("uniform", "natural"), ("regmix", "admire", "climb", "aioli")
BATCH, MAX_EPOCHS, PROXY, TARGET, LADDER = 4, 4.0, "xs", "s", ("xs", "s", "m")
LADDER_FRACTIONS = (0.25, 0.5, 1.0)  # of the transfer tokens, or of each preset's own (--ladder-tokens)


@dataclass(frozen=True)
class Scale:
    """What --quick changes: corpus size, evaluation tokens, strategy settings, the flags' defaults."""

    bbc_chars: int | None  # per BBC topic (None: all of it)
    big_chars: int  # code and legal each
    eval_tokens: int  # validation tokens per domain that score every run
    proxy_runs: int
    proxy_tokens: int
    transfer_mixtures: int
    cuda_proxy_tokens: int | None = None  # the proxy_tokens default on a CUDA device
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # strategy overrides


# 16 sampled mixtures (issue 22): 44 runs of s at 2M tokens, about an hour on 2 quiet cores. Proxies of
# 250k tokens (122 steps of xs) are too short: in bench/data/two_fidelity_runs.csv they rank a code-heavy
# mixture first where s at 1M tokens ranks uniform first (rho_half_proxy measures this in every run).
# On CUDA, time allows longer runs, but not the corpus: beyond 4 x 1.4M tokens uniform weights would
# repeat the smallest topic (200k tokens) more than max_epochs times.
FULL = Scale(
    None,
    3_000_000,
    16_384,
    proxy_runs=24,
    proxy_tokens=500_000,
    transfer_mixtures=16,
    cuda_proxy_tokens=1_000_000,
)
_FAST_FIT = {"model": "lightgbm", "folds": 2, "regressor_params": {"n_estimators": 50}}
QUICK_FITS = {"regmix": {**_FAST_FIT, "n_search": 1000}, "climb": {**_FAST_FIT, "pool_size": 1000}}
QUICK = Scale(
    300_000, 900_000, 1_024, proxy_runs=6, proxy_tokens=2_048, transfer_mixtures=1, params=QUICK_FITS
)


@dataclass
class Run:
    preset: str
    tokens: int  # trained (whole batches)
    seed: int
    weights: tuple[float, ...]
    losses: dict[str, float]
    target_loss: float
    wall_s: float
    train_s: float
    label: str


class Trainer:
    """Trains fixed-mixture runs, once per (preset, tokens, mixture, seed), and logs each as it ends.

    Finished runs are also appended to ``journal`` (JSON lines), so an interrupted bench resumes where it
    stopped: a rerun with the same corpus and settings reads them back instead of training them again."""

    def __init__(
        self, data: PreparedData, space: SearchSpace, device: str, eval_tokens: int, journal: Path
    ) -> None:
        self.data, self.space, self.device, self.eval_tokens = data, space, device, eval_tokens
        self.runs: dict[tuple[Any, ...], Run] = {}
        self.online: dict[str, dict[str, Any]] = {}  # online runs' results, by settings (``online_key``)
        self.journal = journal
        if journal.exists():
            for line in journal.read_text().splitlines():
                entry = json.loads(line)
                # entries from before the learning rate was journaled are not read back: it has changed
                if "lr" not in entry or (entry["eval_tokens"], entry["device"], entry.get("data")) != (
                    eval_tokens,
                    device,
                    data.key,
                ):
                    continue
                if "online" in entry:
                    self.online[entry["online"]] = entry["result"]
                    continue
                run = Run(**{**entry["run"], "weights": tuple(entry["run"]["weights"])})
                run.target_loss = space.target_loss(run.losses)  # the journal serves every --target
                key = self.key(run.preset, entry["asked_tokens"], run.weights, run.seed, entry["lr"])
                self.runs[key] = run
        self.resumed = len(self.runs) + len(self.online)
        self.started = time.perf_counter()

    @staticmethod
    def key(
        preset: str, tokens: int, weights: tuple[float, ...], seed: int, lr: float | None = None
    ) -> tuple[Any, ...]:
        """``lr``: the run's peak learning rate, None for the preset's current one."""
        lr = get_preset(preset).lr if lr is None else lr
        return (preset, tokens, tuple(round(w, 6) for w in weights), seed, lr)

    def config(
        self, preset: str, weights: dict[str, float], tokens: int, seed: int, lr: float | None = None
    ) -> RunConfig:
        return RunConfig(preset, weights, tokens, seed, MAX_EPOCHS, self.device, self.eval_tokens, lr=lr)

    def train(
        self,
        preset: str,
        weights: tuple[float, ...],
        tokens: int,
        seed: int,
        label: str,
        lr: float | None = None,
    ) -> Run:
        """``lr``: a peak learning rate other than the preset's."""
        key = self.key(preset, tokens, weights, seed, lr)
        if key not in self.runs:
            mix = dict(zip(self.data.domains, weights, strict=True))
            r = train_proxy(self.data, self.config(preset, mix, tokens, seed, lr))
            loss = self.space.target_loss(r.losses)
            self.runs[key] = Run(preset, r.tokens, seed, weights, r.losses, loss, r.wall_s, r.train_s, label)
            self.write(tokens, key[-1], run=asdict(self.runs[key]))
            self.log(
                f"{preset:>2} {tokens:>9,} tok seed {seed}  {label:<10} loss {loss:.4f}  ({r.wall_s:.1f} s)"
            )
        return self.runs[key]

    @staticmethod
    def online_key(name: str, preset: str, tokens: int, settings: dict[str, Any]) -> str:
        """An online run's journal key: every setting that shapes its weight path, the peak LR among them."""
        return json.dumps([name, preset, tokens, get_preset(preset).lr, settings], sort_keys=True)

    def remember_online(self, key: str, preset: str, tokens: int, result: dict[str, Any]) -> None:
        self.online[key] = result
        self.write(tokens, get_preset(preset).lr, online=key, result=result)

    def write(self, tokens: int, lr: float, **record: Any) -> None:
        """Appends one journal line; runs on another corpus preparation or LR are not read back as these."""
        entry = {"asked_tokens": tokens, "eval_tokens": self.eval_tokens, "device": self.device}
        entry |= {"data": self.data.key, "lr": lr}
        with self.journal.open("a") as fh:
            fh.write(json.dumps({**entry, **record}) + "\n")

    def log(self, line: str) -> None:
        print(f"[{time.perf_counter() - self.started:7.1f}s] {line}", flush=True)


def build_data(root: Path, scale: Scale) -> PreparedData:
    """The 7 bundled domains, written and prepared once (a rerun finds the preparation and reuses it)."""
    limit = {s: scale.bbc_chars if s in BBC_TOPICS else scale.big_chars for s in SOURCES}
    docs = {s: take(documents(s), max_chars=limit[s]) for s in SOURCES}
    return prepare(
        {s: write_jsonl(root / "corpus" / f"{s}.jsonl", d) for s, d in docs.items()}, root / "prepared"
    )


def fidelity(preset: str, tokens: int, vocab: int, name: str | None = None) -> Fidelity:
    return Fidelity(name or preset, tokens, run_flops(preset, tokens, vocab), {"preset": preset})


def make_space(data: PreparedData, fidelities: tuple[Fidelity, ...], args: argparse.Namespace) -> SearchSpace:
    return SearchSpace(
        domains=data.domains,
        tokens=tuple(data.train_tokens[d] for d in data.domains),
        target={d: 1 / len(args.target) for d in args.target},
        fidelities=fidelities,
        max_epochs=MAX_EPOCHS,
        target_tokens=args.transfer_tokens,  # a recommendation must be trainable at the transfer scale
        budget=float(args.proxy_runs),
    )


def drive(name: str, strategy: Strategy, space: SearchSpace, trainer: Trainer) -> list[Observation]:
    """The service's loop in miniature: propose 4, train them, repeat until the FLOP budget is spent."""
    budget = float(space.budget or 0) * space.target_fidelity.cost * (1 + 1e-9)
    history: list[Observation] = []
    spent, cheapest = 0.0, min(f.cost for f in space.fidelities)
    while spent + cheapest <= budget:
        trained = 0
        for c in strategy.propose(space, history, BATCH, seed=len(history)):
            f = space.fidelity(c.fidelity)
            if spent + f.cost <= budget:
                run = trainer.train(f.params["preset"], c.weights, f.tokens, 0, f"{name}:{f.name}")
                history.append(Observation(c.weights, f.name, run.losses, run.target_loss, f.cost))
                spent, trained = spent + f.cost, trained + 1
        if not trained:
            break
    return history


def run_aioli(
    data: PreparedData, args: argparse.Namespace, trainer: Trainer
) -> tuple[tuple[float, ...], str]:
    """One online Aioli run at the proxy preset on the proxy budget's tokens; its final weights."""
    preset, tokens = get_preset(PROXY), args.proxy_runs * args.proxy_tokens
    # Beyond this budget even uniform weights would repeat the smallest domain more than MAX_EPOCHS times.
    cap = int(MAX_EPOCHS * min(data.train_tokens.values()) * len(data.domains))
    note = f"one online run of {tokens:,} tokens"
    if tokens > cap:
        note = (
            f"one online run of {cap:,} tokens (not {tokens:,}: past it uniform weights break the epoch caps)"
        )
        tokens = cap
    every = max(1, min(UPDATE_TOKENS // preset.batch_tokens, preset.steps(tokens) // 16))
    params = dict(ONLINE_PARAMS["aioli"], budget_tokens=tokens)
    params["warmup_updates"] = max(1, round(WARMUP_SHARE * preset.steps(tokens) / every))
    space = make_space(data, (fidelity(PROXY, tokens, data.vocab_size),), args)
    heldout = {d: data.tokens(d, "val")[trainer.eval_tokens + 1 :] for d in data.domains}
    key = trainer.online_key("aioli", PROXY, tokens, {"every": every, **params})
    if key not in trainer.online:
        controller = OnlineController("aioli", space, every=every, seed=0, heldout=heldout, **params)
        r = train_proxy(data, trainer.config(PROXY, controller.weights, tokens, 0), controller=controller)
        result: dict[str, Any] = {"final": [r.trajectory[-1][1][d] for d in data.domains], "losses": r.losses}
        result |= {"updates": len(r.trajectory) - 1, "wall_s": r.wall_s}
        trainer.remember_online(key, PROXY, tokens, result)
        loss = space.target_loss(r.losses)
        trainer.log(f"xs {tokens:>9,} tok seed 0  aioli      loss {loss:.4f}  ({r.wall_s:.1f} s, online)")
    result = trainer.online[key]
    final = np.array(result["final"])
    lo, hi = trainer.space.bounds(args.transfer_tokens)
    note += f", {result['updates']} updates every {every} steps"
    return tuple(float(w) for w in simplex.project(final, lo, hi)[0]), note


def proxy_phase(names: list[str], data: PreparedData, args: argparse.Namespace, trainer: Trainer) -> dict:
    """Each strategy's recommendation, what it spent, and its proxy runs."""
    space, out = trainer.space, {}
    for name in names:
        t0, history, predicted = time.perf_counter(), [], None
        if name in FIXED:
            weights, note = get_strategy(name).recommend(space, []).weights, "fixed: no runs"
        elif name == "aioli":
            weights, note = run_aioli(data, args, trainer)
        else:
            strategy = get_strategy(name, **args.scale.params.get(name, {}))
            s_space = space
            if name == "admire" and args.admire_cheap:
                cheap = fidelity(PROXY, args.proxy_tokens // 4, data.vocab_size, f"{PROXY}/4")
                s_space = make_space(data, (cheap, *space.fidelities), args)
            history = drive(name, strategy, s_space, trainer)
            rec = strategy.recommend(s_space, history)
            weights, predicted = rec.weights, rec.predicted_loss
            counts = {f.name: sum(o.fidelity == f.name for o in history) for f in s_space.fidelities}
            spent = sum(o.cost for o in history) / space.target_fidelity.cost
            note = ", ".join(f"{n} runs at {f}" for f, n in counts.items()) + f" (cost {spent:.2f} runs)"
        out[name] = {"weights": weights, "note": note, "predicted_proxy_loss": predicted, "history": history}
        trainer.log(f"{name}: {note}; {time.perf_counter() - t0:.0f} s\n    -> " + fmt(weights, data.domains))
    return out


def trainable(space: SearchSpace, mixtures: list[tuple[float, ...]], tokens: int) -> list[tuple[float, ...]]:
    """Only the mixtures a budget of ``tokens`` can train within ``max_epochs``: a proxy mixture may lean on
    a small domain that 4x the tokens would repeat more than max_epochs times."""
    lo, hi = space.bounds(tokens)
    return [w for w in mixtures if simplex.is_feasible(np.asarray(w), lo, hi)[0]]


def eval_tokens_for(data: PreparedData, scale: Scale) -> int:
    """Validation tokens per domain that score every run; the tail of each val slice is Aioli's held-out
    text. Runs read back from the journal must have been scored on the same number."""
    smallest = min(data.val_tokens.values())
    return min(scale.eval_tokens, max(smallest // 2, smallest - HELDOUT_TOKENS))


def transfer_phase(strategies: dict, args: argparse.Namespace, trainer: Trainer) -> dict[str, dict]:
    """Recommendations and a sample of RegMix's proxy mixtures (any strategy's without it), both scales."""
    regmix = strategies.get("regmix", {}).get("history")
    pool = [o.weights for o in regmix or [o for s in strategies.values() for o in s["history"]]]
    pool = trainable(trainer.space, pool, args.transfer_tokens)
    picks = np.random.default_rng(0).choice(len(pool), min(args.transfer_mixtures, len(pool)), replace=False)
    mixtures = {n: s["weights"] for n, s in strategies.items()} | {
        f"proxy{i}": pool[j] for i, j in enumerate(sorted(picks))
    }
    table = {}
    for label, w in mixtures.items():
        target = [trainer.train(TARGET, w, args.transfer_tokens, s, label).target_loss for s in args.seeds]
        proxy = [trainer.train(PROXY, w, args.proxy_tokens, s, label).target_loss for s in args.seeds]
        half = [trainer.train(PROXY, w, args.proxy_tokens // 2, s, label).target_loss for s in args.seeds]
        table[label] = {"weights": list(w), "strategy": label in strategies, "proxy": proxy, "target": target}
        table[label]["half_proxy"] = half
    return table


def ladder_phase(mixtures: dict[str, tuple[float, ...]], args: argparse.Namespace, trainer: Trainer) -> dict:
    """Ladder runs per mixture; a law fitted without each mixture's largest rung, and its predictions."""
    vocab = trainer.data.vocab_size
    sizes = {
        preset: get_preset(preset).model_config(vocab).non_embedding_params for preset in args.ladder_presets
    }
    points: list[LadderPoint] = []
    out: dict[str, Any] = {"points": [], "predictions": {}, "curves": {}}
    for label, w in mixtures.items():
        for preset, n_params in sizes.items():
            full = get_preset(preset).tokens if args.ladder_tokens == "preset" else args.transfer_tokens
            for frac in args.ladder_fractions:
                run = trainer.train(preset, w, int(frac * full), args.seeds[0], label)
                points.append(LadderPoint(label, n_params, run.tokens, run.target_loss))
                out["points"].append({**asdict(points[-1]), "preset": preset})
    try:
        fit_on, held = holdout_largest(points)
        fit = fit_scaling_law(fit_on)
    except ScalingLawError as exc:
        print(f"\nscaling law: no fit ({exc})")
        return out
    out["fit"] = fit.to_json()
    backtest = "none" if fit.backtest is None else f"{fit.backtest.rel_rms:.2%}"
    print(
        f"\nscaling law fitted on {len(fit_on)} ladder runs ({fit.form} form, {fit.exponents} exponents, "
        f"rmse {fit.rmse:.4f}, "
        f"backtest error {backtest}; in brackets the band, then the bootstrap's part of it alone)"
    )
    preset_of = {n: preset for preset, n in sizes.items()}
    early = {
        "fitted": [preset_of[n] for n in fit.early_regime],
        "all": [preset_of[n] for n in early_regime(points)],
    }
    out["early_regime"] = early
    print(
        "  presets whose loss still falls faster with each doubling (early_regime): on the rungs fitted "
        f"{', '.join(early['fitted']) or 'none'}; on the whole ladder {', '.join(early['all']) or 'none'}"
    )
    bootstrap_only = dataclasses.replace(fit, backtest=None)
    for p in held:
        pred = fit.predict(p.mixture, p.params, p.tokens)
        boot = bootstrap_only.predict(p.mixture, p.params, p.tokens)
        rel, ok = abs(pred.loss - p.loss) / p.loss, pred.low <= p.loss <= pred.high
        out["predictions"][p.mixture] = {**asdict(pred), "truth": p.loss, "rel_err": rel, "in_band": ok}
        out["predictions"][p.mixture] |= {"params": p.params, "tokens": p.tokens}
        out["predictions"][p.mixture] |= {"bootstrap_band": [boot.low, boot.high]}
        print(
            f"  {p.mixture:<8} held out: {args.ladder_presets[-1]} at {p.tokens:,} tokens: "
            f"predicted {pred.loss:.4f} "
            f"[{pred.low:.4f}, {pred.high:.4f}] [{boot.low:.4f}, {boot.high:.4f}], truth {p.loss:.4f}: "
            f"error {rel:.2%}, " + ("inside the band" if ok else "OUTSIDE the band")
        )
    out["by_kind"] = compare_kinds(fit_on, held, fit)
    grid = np.geomspace(min(p.tokens for p in points), max(p.tokens for p in points), 24)
    for label in mixtures:
        for preset, n_params in sizes.items():
            flops = [run_flops(preset, int(t), vocab) for t in grid]
            out["curves"][f"{label}/{preset}"] = [flops, [fit.predict(label, n_params, t).loss for t in grid]]
    return out


def compare_kinds(
    fit_on: list[LadderPoint], held: list[LadderPoint], chosen: ScalingFit
) -> dict[str, dict[str, Any]]:
    """The held-out rungs predicted by every form and choice of exponents the library can fit, beside the
    one it chose (``chosen``, not fitted again): how much the choice mattered on this ladder."""
    out = {}
    print("  every kind of law (form/exponents: error per held-out rung, mean, inside its band):")
    for form, exponents in KINDS:
        same = (form, exponents) == (chosen.form, chosen.exponents)
        fit = chosen if same else fit_scaling_law(fit_on, form=form, exponents=exponents)
        preds = {p.mixture: (fit.predict(p.mixture, p.params, p.tokens), p.loss) for p in held}
        rel = {m: abs(pred.loss - truth) / truth for m, (pred, truth) in preds.items()}
        inside = sum(pred.low <= truth <= pred.high for pred, truth in preds.values())
        backtest = None if fit.backtest is None else fit.backtest.rel_rms
        out[f"{form}/{exponents}"] = {"rel_err": rel, "in_band": inside, "backtest": backtest}
        print(
            f"    {form + '/' + exponents:<18}"
            + " ".join(f"{m} {e:.2%}" for m, e in rel.items())
            + f"; mean {np.mean(list(rel.values())):.2%}; {inside}/{len(held)} inside; backtest "
            + ("none" if backtest is None else f"{backtest:.2%}")
        )
    return out


def beyond_noise(
    table: dict[str, dict], best: str | None, unique: list[dict], seeds: int
) -> tuple[float, float]:
    """How far the best learned strategy's mean target loss is below the better of uniform's and
    natural's, in loss and in standard errors of a difference of two ``seeds``-run means, with the seed
    std pooled over every re-trained mixture (two seeds each say little about their own spread)."""
    fixed = [float(np.mean(table[n]["target"])) for n in FIXED if n in table]
    if best is None or not fixed:
        return float("nan"), float("nan")
    margin = min(fixed) - float(np.mean(table[best]["target"]))
    pooled = float(np.sqrt(np.mean([std(r["target"]) ** 2 for r in unique])))
    z = margin / (pooled * np.sqrt(2 / seeds)) if seeds > 1 and pooled > 0 else float("nan")
    print(
        f"best learned ({best}) is {margin:+.4f} below the better of {' and '.join(FIXED)}: {z:.1f} standard "
        f"errors of a difference of two {seeds}-seed means (seed std pooled over the mixtures {pooled:.4f})"
    )
    return margin, float(z)


def margin_on_more_seeds(
    mixtures: dict[str, tuple[float, ...]], best: str, args: argparse.Namespace, trainer: Trainer
) -> dict[str, float]:
    """The margin again, on ``--margin-seeds`` seeds of the best learned mixture and of each fixed one
    (``mixtures`` holds all three) at the target scale, tested with their own spreads (Welch's t,
    one-sided: is the learned one lower?)."""
    seeds = range(args.margin_seeds)
    losses = {
        n: [trainer.train(TARGET, w, args.transfer_tokens, s, n).target_loss for s in seeds]
        for n, w in mixtures.items()
    }
    fixed = min(FIXED, key=lambda n: float(np.mean(losses[n])))
    test = ttest_ind(losses[best], losses[fixed], equal_var=False, alternative="less")
    margin = float(np.mean(losses[fixed]) - np.mean(losses[best]))
    print(f"\non {args.margin_seeds} seeds each at {TARGET} (mean ± std):")
    for n, xs in losses.items():
        print(f"  {n:<8} {np.mean(xs):.4f} ± {std(xs):.4f}")
    print(
        f"best learned ({best}) is {margin:+.4f} below {fixed}: Welch t = {-test.statistic:.2f}, "
        f"one-sided p = {test.pvalue:.3g}"
    )
    return {"margin_seeds": margin, "margin_seeds_t": float(-test.statistic), "margin_seeds_p": test.pvalue}


def fmt(weights: tuple[float, ...], domains: tuple[str, ...]) -> str:
    return " ".join(f"{d[:5]}={w:.2f}" for d, w in zip(domains, weights, strict=True))


def std(xs: list[float]) -> float:
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def plot(path: Path, ladder: dict, table: dict[str, dict], rho: float, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    vocab = args.vocab
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.5))
    names = dict.fromkeys(
        [*(m for m, r in table.items() if r["strategy"]), *(p["mixture"] for p in ladder["points"])]
    )
    color = {m: f"C{i % 10}" for i, m in enumerate(names)}
    for p in ladder["points"]:
        held = (
            ladder["predictions"].get(p["mixture"], {}).get("tokens") == p["tokens"]
            and p["preset"] == args.ladder_presets[-1]
        )
        marker = "*" if held else dict(zip(LADDER, "os^", strict=True))[p["preset"]]
        x = run_flops(p["preset"], p["tokens"], vocab)
        ax.scatter(x, p["loss"], marker=marker, s=120 if held else 25, color=color[p["mixture"]], zorder=3)
    for m, pred in ladder["predictions"].items():
        band = [[pred["loss"] - pred["low"]], [pred["high"] - pred["loss"]]]
        x = run_flops(args.ladder_presets[-1], pred["tokens"], vocab) * 1.05
        ax.errorbar(x, pred["loss"], yerr=band, fmt="x", color=color[m], capsize=3)
    for key, (flops, loss) in ladder["curves"].items():
        ax.plot(flops, loss, "--", lw=0.8, color=color[key.rsplit("/", 1)[0]])
    x0 = run_flops(TARGET, args.transfer_tokens, vocab)
    for i, (m, row) in enumerate((m, r) for m, r in table.items() if r["strategy"]):
        y, dy = np.mean(row["target"]), std(row["target"])
        ax.errorbar(
            x0 * (1.08 + 0.03 * i), y, yerr=dy, fmt="D", ms=4, color=color[m], label=f"{m} at {TARGET}"
        )
    ax.set(xscale="log", xlabel="training FLOPs", ylabel="target loss")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(
        "ladder (o xs, s s, ^ m; * held out, x its prediction), law fit (--), transfer runs (D)", fontsize=9
    )
    ax.legend(fontsize=7)
    for m, row in table.items():
        xy = (np.mean(row["proxy"]), np.mean(row["target"]))
        bx.scatter(*xy, color=color[m] if row["strategy"] else "grey", s=30 if row["strategy"] else 12)
        if row["strategy"]:
            bx.annotate(m, xy, fontsize=7)
    bx.set(
        xlabel=f"proxy-scale loss ({PROXY}, {args.proxy_tokens:,} tokens)",
        ylabel=f"target-scale loss ({TARGET})",
    )
    bx.set_title(
        f"every mixture re-trained at both scales (seed means): Spearman rho = {rho:.2f}", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add, q = parser.add_argument, QUICK
    add("--quick", action="store_true", help="tiny corpus, budgets and fits: a smoke test in < 60 s")
    add(
        "--proxy-runs",
        type=int,
        help=f"proxy budget N in {PROXY} runs (default {FULL.proxy_runs}, quick {q.proxy_runs})",
    )
    add(
        "--proxy-tokens",
        type=int,
        help=f"per proxy run, x4 at scale (default {FULL.proxy_tokens}, {FULL.cuda_proxy_tokens} on CUDA, "
        f"quick {q.proxy_tokens})",
    )
    add(
        "--transfer-mixtures",
        type=int,
        help=f"proxy mixtures re-trained (default {FULL.transfer_mixtures}, quick {QUICK.transfer_mixtures})",
    )
    add("--seeds", type=int, default=2, help="seeds per re-trained mixture (default %(default)s)")
    add(
        "--margin-seeds",
        type=int,
        default=0,
        help="train the best learned mixture, uniform and natural at the target scale on this many seeds "
        "in all (more than --seeds) and test the margin on them alone (default: no extra seeds)",
    )
    add(
        "--strategies", default=",".join(FIXED + LEARNED), help="comma-separated subset (default %(default)s)"
    )
    add(
        "--admire-cheap",
        action="store_true",
        help=f"give admire a 2nd fidelity, {PROXY} at 1/4 of the tokens",
    )
    add(
        "--target",
        default="all",
        help="comma-separated domains whose mean validation loss is the target; all (default): every "
        "domain, the service's default target",
    )
    add(
        "--ladder",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fit the scaling law to a ladder and predict its held-out rung (default on; "
        "--no-ladder for a margin-only run)",
    )
    add(
        "--ladder-tokens",
        choices=("transfer", "preset"),
        default="transfer",
        help="the ladder's budgets are 1/4, 1/2 and 1 of the transfer tokens for every preset (transfer, "
        "the default) or of each preset's own budget (preset: xs to 1M, s to 2M, m to 4M tokens, as the "
        "service scales its ladder; not with --quick)",
    )
    add(
        "--ladder-presets",
        type=lambda v: tuple(v.split(",")),
        default=LADDER,
        help=f"the ladder's presets, smallest first; the last one's top rung is held out (default "
        f"{','.join(LADDER)})",
    )
    add(
        "--ladder-fractions",
        type=lambda v: tuple(float(x) for x in v.split(",")),
        default=LADDER_FRACTIONS,
        help="each preset's token budgets, as fractions of the transfer tokens or of its own budget "
        f"(default {','.join(f'{f:g}' for f in LADDER_FRACTIONS)})",
    )
    add("--fresh", action="store_true", help="retrain every run instead of reading back finished ones")
    add("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ... (default auto)")
    add("--out", type=Path, default=Path("artifacts/transfer.json"), help="raw results (default %(default)s)")
    args = parser.parse_args()
    args.scale = QUICK if args.quick else FULL
    args.proxy_runs = args.proxy_runs or args.scale.proxy_runs
    if args.transfer_mixtures is None:
        args.transfer_mixtures = args.scale.transfer_mixtures
    args.seeds = list(range(args.seeds))
    if args.quick and args.ladder_tokens == "preset":
        parser.error("--ladder-tokens preset trains m on up to 4M tokens (minutes per run); not with --quick")
    args.names = [s for s in args.strategies.split(",") if s]
    if unknown := set(args.names) - set(FIXED + LEARNED):
        parser.error(f"unknown strategies {sorted(unknown)}; known: {', '.join(FIXED + LEARNED)}")
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")  # BoTorch's numerical warnings; errors still stop the bench
    started = time.perf_counter()
    cache = ARTIFACTS / "transfer_cache" / ("quick" if args.quick else "full")
    data = build_data(cache, args.scale)
    journal = cache / "runs.jsonl"
    if args.fresh:
        journal.unlink(missing_ok=True)
    eval_tokens = eval_tokens_for(data, args.scale)
    args.vocab, device = data.vocab_size, str(resolve_device(args.device))
    gpu_default = args.scale.cuda_proxy_tokens if device.startswith("cuda") else None
    args.proxy_tokens = args.proxy_tokens or gpu_default or args.scale.proxy_tokens
    args.transfer_tokens = 4 * args.proxy_tokens
    args.target = data.domains if args.target == "all" else tuple(args.target.split(","))
    if unknown := sorted(set(args.target) - set(data.domains)):
        raise SystemExit(f"--target: unknown domains {unknown}; known: {', '.join(data.domains)}")
    space = make_space(data, (fidelity(PROXY, args.proxy_tokens, args.vocab),), args)
    trainer = Trainer(data, space, device, eval_tokens, journal)
    print(
        f"device {device}; train tokens {data.train_tokens}; copies of earlier documents dropped "
        f"{data.duplicates}; vocab {args.vocab}; each run scored on "
        f"{eval_tokens:,} val tokens per domain; corpus ready in {time.perf_counter() - started:.1f} s; "
        f"{trainer.resumed} runs read back from {journal.relative_to(ROOT)} (--fresh to retrain them)"
    )
    print(
        f"proxy budget {args.proxy_runs} x {PROXY} at {args.proxy_tokens:,} tokens; transfer: {TARGET} at "
        f"{args.transfer_tokens:,} tokens, seeds {args.seeds}; target: mean loss of {', '.join(args.target)}"
    )

    strategies = proxy_phase(args.names, data, args, trainer)
    table = transfer_phase(strategies, args, trainer)
    unique = list({tuple(np.round(r["weights"], 6)): r for r in table.values()}.values())
    target_means = [np.mean(r["target"]) for r in unique]
    rho = float(spearmanr([np.mean(r["proxy"]) for r in unique], target_means)[0])
    rho_half = float(spearmanr([np.mean(r["half_proxy"]) for r in unique], target_means)[0])
    seed_std = float(np.mean([std(r["target"]) for r in unique]))
    print(
        f"\ntarget loss at {TARGET}, {args.transfer_tokens:,} tokens (mean ± std, {len(args.seeds)} seeds) "
        f"| at {PROXY}, {args.proxy_tokens:,} tokens | predicted at {PROXY}"
    )
    for name, row in sorted(table.items(), key=lambda kv: float(np.mean(kv[1]["target"]))):
        if row["strategy"]:
            pred = strategies[name]["predicted_proxy_loss"]
            print(
                f"  {name:<8} {np.mean(row['target']):.4f} ± {std(row['target']):.4f} | "
                f"{np.mean(row['proxy']):.4f} | {'-' if pred is None else f'{pred:.4f}'}"
            )
    if sampled := [float(np.mean(r["target"])) for r in table.values() if not r["strategy"]]:
        print(f"  {len(sampled)} proxy mixtures: best {min(sampled):.4f}, median {np.median(sampled):.4f}")
    print(
        f"Spearman rho, proxy vs target scale, over {len(unique)} distinct mixtures: {rho:.3f} "
        f"({rho_half:.3f} with proxies of {args.proxy_tokens // 2:,} tokens); "
        f"mean seed std at the target scale {seed_std:.4f}"
    )

    learned = [n for n in args.names if n in LEARNED]
    best = min(learned, key=lambda n: float(np.mean(table[n]["target"]))) if learned else None
    margin, margin_z = beyond_noise(table, best, unique, len(args.seeds))
    ladder_mixtures = {n: get_strategy(n).recommend(space, []).weights for n in FIXED}
    more_seeds = {}
    if best:
        ladder_mixtures = {best: strategies[best]["weights"], **ladder_mixtures}
        if args.margin_seeds > len(args.seeds):
            more_seeds = margin_on_more_seeds(ladder_mixtures, best, args, trainer)
    ladder = {"points": [], "predictions": {}, "curves": {}}
    if args.ladder:
        ladder = ladder_phase(ladder_mixtures, args, trainer)
    out = args.out if args.out.is_absolute() else ROOT / args.out
    plot(out.with_suffix(".png"), ladder, table, rho, args)

    preds = ladder["predictions"].values()
    result = {
        "rho_proxy_target": rho,
        "rho_half_proxy": rho_half,
        "best_learned": best or "none",
        "best_learned_loss": float(np.mean(table[best]["target"])) if best else float("nan"),
        "margin_vs_fixed": margin,
        "margin_z": margin_z,
        **{n: float(np.mean(table[n]["target"])) if n in table else float("nan") for n in FIXED},
        "scale_pred_rel_err": float(np.mean([p["rel_err"] for p in preds])) if preds else float("nan"),
        "scale_in_band": f"{sum(p['in_band'] for p in preds)}/{len(ladder_mixtures) if args.ladder else 0}",
        "scale_law": "{form}/{exponents}".format(**ladder["fit"]) if "fit" in ladder else "none",
        "scale_backtest_rel_err": ((ladder.get("fit") or {}).get("backtest") or {}).get(
            "rel_rms", float("nan")
        ),
        "seed_std": seed_std,
        **more_seeds,
    }
    speed = {}
    for preset in LADDER:
        if runs := [r for r in trainer.runs.values() if r.preset == preset]:
            rate = sum(r.tokens for r in runs) / sum(r.train_s for r in runs)
            other = float(np.mean([r.wall_s - r.train_s for r in runs]))
            speed[preset] = {"runs": len(runs), "train_tokens_per_s": rate, "other_s_per_run": other}
            print(f"{preset}: {len(runs)} runs, {rate:,.0f} tokens/s + {other:.1f} s setup/eval each")
    settings = {k: v for k, v in vars(args).items() if k not in ("scale", "out")}
    for s in strategies.values():
        s["history"] = [asdict(o) for o in s["history"]]
    report: dict[str, Any] = {
        "settings": settings | {"eval_tokens": eval_tokens, "device": device},
        "strategies": strategies,
    }
    report |= {"domains": {d: [data.train_tokens[d], data.val_tokens[d]] for d in data.domains}}
    report |= {"transfer": table, "ladder": ladder, "speed": speed, "result": result}
    report |= {"runs": [asdict(r) for r in trainer.runs.values()], "wall_s": time.perf_counter() - started}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} and its .png; {time.perf_counter() - started:.0f} s in all")
    print(
        "RESULT "
        + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
    )


if __name__ == "__main__":
    main()
