"""Named proxy presets: each one is a fidelity (model shape + default token budget + optimiser settings).

Shapes favour few wide layers: on a CPU the large matmuls of a wide layer run near peak speed while
the per-layer elementwise work (norms, GELU, softmax, residual adds) does not, so width buys accuracy
per second more cheaply than depth. Each preset costs 5–6× the FLOPs of the one before it.

Time per run at the default token budget, training alone on 2 idle CPU cores (bf16 with AMX), from the
tokens/s of ``python bench/trainer_mfu.py`` (2026-12-04, the 2-core CI machine): ``xs`` 14 s
(72k tokens/s), ``s`` 73 s (27k tokens/s), ``m`` 5.1 min (13k tokens/s); preparing the corpus and
evaluation add about 4 %. Those are the times of a run that has the cores to itself: a run sharing
them (other runs, the server, a browser) takes proportionally longer. A CPU without bf16 matmul units
trains in fp32, whose matmul peak in the same run was 351 GFLOP/s against the 545–815 GFLOP/s these
runs reached in bf16.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy_models.model import GPTConfig

DEFAULT_VOCAB = 4096


@dataclass(frozen=True)
class Preset:
    name: str
    n_layer: int
    n_head: int
    d_model: int
    seq_len: int
    batch_size: int  # sequences per step
    tokens: int  # default training budget
    lr: float
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.1  # cosine decays to this fraction of lr
    weight_decay: float = 0.1
    beta2: float = 0.95
    grad_clip: float = 1.0

    def model_config(self, vocab_size: int = DEFAULT_VOCAB) -> GPTConfig:
        return GPTConfig(
            vocab_size=vocab_size,
            seq_len=self.seq_len,
            n_layer=self.n_layer,
            n_head=self.n_head,
            d_model=self.d_model,
        )

    @property
    def batch_tokens(self) -> int:
        return self.batch_size * self.seq_len

    def steps(self, tokens: int | None = None) -> int:
        """Optimiser steps for a budget: whole batches, at least one."""
        budget = self.tokens if tokens is None else tokens
        return max(1, -(-budget // self.batch_tokens))


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        # non-embedding params (12·L·d² + norms): xs 0.44M, s 2.46M, m 7.96M; head size 64 throughout.
        # 2048-token steps: at these budgets the number of steps limits the loss more than batch noise
        # does (xs at 1M tokens: 5.5 with 2048-token steps, 6.1 with 8192), and a 2048-row matmul still
        # runs at full speed on CPU.
        # Peak learning rates: `python bench/preset_lr.py --fraction 0.5` (2026-12-07 at abc4d25, uniform
        # weights, seed 0, half each preset's budget, ×0.25 to ×2 the rates set by hand before): xs is
        # best at its 3e-3; s at 1e-3 (5.461, against 5.687 at its 2e-3), and on natural weights at
        # seeds 1 and 2, which the choice did not see, 1e-3 was 0.143 lower on average. m: `--presets m
        # --fraction 0.25 --factors 0.5,1 --check-seeds 1` (at 597161c, 25 minutes; fewer runs, as an m
        # run took 6 minutes on that machine): 5e-4 gave 5.242 at 1M tokens against 5.555 at its 1e-3,
        # and 0.217 lower on natural weights at seed 1; lower rates were not tried.
        Preset("xs", n_layer=1, n_head=3, d_model=192, seq_len=128, batch_size=16, tokens=1_000_000, lr=3e-3),
        Preset("s", n_layer=2, n_head=5, d_model=320, seq_len=128, batch_size=16, tokens=2_000_000, lr=1e-3),
        Preset("m", n_layer=2, n_head=9, d_model=576, seq_len=128, batch_size=16, tokens=4_000_000, lr=5e-4),
    )
}
DEFAULT_PRESET = "s"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown proxy preset {name!r}; known: {', '.join(PRESETS)}") from None


def run_flops(preset: str, tokens: int, vocab_size: int = DEFAULT_VOCAB) -> float:
    """Training FLOPs of a run: (6·N + causal attention) × tokens; see ``GPTConfig.flops_per_token``."""
    return get_preset(preset).model_config(vocab_size).flops_per_token() * float(tokens)
