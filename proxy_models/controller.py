"""The hook through which online mixing methods (Aioli, DGA, DoReMi) steer a proxy run's weights.

Every ``controller.every`` optimiser steps the trainer calls ``controller.update(step, ctx)`` and
trains on the weights it returns. ``ctx`` carries what such methods need: the model, the mean training
loss of each domain since the last update (free: the trainer knows each sequence's domain), fresh
batches from any one domain, and the run's loss function, enough to take per-domain gradients.
Gradients a controller leaves on the model are cleared before the next training step.

A controller that also has ``state_dict()`` / ``load_state_dict(state)`` is checkpointed with the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from proxy_models.model import GPT


@runtime_checkable
class OnlineController(Protocol):
    every: int  # optimiser steps between updates

    def update(self, step: int, ctx: ControllerContext) -> Mapping[str, float]:
        """New mixture weights (domain → weight; normalised by the trainer)."""
        ...


@dataclass
class ControllerContext:
    step: int  # optimiser steps done so far
    total_steps: int
    model: GPT
    domains: tuple[str, ...]
    weights: dict[str, float]  # the weights in force until now
    train_losses: dict[str, float]  # mean training loss per domain since the last update (drawn domains only)
    device: torch.device
    batch_fn: Callable[[str, int | None], tuple[torch.Tensor, torch.Tensor]]
    loss_fn: Callable[[GPT, torch.Tensor, torch.Tensor], torch.Tensor]

    def batch(self, domain: str, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of shape ``(B, T)`` on the run's device: random training windows of one domain."""
        return self.batch_fn(domain, batch_size)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss of the current model on ``(x, y)`` in the run's precision (call ``backward``)."""
        return self.loss_fn(self.model, x, y)
