"""Aioli (Chen et al. 2024): learn the mixing law's interaction matrix during training, then follow it.

The linear dynamic mixing law says that training for a short while on mixture p lowers loss i by
``(A p)_i``: ``A[i, j]`` is how much a unit of domain j helps domain i right now. Aioli estimates A online
and moves the mixture by exponentiated gradient on the target loss ``sum_i t_i L_i``, whose gradient
with respect to p is ``-A^T t``.

As a state machine over updates (each update is one interval of training, one :class:`Signal`):

- ``exploit``: train on the current mixture p for ``exploit_updates`` intervals (``warmup_updates`` for
  the first), then start a probing round;
- ``probe``: one interval per domain, in a seeded random order, on ``(1 - probe_share) p +
  probe_share e_j`` (projected onto the caps), each followed by ``settle_updates`` intervals on p;
- after the last probe, solve ``drops = P A^T`` for A by least squares (one row per probe: the loss
  drop from the probe's start to the end of its settling), smooth A with an EMA over rounds, step p
  toward domains with large ``A^T t``, and go back to exploiting.

Why settle: a small model's loss follows the recent mixture closely, so a probe that leans on code
raises the prose domains' losses for a while, and the next probe, whatever it leans on, is credited with
undoing that. Measuring each probe's drop only after an interval back on p charges a probe's passing
effects to the probe itself, and leaves what lasts. ``settle_updates=0`` is the paper's back-to-back probes.

Every probe mixture sums to 1, so a drop shared by all probes (plain progress of training) adds the same
constant to every ``(A^T t)_j`` and cancels in the normalised step: only the differences between domains
move the mixture. Probing in a fresh random order each round spreads the bias of loss curves flattening
over time across domains instead of always favouring the first probe.
"""

from __future__ import annotations

import logging

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

logger = logging.getLogger(__name__)


