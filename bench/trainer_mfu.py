"""How close the proxy trainer comes to this machine's matmul peak, and how much of a run is not training.

In one process: (1) the peak FLOP/s of large square fp32 and bf16 matmuls on all threads; (2) each
preset's achieved model FLOP/s (``GPTConfig.flops_per_token`` × tokens / pure training seconds, after
a one-step warm-up run) and its ratio to the peak of the precision the trainer chose (MFU); (3) for
the default preset, the share of a full run's wall time spent outside the optimiser steps: preparing
the corpus (tokenizer + token files), setup and evaluation (per-step data loading is inside the
training time: about 0.5 ms of a 100 ms step). The peak is measured before and after the training
runs and the higher value is used, so a noisy neighbour lowers MFU rather than inflating it. On a
machine with CUDA the same figures are reported for the GPU as well.

    python bench/trainer_mfu.py [--quick] [--presets xs,s,m] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy_models.corpora import write_corpus  # noqa: E402
from proxy_models.data import prepare  # noqa: E402
from proxy_models.device import set_threads  # noqa: E402
from proxy_models.presets import DEFAULT_PRESET, PRESETS  # noqa: E402
from proxy_models.train import RunConfig, train_proxy  # noqa: E402

SOURCES = ("sports", "politics", "code", "legal")


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    """Best FLOP/s of an ``n × n`` matmul over three timed bursts (GPU work queued in tens, then synced)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    per_sync = 10 if device.type == "cuda" else 1
    for _ in range(2):
        a @ b
    sync()
    best = 0.0
    for _ in range(3):
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            for _ in range(per_sync):
                a @ b
            sync()
            reps += per_sync
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def peaks(device: torch.device, quick: bool) -> dict[str, float]:
    n = 8192 if device.type == "cuda" else (1024 if quick else 2048)
    seconds = 0.6 if quick else 2.0
    return {
        "fp32": matmul_peak(device, torch.float32, n, seconds),
        "bf16": matmul_peak(device, torch.bfloat16, n, seconds),
    }


def measure(
    device: torch.device,
    presets: list[str],
    quick: bool,
    threads: int,
    data_dir: Path,
    corpus: dict[str, Path],
) -> dict:
    """Peaks, per-preset throughput, and the default preset's overhead share on one device."""
    before = peaks(device, quick)
    start = time.perf_counter()
    data = prepare(corpus, data_dir)
    prepare_s = time.perf_counter() - start
    uniform = {d: 1 / len(data.domains) for d in data.domains}
    rows = {}
    for name in presets:
        preset = PRESETS[name]
        if name == DEFAULT_PRESET:  # its run also gives the overhead share: long enough to mean something
            steps = 120 if quick else preset.steps()
        else:
            steps = 5 if quick else 30
        warm_up = RunConfig(name, uniform, tokens=preset.batch_tokens, device=str(device), eval_tokens=128)
        train_proxy(
            data, warm_up, threads=threads
        )  # kernel choice, first-touch allocations: not steady state
        cfg = RunConfig(
            name,
            uniform,
            tokens=steps * preset.batch_tokens,
            device=str(device),
            max_epochs=1e9,
            eval_tokens=4_096 if quick else RunConfig.eval_tokens,
        )
        result = train_proxy(data, cfg, threads=threads)
        rows[name] = {"result": result, "flops_per_s": result.flops / result.train_s}
    after = peaks(device, quick)
    peak = {k: max(before[k], after[k]) for k in before}
    for row in rows.values():
        row["mfu"] = row["flops_per_s"] / peak[row["result"].precision]
        row["tokens_per_s"] = row["result"].tokens / row["result"].train_s
    main = rows[DEFAULT_PRESET]["result"] if DEFAULT_PRESET in rows else next(iter(rows.values()))["result"]
    total = prepare_s + main.wall_s
    return {
        "peak": peak,
        "peak_before": before,
        "rows": rows,
        "prepare_s": prepare_s,
        "overhead": (total - main.train_s) / total,
        "run_overhead": (main.wall_s - main.train_s) / main.wall_s,
    }


def report(label: str, m: dict) -> None:
    peak = m["peak"]
    print(f"\n== {label} ==")
    print(
        f"matmul peak: fp32 {peak['fp32'] / 1e9:,.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:,.0f} GFLOP/s "
        f"(bf16/fp32 = {peak['bf16'] / peak['fp32']:.2f}; before training: fp32 "
        f"{m['peak_before']['fp32'] / 1e9:,.0f}, bf16 {m['peak_before']['bf16'] / 1e9:,.0f})"
    )
    header = ("preset", "params", "prec", "steps", "tokens/s", "GFLOP/s", "MFU", "vs fp32")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 8, 5, 6, 10, 9, 6, 8), strict=True)))
    for name, row in m["rows"].items():
        r = row["result"]
        cfg = PRESETS[name].model_config()
        print(
            f"{name:>6} {cfg.non_embedding_params / 1e6:7.2f}M {r.precision:>5} {r.steps:6d} "
            f"{row['tokens_per_s']:10,.0f} {row['flops_per_s'] / 1e9:9.1f} {row['mfu']:6.1%} "
            f"{row['flops_per_s'] / peak['fp32']:8.1%}"
        )
    print(
        f"overhead (not training) of a {DEFAULT_PRESET} run incl. corpus preparation: {m['overhead']:.1%} "
        f"(prepare {m['prepare_s']:.1f}s); of the run alone: {m['run_overhead']:.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small budgets, finishes in under a minute")
    parser.add_argument("--presets", default=None, help="comma-separated presets (default: all; quick: xs,s)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    presets = (args.presets or ("xs,s" if args.quick else ",".join(PRESETS))).split(",")
    threads = set_threads(args.threads)
    mode = "quick" if args.quick else "full"
    print(f"torch {torch.__version__}, {threads} CPU threads, presets {presets}, {mode}")

    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus(Path(tmp) / "raw", SOURCES, max_chars=100_000 if args.quick else 1_000_000)
        cpu = measure(torch.device("cpu"), presets, args.quick, threads, Path(tmp) / "cpu", corpus)
        report(f"CPU ({threads} of {os.cpu_count()} cores)", cpu)
        default = cpu["rows"].get(DEFAULT_PRESET) or next(iter(cpu["rows"].values()))
        fields = {
            "mfu_cpu": f"{default['mfu']:.3f}",
            "tokens_per_s": f"{default['tokens_per_s']:.0f}",
            "overhead": f"{cpu['overhead']:.3f}",
        }
        if torch.cuda.is_available():
            gpu = measure(torch.device("cuda"), presets, args.quick, threads, Path(tmp) / "gpu", corpus)
            report(f"GPU ({torch.cuda.get_device_name()})", gpu)
            gpu_default = gpu["rows"].get(DEFAULT_PRESET) or next(iter(gpu["rows"].values()))
            fields["mfu_gpu"] = f"{gpu_default['mfu']:.3f}"
            fields["tokens_per_s_gpu"] = f"{gpu_default['tokens_per_s']:.0f}"
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()))


if __name__ == "__main__":
    main()
