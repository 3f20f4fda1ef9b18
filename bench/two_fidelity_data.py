"""A real two-fidelity dataset: a grid of mixtures trained on the demo corpus at two proxy presets (issue 21).

The 7 bundled domains of ``bench/transfer.py`` (5 BBC news topics, Python code, licence texts), its corpus,
trainer and target (the uniform average of every domain's validation loss). Two fidelities:

- cheap: preset ``xs`` at 250,000 tokens (the transfer bench's proxy length when the table was made),
- target: preset ``s`` at 1,000,000 tokens (4x the tokens, the next preset).

Mixtures: uniform and natural weights, then RegMix's proposals (``propose(space, [], N, seed=0)`` over the
transfer bench's space at the cheap fidelity; seeds 1, 2, ... top up when short), keeping only mixtures the
*target* fidelity can train within max_epochs (``bench.transfer.trainable``), in proposal order, until there
are ``--cheap`` of them. All are trained at the cheap fidelity; the first ``--target`` of that list (so
uniform, natural and the first RegMix draws) also at the target fidelity. One seed (0) per run. Costs are
training FLOPs of the tokens actually trained (whole 2048-token batches), ``proxy_models.presets.run_flops``.

Writes one CSV row per run: ``mixture`` (uniform, natural, regmix<i>), ``fidelity`` (xs|s), ``preset``,
``tokens``, ``seed``, ``cost_flops``, ``w_<domain>``, ``loss_<domain>`` (validation loss per domain) and
``target_loss``, after ``#`` comment lines (what, date, machine, the exact command). Progress goes to
stderr; the last stdout line is ``RESULT cheap_runs=... target_runs=... rho_cheap_target=...`` with the
Spearman rho of target_loss between the fidelities over the mixtures trained at both.

Finished runs are journaled with the transfer bench's (``artifacts/transfer_cache/*/runs.jsonl``) and read
back, so an interrupted job resumes and runs either bench made are not trained twice. On 2 quiet CPU cores an
xs run takes about 9 s and an s run about 85 s (the full job: about 45 minutes; hours on shared cores).
``--quick`` (6 + 3 tiny runs on the quick corpus, written under artifacts/, never over the real table) is a
smoke test of about a minute.

    .venv/bin/python bench/two_fidelity_data.py [--quick] [--cheap 64] [--target 24] [--out PATH]
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import platform
import shlex
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.transfer import (  # noqa: E402
    ARTIFACTS,
    FULL,
    MAX_EPOCHS,
    PROXY,
    QUICK,
    ROOT,
    TARGET,
    Run,
    Trainer,
    build_data,
    eval_tokens_for,
    fidelity,
    make_space,
    trainable,
)
from proxy_models.device import resolve_device  # noqa: E402
from proxy_models.presets import run_flops  # noqa: E402
from strategies import get_strategy  # noqa: E402
from strategies.base import SearchSpace  # noqa: E402

DEFAULT_OUT = Path("bench/data/two_fidelity_runs.csv")
QUICK_OUT = Path("artifacts/two_fidelity_runs_quick.csv")
CHEAP_TOKENS = 250_000  # the cheap fidelity of the stored table (bench/transfer.py now defaults to 500,000)
SEED = 0
FIXED = ("uniform", "natural")


class QuietTrainer(Trainer):
    """The transfer bench's trainer; this script prints its own progress lines, on stderr."""

    def log(self, line: str) -> None:
        pass


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def mixtures(space: SearchSpace, n: int, target_tokens: int) -> dict[str, tuple[float, ...]]:
    """Uniform, natural, then RegMix's seeded proposals that ``target_tokens`` can train, in order."""
    out = {name: get_strategy(name).recommend(space, []).weights for name in FIXED}
    seen = {tuple(round(x, 6) for x in w) for w in out.values()}
    regmix = get_strategy("regmix")
    for seed in range(100):
        if len(out) >= n:
            break
        draws = [c.weights for c in regmix.propose(space, [], n, seed=seed)]
        for w in trainable(space, draws, target_tokens):
            if len(out) < n and (key := tuple(round(x, 6) for x in w)) not in seen:
                seen.add(key)
                out[f"regmix{len(out) - len(FIXED)}"] = w
    if len(out) < n:
        raise SystemExit(f"only {len(out)} mixtures trainable at {target_tokens:,} tokens; asked {n}")
    return dict(list(out.items())[:n])


def command_line() -> str:
    exe = Path(sys.executable)
    if exe.is_relative_to(ROOT):
        exe = exe.relative_to(ROOT)
    return shlex.join([str(exe), *sys.argv])