class Aioli:
    """Online Aioli: probe each domain in turn, estimate the interaction matrix, step toward what helps.

    Parameters:
        eta: largest log-weight change one round's step makes (the step is normalised), > 0
        probe_share: weight a probe puts on its domain: (1 - probe_share) p + probe_share e_j, in (0, 1]
        exploit_updates: updates trained on the current mixture between probing rounds (at least 1)
        warmup_updates: updates on the starting mixture before the first probing round (at least 1)
        settle_updates: updates back on the mixture after each probe before its loss drop is measured;
            0 = back-to-back probes, as in the paper
        rounds: most probing rounds, then the mixture stays fixed; None = probe all run long
        ema: weight kept on the previous interaction-matrix estimate at each round, in [0, 1)
        init: starting mixture, "uniform" or "natural" (token-proportional), projected onto the caps
        budget_tokens: token budget of the training run, which sets the epoch caps on the weights;
            default: the experiment's target tokens (else the target fidelity's)
    """

    name = "aioli"
    signals = ("losses",)

    def __init__(
        self,
        eta: float = 0.5,
        probe_share: float = 0.5,
        exploit_updates: int = 4,
        warmup_updates: int = 1,
        settle_updates: int = 1,
        rounds: int | None = None,
        ema: float = 0.5,
        init: str = "uniform",
        budget_tokens: int | None = None,
    ) -> None:
        if not eta > 0:
            raise StrategyError(f"eta must be > 0, got {eta}")
        if not 0 < probe_share <= 1:
            raise StrategyError(f"probe_share must be in (0, 1], got {probe_share}")
        if exploit_updates < 1 or warmup_updates < 1 or settle_updates < 0:
            raise StrategyError("exploit_updates and warmup_updates must be >= 1, settle_updates >= 0")
        if rounds is not None and rounds < 0:
            raise StrategyError(f"rounds must be >= 0 or None, got {rounds}")
        if not 0 <= ema < 1:
            raise StrategyError(f"ema must be in [0, 1), got {ema}")
        self.eta = float(eta)
        self.probe_share = float(probe_share)
        self.exploit_updates = int(exploit_updates)
        self.warmup_updates = int(warmup_updates)
        self.settle_updates = int(settle_updates)
        self.rounds = rounds
        self.ema = float(ema)
        self.init = init
        self.budget_tokens = budget_tokens

    def start(self, space: SearchSpace, seed: int = 0) -> OnlineState:
        state = initial_state(self.name, space, seed, self.budget_tokens, self.init)
        state.update(
            phase="exploit",
            remaining=self.warmup_updates,
            mixture=list(state["weights"]),
            round=0,
            order=[],
            probe=0,
            probe_mixtures=[],
            drops=[],
            probe_start_losses=None,
            interactions=None,
        )
        return state

    def weights(self, state: OnlineState) -> tuple[float, ...]:
        return tuple(state["weights"])

    def update(self, state: OnlineState, signal: Signal) -> tuple[OnlineState, tuple[float, ...]]:
        check_state(self.name, state, signal)
        new = stamped(state, signal)
        losses = vector(signal.losses, list(state["target"]), "losses")
        phase = state["phase"]
        if phase == "probe" and self.settle_updates > 0:
            new.update(phase="settle", remaining=self.settle_updates, weights=list(state["mixture"]))
        elif phase == "settle" and state["remaining"] > 1:
            new["remaining"] = state["remaining"] - 1
        elif phase in ("probe", "settle"):
            drop = np.asarray(state["probe_start_losses"]) - losses
            new["drops"] = [*state["drops"], to_list(drop)]
            if state["probe"] + 1 < len(state["order"]):
                i = state["probe"] + 1
                new.update(phase="probe", probe=i, weights=list(state["probe_mixtures"][i]))
                new["probe_start_losses"] = to_list(losses)
            else:
                self._fit(new)
        else:
            new["remaining"] = state["remaining"] - 1
            if new["remaining"] <= 0 and (self.rounds is None or state["round"] < self.rounds):
                self._begin_probing(new, losses)
        return new, tuple(new["weights"])

    def _begin_probing(self, state: OnlineState, losses: np.ndarray) -> None:
        k = len(state["domains"])
        order = np.random.default_rng([state["seed"], state["round"]]).permutation(k)
        p = np.asarray(state["mixture"])
        probes = [project(state, (1 - self.probe_share) * p + self.probe_share * np.eye(k)[j]) for j in order]
        state.update(
            phase="probe",
            order=[int(j) for j in order],
            probe=0,
            probe_mixtures=[to_list(q) for q in probes],
            drops=[],
            probe_start_losses=to_list(losses),
            weights=to_list(probes[0]),
        )

    def _fit(self, state: OnlineState) -> None:
        """Solve ``drops = P A^T`` for A, smooth it, and take one exponentiated-gradient step."""
        k = len(state["domains"])
        P = np.zeros((k, k))  # (probe, training domain), rows in domain order
        D = np.zeros((k, len(state["target"])))  # (probe, target domain)
        for row, j in enumerate(state["order"]):
            P[j] = state["probe_mixtures"][row]
            D[j] = state["drops"][row]
        At, *_ = np.linalg.lstsq(P, D, rcond=None)  # (training domain, target domain)
        A = At.T
        if state["interactions"] is not None:
            A = self.ema * np.asarray(state["interactions"]) + (1 - self.ema) * A
        gain = A.T @ np.asarray(list(state["target"].values()))  # target-loss drop per unit of domain j
        centred = gain - gain.mean()
        scale = np.abs(centred).max()
        # Differences at rounding-error level are no evidence; normalising them would make a full step.
        tied = scale <= 1e-9 * np.abs(gain).max()
        direction = np.zeros_like(gain) if tied else centred / scale
        mixture = project(state, exponentiated_step(np.asarray(state["mixture"]), direction, self.eta))
        logger.debug("aioli round %d: gain %s -> mixture %s", state["round"], gain, mixture)
        state.update(
            phase="exploit",
            remaining=self.exploit_updates,
            round=state["round"] + 1,
            interactions=[to_list(r) for r in A],
            mixture=to_list(mixture),
            weights=to_list(mixture),
        )
