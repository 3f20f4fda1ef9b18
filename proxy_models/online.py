"""Run an online mixing strategy (``strategies.online``) inside ``train_proxy`` through its controller hook.

The pure strategy decides; this adapter measures what it asks for (its ``signals``) from the trainer's
:class:`~proxy_models.controller.ControllerContext`:

- ``losses``: each domain's loss on a fixed set of windows chosen once, at the first update. Fixed
  windows make the change of loss between two updates reflect the model, not which windows were drawn,
  which is what Aioli's loss-drop probes need. Give ``heldout`` token arrays (text the run never trains
  on, and that the final evaluation does not use) where possible: on training windows a small domain
  that is repeated for several epochs looks more learnable than it is, and Aioli chases it. Without
  ``heldout`` the windows are training windows from ``ctx.batch``.
- ``alignment`` (DGA): the cosine (or dot product) between each training domain's gradient on a fresh
  batch and the target gradient ``sum_i t_i grad L_i`` on the fixed windows of the target's domains,
  which play the part of DGA's small specialised set.

Train with ``RunConfig(weights=controller.weights, ...)`` so the run starts on the strategy's
first mixture; the trainer's first update comes ``every`` steps in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from proxy_models.controller import ControllerContext
from strategies.base import SearchSpace
from strategies.online import OnlineState, Signal, get_online_strategy

logger = logging.getLogger(__name__)

Windows = dict[str, tuple[torch.Tensor, torch.Tensor]]


class OnlineController:
    """Adapter from a named online strategy to the trainer's controller protocol (checkpointable)."""

    def __init__(
        self,
        strategy_name: str,
        space: SearchSpace,
        *,
        every: int = 20,
        seed: int = 0,
        probe_windows: int = 32,
        grad_batch_size: int = 16,
        alignment: str = "cosine",
        heldout: Mapping[str, np.ndarray] | None = None,
        **params: Any,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1 step, got {every}")
        if alignment not in ("cosine", "dot"):
            raise ValueError(f"alignment must be 'cosine' or 'dot', got {alignment!r}")
        self.strategy = get_online_strategy(strategy_name, **params)
        self.space = space
        self.every = int(every)
        self.probe_windows = int(probe_windows)
        self.grad_batch_size = int(grad_batch_size)
        self.alignment = alignment
        self.heldout = heldout
        self.state: OnlineState = self.strategy.start(space, seed)
        self._windows: Windows | None = None  # on CPU; drawn at the first update

    @property
    def weights(self) -> dict[str, float]:
        """The mixture the strategy wants trained on now."""
        return dict(zip(self.space.domains, self.strategy.weights(self.state), strict=True))

    def update(self, step: int, ctx: ControllerContext) -> Mapping[str, float]:
        windows = self._fixed_windows(ctx)
        signal = Signal(
            step=step,
            losses=self._losses(ctx, windows) if "losses" in self.strategy.signals else {},
            alignment=self._alignments(ctx, windows) if "alignment" in self.strategy.signals else None,
        )
        self.state, _ = self.strategy.update(self.state, signal)
        logger.debug("%s at step %d: %s", self.strategy.name, step, self.weights)
        return self.weights

    # -- checkpointing (the trainer saves these with the run)

    def state_dict(self) -> dict[str, Any]:
        return {"state": self.state, "windows": self._windows}

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        self.state = saved["state"]
        self._windows = saved["windows"]

    # -- measurements

    def _measured_domains(self) -> list[str]:
        """Training domains, then target domains that are not also training domains."""
        return [*self.space.domains, *(d for d in self.space.target if d not in self.space.domains)]

    def _fixed_windows(self, ctx: ControllerContext) -> Windows:
        if self._windows is None:
            missing = [d for d in self._measured_domains() if d not in ctx.domains]
            if missing:
                raise ValueError(f"the run's data has no domains {missing}; it has {list(ctx.domains)}")
            self._windows = {}
            for d in self._measured_domains():
                if self.heldout is None:
                    x, y = ctx.batch(d, self.probe_windows)
                else:
                    x, y = _windows_of(self.heldout[d], ctx.model.cfg.seq_len, self.probe_windows)
                self._windows[d] = (x.cpu(), y.cpu())
        return self._windows

    @torch.no_grad()
    def _losses(self, ctx: ControllerContext, windows: Windows) -> dict[str, float]:
        return {d: float(ctx.loss(x.to(ctx.device), y.to(ctx.device))) for d, (x, y) in windows.items()}

    def _alignments(self, ctx: ControllerContext, windows: Windows) -> dict[str, float]:
        params = [p for p in ctx.model.parameters() if p.requires_grad]

        def flat_grad(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            grads = torch.autograd.grad(ctx.loss(x.to(ctx.device), y.to(ctx.device)), params)
            return torch.cat([g.reshape(-1).float() for g in grads])  # (n_params,)

        n = self.grad_batch_size
        target = torch.stack(
            [w * flat_grad(windows[d][0][:n], windows[d][1][:n]) for d, w in self.space.target.items()]
        ).sum(dim=0)  # (n_params,)
        out = {}
        for d in self.space.domains:
            g = flat_grad(*ctx.batch(d, n))
            dot = torch.dot(g, target)
            if self.alignment == "cosine":
                dot = dot / (g.norm() * target.norm()).clamp(min=1e-12)
            out[d] = float(dot)
        return out


def _windows_of(tokens: np.ndarray, seq_len: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` evenly spaced ``(x, y)`` windows of ``seq_len`` tokens from a held-out token array."""
    if len(tokens) < seq_len + 1:
        raise ValueError(f"held-out text of {len(tokens)} tokens is shorter than one window ({seq_len + 1})")
    starts = np.unique(np.linspace(0, len(tokens) - seq_len - 1, n).astype(np.int64))
    rows = [np.asarray(tokens[s : s + seq_len + 1], dtype=np.int64) for s in starts]
    seqs = torch.from_numpy(np.stack(rows))  # (n, T+1)
    return seqs[:, :-1], seqs[:, 1:]
