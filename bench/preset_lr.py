"""Which peak learning rate suits each proxy preset at its own budget? Real runs on the transfer corpus.

A proxy trains for a few hundred optimiser steps, so the learning rate decides how far it gets: too low
and it is still near the unigram loss, too high and its first steps overshoot. The presets' rates were
set by hand. On the 7 bundled domains of ``bench/transfer.py`` (target: the mean validation loss of all
7), for each preset this bench

1. tunes: trains uniform weights, seed 0, at ``--fraction`` of the preset's budget for the preset's
   rate times each of ``--factors``, and picks the lowest loss;
2. checks, on runs the choice did not see: trains natural (token-proportional) weights on seeds
   ``--check-seeds`` at the preset's rate and at the chosen one, and reports the mean difference
   (positive: the chosen rate is better).

Runs go to ``bench/transfer.py``'s journal (``artifacts/transfer_cache/*/runs.jsonl``), so a rerun reads
finished ones back, and runs at a preset's own rate serve both benches.

    .venv/bin/python bench/preset_lr.py [--quick] [--presets xs,s] [--factors 0.25,0.5,1,2]
        [--fraction 1] [--check-seeds 1,2]

Ends with ``RESULT best_factor_<preset>=… check_gain_<preset>=… …`` (loss of the preset's rate minus
the chosen rate's, mean over the check runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.transfer import ARTIFACTS, FULL, QUICK, Trainer, build_data, eval_tokens_for, fidelity  # noqa: E402
from proxy_models.presets import get_preset  # noqa: E402
from strategies.base import SearchSpace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="xs only, 100k tokens, factors 0.5,1, one check seed (< 60 s)")
    add("--presets", default="xs,s", help="presets to tune (default %(default)s)")
    add("--factors", default="0.25,0.5,1,2", help="multiples of each preset's rate (default %(default)s)")
    add("--fraction", type=float, default=1.0, help="of each preset's token budget (default %(default)s)")
    add("--check-seeds", default="1,2", help="seeds of the check runs (default %(default)s)")
    add("--out", type=Path, default=ARTIFACTS / "preset_lr.json", help="raw results (default %(default)s)")
    args = parser.parse_args()
    scale, presets = FULL, args.presets.split(",")
    factors = [float(f) for f in args.factors.split(",")]
    check_seeds = [int(s) for s in args.check_seeds.split(",")]
    if args.quick:
        scale, presets, factors, check_seeds = QUICK, ["xs"], [0.5, 1.0], [1]
    cache = ARTIFACTS / "transfer_cache" / ("quick" if args.quick else "full")
    data = build_data(cache, scale)
    space = SearchSpace(
        domains=data.domains,
        tokens=tuple(data.train_tokens[d] for d in data.domains),
        target={d: 1 / len(data.domains) for d in data.domains},
        fidelities=(fidelity(presets[0], get_preset(presets[0]).tokens, data.vocab_size),),
    )
    trainer = Trainer(data, space, "cpu", eval_tokens_for(data, scale), cache / "runs.jsonl")
    uniform = tuple(1 / len(data.domains) for _ in data.domains)
    natural = tuple(float(w) for w in space.natural())

    def loss(preset: str, tokens: int, lr: float, weights: tuple[float, ...], seed: int) -> float:
        return trainer.train(preset, weights, tokens, seed, f"lr {lr:.2e}", lr).target_loss

    results: dict[str, dict] = {}
    figures: dict[str, float] = {}
    for name in presets:
        preset = get_preset(name)
        tokens = 100_000 if args.quick else int(args.fraction * preset.tokens)
        print(f"\n{name}: {tokens:,} tokens ({preset.steps(tokens)} steps), its rate {preset.lr:.2e}")
        tuned = {f: loss(name, tokens, f * preset.lr, uniform, 0) for f in factors}
        best = min(tuned, key=tuned.__getitem__)
        shown = ", ".join(f"x{f:g} {v:.4f}" for f, v in tuned.items())
        print(f"  tuning (uniform weights, seed 0): {shown}; chosen x{best:g}")
        gains = [
            loss(name, tokens, preset.lr, natural, s) - loss(name, tokens, best * preset.lr, natural, s)
            for s in check_seeds
        ]
        print(
            f"  check (natural weights, seeds {','.join(map(str, check_seeds))}): "
            "the preset's rate minus the chosen one's "
            f"{', '.join(f'{g:+.4f}' for g in gains)}, mean {np.mean(gains):+.4f}"
        )
        results[name] = {
            "tokens": tokens,
            "lr": preset.lr,
            "tuning": tuned,
            "best_factor": best,
            "check": gains,
        }
        figures[f"best_factor_{name}"] = best
        figures[f"check_gain_{name}"] = float(np.mean(gains))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}))
    print("RESULT " + " ".join(f"{k}={v:.4g}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