def write_csv(path: Path, comments: list[str], domains: tuple[str, ...], rows: list[dict]) -> None:
    columns = ["mixture", "fidelity", "preset", "tokens", "seed", "cost_flops"]
    columns += [f"w_{d}" for d in domains] + [f"loss_{d}" for d in domains] + ["target_loss"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        fh.writelines(f"# {c}\n" for c in comments)
        writer = csv.DictWriter(fh, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def row(label: str, run: Run, domains: tuple[str, ...], vocab: int) -> dict:
    out: dict[str, object] = {"mixture": label, "fidelity": run.preset, "preset": run.preset}
    out |= {
        "tokens": run.tokens,
        "seed": run.seed,
        "cost_flops": f"{run_flops(run.preset, run.tokens, vocab):.6g}",
    }
    out |= {f"w_{d}": repr(w) for d, w in zip(domains, run.weights, strict=True)}
    out |= {f"loss_{d}": repr(run.losses[d]) for d in domains}
    return out | {"target_loss": repr(run.target_loss)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="6 + 3 tiny runs on the quick corpus, into artifacts/; < 60 s")
    add("--cheap", type=int, help="mixtures trained at the cheap fidelity (default 64, quick 6)")
    add(
        "--target",
        type=int,
        help="the first N of them also trained at the target fidelity (default 24, quick 3)",
    )
    add("--out", type=Path, help=f"CSV to write (default {DEFAULT_OUT}, quick {QUICK_OUT})")
    add("--device", default="auto", help="auto (CUDA when present), cpu, cuda, ... (default auto)")
    args = parser.parse_args()
    args.scale = QUICK if args.quick else FULL
    args.cheap = args.cheap or (6 if args.quick else 64)
    args.target = args.target if args.target is not None else (3 if args.quick else 24)
    args.out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    if not 0 <= args.target <= args.cheap or args.cheap < len(FIXED):
        parser.error(f"need {len(FIXED)} <= --cheap and 0 <= --target <= --cheap")
    return args


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    cache = ARTIFACTS / "transfer_cache" / ("quick" if args.quick else "full")
    data = build_data(cache, args.scale)
    vocab, device, domains = data.vocab_size, str(resolve_device(args.device)), data.domains
    cheap_tokens = args.scale.proxy_tokens if args.quick else CHEAP_TOKENS
    target_tokens = 4 * cheap_tokens
    # The transfer bench's space at the cheap fidelity; its recommendations must fit the target tokens.
    space_args = argparse.Namespace(transfer_tokens=target_tokens, proxy_runs=args.cheap, target=data.domains)
    space = make_space(data, (fidelity(PROXY, cheap_tokens, vocab),), space_args)
    eval_tokens = eval_tokens_for(data, args.scale)
    trainer = QuietTrainer(data, space, device, eval_tokens, cache / "runs.jsonl")
    mixes = mixtures(space, args.cheap, target_tokens)
    plan = [(label, PROXY, cheap_tokens, w) for label, w in mixes.items()]
    plan += [(label, TARGET, target_tokens, w) for label, w in list(mixes.items())[: args.target]]
    progress(
        f"device {device}; {len(domains)} domains; corpus ready in {time.perf_counter() - started:.1f} s; "
        f"{len(plan)} runs ({args.cheap} {PROXY} at {cheap_tokens:,} tokens, {args.target} {TARGET} at "
        f"{target_tokens:,}); {trainer.resumed} finished runs in the journal"
    )

    rows, losses, trained = [], {PROXY: [], TARGET: []}, 0
    for i, (label, preset, tokens, w) in enumerate(plan, 1):
        reused = trainer.key(preset, tokens, w, SEED) in trainer.runs
        run = trainer.train(preset, w, tokens, SEED, label)
        trained += not reused
        rows.append(row(label, run, domains, vocab))
        losses[preset].append(run.target_loss)
        progress(
            f"[{time.perf_counter() - started:7.1f}s] run {i}/{len(plan)} {preset:>2} {tokens:>9,} tok "
            f"{label:<9} target_loss {run.target_loss:.4f}  {run.wall_s:.1f} s"
            + ("  (read back from the journal)" if reused else "")
        )

    n_both = len(losses[TARGET])
    rho = float(spearmanr(losses[PROXY][:n_both], losses[TARGET])[0]) if n_both > 2 else float("nan")
    wall = time.perf_counter() - started
    comments = [
        "Two-fidelity dataset of real proxy runs on mixlab's demo corpus (bench/two_fidelity_data.py, "
        "issue 21); one row per run.",
        f"cheap fidelity: preset {PROXY} at {cheap_tokens:,} tokens; target fidelity: preset {TARGET} at "
        f"{target_tokens:,} tokens (tokens column: trained, whole batches); cost_flops: run_flops.",
        f"mixtures: {', '.join(FIXED)}, then RegMix proposals (seed 0, top-ups 1, 2, ...) trainable at the "
        f"target tokens within max_epochs {MAX_EPOCHS:g}; the first {args.target} of {args.cheap} are also "
        f"trained at the target fidelity; seed {SEED}.",
        f"loss_<domain>: validation loss on {eval_tokens:,} tokens per domain; target_loss: their uniform "
        f"mean (bench/transfer.py's target). Spearman rho cheap vs target over {n_both} mixtures: {rho:.4f}.",
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {trained} runs trained, "
        f"{len(plan) - trained} read back from the journal; {wall:.0f} s",
        f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, device {device}",
        f"command: {command_line()}",
    ]
    out = args.out if args.out.is_absolute() else ROOT / args.out
    write_csv(out, comments, domains, rows)
    progress(f"wrote {len(rows)} rows to {args.out} in {wall:.0f} s ({trained} runs trained)")
    print(f"RESULT cheap_runs={len(losses[PROXY])} target_runs={n_both} rho_cheap_target={rho:.4f}")


if __name__ == "__main__":
    main()
