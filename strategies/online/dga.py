"""DGA, Dynamic Gradient Alignment (Fan, Grangier and Ablin 2024): sample more of what pushes the target down.

One SGD step on domain j changes the target loss by about ``-lr * <g_j, g_target>``, so the gradient
of the next target loss with respect to the mixture is ``-lr * alignment``. DGA takes an
exponentiated-gradient (mirror) step on the raw weights ``alpha`` with that gradient at every update
and trains on an exponential moving average of ``alpha``; the average keeps one noisy alignment
estimate from swinging the mixture.

The signal's ``alignment`` holds, per training domain, the dot product or cosine between that domain's
gradient and the target-weighted gradient (:mod:`proxy_models.online` sends cosines). With ``normalize``
the alignments are divided by their largest magnitude, so ``eta`` is the largest log-weight change one
update makes whatever the gradients' scale.
"""

from __future__ import annotations

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


class DGA:
    """Online gradient-alignment mixing.

    Parameters:
        eta: step size of each update's exponentiated-gradient step on the raw weights, > 0; with
            normalize, the largest log-weight change one update makes
        ema: weight kept on the previous training mixture when the new raw weights are averaged in,
            in [0, 1); 0 = train on the raw weights
        normalize: divide the alignments by their largest magnitude, so the step ignores the gradients' scale
        init: starting mixture, "uniform" or "natural" (token-proportional), projected onto the caps
        budget_tokens: token budget of the training run, which sets the epoch caps on the weights;
            default: the experiment's target tokens (else the target fidelity's)
    """

    name = "dga"
    signals = ("alignment",)

    def __init__(
        self,
        eta: float = 0.3,
        ema: float = 0.5,
        normalize: bool = True,
        init: str = "uniform",
        budget_tokens: int | None = None,
    ) -> None:
        if not eta > 0:
            raise StrategyError(f"eta must be > 0, got {eta}")
        if not 0 <= ema < 1:
            raise StrategyError(f"ema must be in [0, 1), got {ema}")
        self.eta = float(eta)
        self.ema = float(ema)
        self.normalize = bool(normalize)
        self.init = init
        self.budget_tokens = budget_tokens

    def start(self, space: SearchSpace, seed: int = 0) -> OnlineState:
        state = initial_state(self.name, space, seed, self.budget_tokens, self.init)
        state["alpha"] = list(state["weights"])
        return state

    def weights(self, state: OnlineState) -> tuple[float, ...]:
        return tuple(state["weights"])

    def update(self, state: OnlineState, signal: Signal) -> tuple[OnlineState, tuple[float, ...]]:
        check_state(self.name, state, signal)
        new = stamped(state, signal)
        alignment = vector(signal.alignment, state["domains"], "alignments")
        if self.normalize:
            scale = np.abs(alignment).max()
            alignment = alignment / scale if scale > 0 else alignment
        alpha = project(state, exponentiated_step(np.asarray(state["alpha"]), alignment, self.eta))
        w = project(state, self.ema * np.asarray(state["weights"]) + (1 - self.ema) * alpha)
        new["alpha"] = to_list(alpha)
        new["weights"] = to_list(w)
        return new, tuple(new["weights"])
