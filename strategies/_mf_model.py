"""The surrogate of ``admire``: a multi-fidelity GP over (mixture, fidelity) and how well it fits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from botorch.models import SingleTaskMultiFidelityGP
from botorch.models.transforms.outcome import Standardize

from strategies import _botorch_utils as bt
from strategies.base import Observation, SearchSpace


def fit_model(
    space: SearchSpace, obs: Sequence[Observation], coords: dict[str, float], max_fit: int
) -> SingleTaskMultiFidelityGP:
    """MF-GP on ``[w, s] -> -loss`` (BoTorch maximises).

    Hyperparameters are fitted on at most ``max_fit`` runs (every target-fidelity run first, the rest
    spread evenly over the others), then the posterior conditions on all runs: each marginal-likelihood
    step costs O(n^3) and a fit takes a hundred of them, the conditioning only one.
    """
    x = bt.as_tensor([[*o.weights, coords[o.fidelity]] for o in obs])  # (n, k + 1)
    y = bt.as_tensor([[-o.target_loss] for o in obs])  # (n, 1)

    def build(rows: np.ndarray) -> SingleTaskMultiFidelityGP:
        return SingleTaskMultiFidelityGP(
            x[rows], y[rows], data_fidelities=[space.k], outcome_transform=Standardize(m=1)
        )

    subset = _fit_subset(x[:, space.k].numpy(), max_fit)
    model = build(subset)
    bt.fit(model)
    if len(subset) == len(obs):
        return model
    full = build(np.arange(len(obs)))
    hyper = {k: v for k, v in model.state_dict().items() if not k.startswith("outcome_transform.")}
    full.load_state_dict(hyper, strict=False)  # Standardize keeps the statistics of all runs
    full.eval()
    return full


def _fit_subset(s: np.ndarray, max_fit: int) -> np.ndarray:
    """Row indices for the hyperparameter fit: the latest target runs, then evenly spaced others."""
    target = np.flatnonzero(s == 1.0)[-max_fit:]
    others = np.flatnonzero(s != 1.0)
    room = max_fit - len(target)
    if len(others) > room:
        others = (
            others[np.round(np.linspace(0, len(others) - 1, room)).astype(int)] if room > 0 else others[:0]
        )
    return np.sort(np.concatenate([target, others]))


def diagnostics(
    model: SingleTaskMultiFidelityGP,
    space: SearchSpace,
    obs: Sequence[Observation],
    n_history: int,
    max_fit: int,
) -> dict[str, float]:
    """Counts (``n_fit``: runs the hyperparameters were fitted on), the fitted noise, and how well
    leave-one-out predictions rank the target-fidelity runs."""
    target = [i for i, o in enumerate(obs) if o.fidelity == space.target_fidelity.name]
    out = {
        "n_observations": float(len(obs)),
        "n_target": float(len(target)),
        "n_dropped": float(n_history - len(obs)),
        "n_fit": float(min(len(obs), max_fit)),
        "noise_std": bt.noise_std(model),
    }
    spearman = bt.loo_spearman(model, target)
    if spearman is not None:
        out["cv_spearman"] = spearman
    return out
