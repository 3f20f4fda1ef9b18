"""Where a run trains and in which precision.

bf16 autocast is used only where it is measurably faster: on GPUs that support it, and on CPUs whose
bf16 matmuls (AMX / AVX512-BF16 through oneDNN) beat fp32 on a training-shaped block, forward and
backward, casts included. The CPU check costs a fraction of a second and runs once per process.

On CPU the allocator matters as much as the kernels: see ``retain_freed_memory``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

BF16_MIN_SPEEDUP = 1.15  # below this the rounding error is not worth it


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` means CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")
    return device


def set_threads(threads: int | None) -> int:
    """Use ``threads`` intra-op threads and return the number in use.

    By default all cores, unless ``OMP_NUM_THREADS`` says otherwise: on a machine shared with other
    work, more threads than free cores make every OpenMP barrier wait on a descheduled thread.
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    n = threads or (int(env) if env.isdigit() and int(env) > 0 else None) or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# glibc mallopt(3) parameters
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


@functools.cache
def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the OS; True if applied.

    A training step allocates and frees the same large tensors every time (the ``(B·T, vocab)`` logits
    alone are 16 MB). By default glibc serves such blocks with ``mmap`` or trims them off the heap on
    ``free``, so the next step page-faults the memory back in and the kernel zero-fills it: thousands
    of faults per step of the ``s`` preset on 2 cores, most of the time not spent in matmuls. Serving
    blocks up to 32 MB (glibc's maximum) from the heap and never trimming it removes almost all of
    them (``bench/trainer_mfu.py``: 56 % → 63 % of the bf16 matmul peak). The cost is that the process
    keeps its peak heap until it exits, which suits a worker that trains runs of one size after
    another. A no-op where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:
        return False
    ok = all(
        mallopt(param, value)
        for param, value in (
            (_M_MMAP_THRESHOLD, 32 << 20),
            (_M_TRIM_THRESHOLD, 1 << 30),
            (_M_TOP_PAD, 64 << 20),
        )
    )
    logger.debug("glibc malloc tuned for training: %s", ok)
    return bool(ok)


def _time_block(step: Callable[[], None], reps: int = 3) -> float:
    step()  # warm-up: oneDNN builds its kernels on first use
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def cpu_bf16_speedup(threads: int) -> float:
    """Measured speed of a bf16-autocast MLP block (forward + backward) relative to fp32 on this CPU."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 512, generator=gen)
    w1 = torch.randn(2048, 512, generator=gen, requires_grad=True)
    w2 = torch.randn(512, 2048, generator=gen, requires_grad=True)

    def block(dtype: torch.dtype | None) -> Callable[[], None]:
        def step() -> None:
            ctx = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
            with ctx:
                y = F.linear(F.gelu(F.linear(x, w1)), w2)  # (2048, 512)
            y.float().square().mean().backward()
            w1.grad = w2.grad = None

        return step

    fp32 = _time_block(block(None))
    bf16 = _time_block(block(torch.bfloat16))
    logger.info("CPU bf16 check (%d threads): fp32 %.1f ms, bf16 %.1f ms", threads, fp32 * 1e3, bf16 * 1e3)
    return fp32 / bf16


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for a run, or None for plain fp32. ``precision``: "auto", "bf16" or "fp32"."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', not {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16_speedup(torch.get_num_threads()) >= BF16_MIN_SPEEDUP else None
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
