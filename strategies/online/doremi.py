"""DoReMi (Xie et al. 2023) as an online baseline: up-weight the domains furthest above a reference.

DoReMi trains a small model with Group DRO against a reference model: at each update the per-domain
excess loss ``max(L_i - L_ref_i, 0)`` drives an exponentiated-gradient step on the domain weights,
which are then smoothed toward uniform (``smoothing``) so no domain starves. The paper trains its
final model on the *average* of these weights; the state keeps that running average (``average``) next
to the weights to train on now, so a session can hand it over as a static mixture when it ends.

Reference losses come from the signal (``reference_losses``, e.g. a reference run measured at the same
step) or, failing that, from the constant ``reference`` given as a parameter.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from strategies.base import SearchSpace, StrategyError
from strategies.online.base import (
    OnlineState,
    Signal,
    check_state,
    exponentiated_step,
    initial_state,
    project,
    stamped,
    to_list,
    vector,
)


class DoReMi:
    """Excess-loss Group-DRO weights.

    Parameters:
        eta: step size of the exponentiated-gradient update per unit of excess loss (nats), > 0
        smoothing: share of the uniform mixture blended into the weights at each update, in [0, 1]
        reference: constant per-domain reference losses ({domain: loss}), used when a signal has none
        init: starting mixture, "uniform" or "natural" (token-proportional), projected onto the caps
        budget_tokens: token budget of the training run, which sets the epoch caps on the weights;
            default: the experiment's target tokens (else the target fidelity's)
    """

    name = "doremi"
    signals = ("losses",)

    def __init__(
        self,
        eta: float = 1.0,
        smoothing: float = 1e-3,
        reference: Mapping[str, float] | None = None,
        init: str = "uniform",
        budget_tokens: int | None = None,
    ) -> None:
        if not eta > 0:
            raise StrategyError(f"eta must be > 0, got {eta}")
        if not 0 <= smoothing <= 1:
            raise StrategyError(f"smoothing must be in [0, 1], got {smoothing}")
        self.eta = float(eta)
        self.smoothing = float(smoothing)
        self.reference = dict(reference) if reference is not None else None
        self.init = init
        self.budget_tokens = budget_tokens

    def start(self, space: SearchSpace, seed: int = 0) -> OnlineState:
        state = initial_state(self.name, space, seed, self.budget_tokens, self.init)
        state["alpha"] = list(state["weights"])
        state["average"] = list(state["weights"])
        return state

    def weights(self, state: OnlineState) -> tuple[float, ...]:
        return tuple(state["weights"])

    def update(self, state: OnlineState, signal: Signal) -> tuple[OnlineState, tuple[float, ...]]:
        check_state(self.name, state, signal)
        if signal.reference_losses is None and self.reference is None:
            raise StrategyError("doremi needs reference losses: in the signal or the 'reference' parameter")
        domains = state["domains"]
        new = stamped(state, signal)
        losses = vector(signal.losses, domains, "losses")
        reference = vector(signal.reference_losses or self.reference, domains, "reference losses")
        excess = np.clip(losses - reference, 0.0, None)
        alpha = exponentiated_step(np.asarray(state["alpha"]), excess, self.eta)
        k = len(domains)
        w = project(state, (1 - self.smoothing) * alpha + self.smoothing / k)
        n = new["updates"]
        new["alpha"] = to_list(alpha)
        new["weights"] = to_list(w)
        new["average"] = to_list((np.asarray(state["average"]) * (n - 1) + w) / n)
        return new, tuple(new["weights"])
