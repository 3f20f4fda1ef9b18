"""BoTorch plumbing shared by the GP strategies: tensors, the simplex constraint, fitting, mean maximisation.

Mixtures are optimised in their own coordinates: ``x[:k]`` are the domain weights, with the box
``lo <= w <= hi`` as bounds and ``sum(w) = 1`` as one linear equality constraint that ``optimize_acqf``
hands to SLSQP. Any columns after ``k`` (a fidelity) are free of that constraint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from botorch.acquisition import AcquisitionFunction, PosteriorMean
from botorch.cross_validation import loo_cv
from botorch.exceptions import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models.gpytorch import GPyTorchModel
from botorch.optim import optimize_acqf
from botorch.optim.initializers import initialize_q_batch
from botorch.utils.sampling import get_polytope_samples
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from numpy.typing import ArrayLike
from scipy.stats import spearmanr
from torch import Tensor

from strategies import simplex

logger = logging.getLogger(__name__)

DTYPE = torch.float64


def as_tensor(x: ArrayLike) -> Tensor:
    return torch.as_tensor(np.asarray(x, dtype=float), dtype=DTYPE)


def simplex_equality(k: int) -> list[tuple[Tensor, Tensor, float]]:
    """``sum(x[:k]) = 1`` in ``optimize_acqf``'s ``(indices, coefficients, rhs)`` form."""
    return [(torch.arange(k), torch.ones(k, dtype=DTYPE), 1.0)]


def box(lo: np.ndarray, hi: np.ndarray, extra: int = 0) -> Tensor:
    """``2 x (k + extra)`` bounds: the weight box, then ``[0, 1]`` for each extra column."""
    lower = np.concatenate([lo, np.zeros(extra)])
    upper = np.concatenate([hi, np.ones(extra)])
    return as_tensor(np.stack([lower, upper]))


def fit(model: GPyTorchModel, maxiter: int = 150) -> None:
    """Fit hyperparameters by marginal likelihood; on failure keep the prior-initialised ones.

    ``maxiter`` caps L-BFGS: left alone it polishes for hundreds of steps (seconds at ~200 points) for
    hyperparameters that no longer change the posterior in any way that matters.
    A failed fit (BoTorch already retried from random starts) leaves a usable, if vaguer, model; a
    proposal from it beats no proposal, so the strategy goes on and says so in the log.
    """
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    try:
        fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": maxiter}})
    except ModelFittingError as e:
        logger.warning("GP hyperparameter fit failed (%s); using the initial hyperparameters", e)
    model.eval()


def feasible_rows(x: Tensor, k: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Weights from optimiser output, projected so rounding error never breaks a bound: ``(n, k)``."""
    return simplex.project(x[..., :k].reshape(-1, k).detach().cpu().numpy(), lo, hi)


def maximise_mean(
    model: GPyTorchModel,
    lo: np.ndarray,
    hi: np.ndarray,
    fixed: dict[int, float] | None = None,
    num_restarts: int = 8,
    raw_samples: int = 512,
    seed: int = 0,
) -> np.ndarray:
    """Local maxima of the posterior mean over the capped simplex, one per restart: ``(num_restarts, k)``.

    ``fixed`` pins extra columns (e.g. ``{k: 1.0}``, the target fidelity); the model must take
    ``k + len(fixed)`` inputs.
    """
    k = len(lo)
    fixed = fixed or {}
    acq = PosteriorMean(model)
    x, _ = optimize_acqf(
        acq,
        bounds=box(lo, hi, extra=len(fixed)),
        q=1,
        num_restarts=num_restarts,
        batch_initial_conditions=restart_points(
            acq, start_pool(lo, hi, fixed, raw_samples // 2, seed), num_restarts, seed
        ),
        equality_constraints=simplex_equality(k),
        fixed_features=fixed or None,
        options={"maxiter": 200},
        return_best_only=False,
    )
    return feasible_rows(x, k, lo, hi)


def start_pool(lo: np.ndarray, hi: np.ndarray, fixed: dict[int, float], n: int, seed: int) -> Tensor:
    """Points to start local searches from, ``(2 n, 1, k + len(fixed))``, all on the capped simplex.

    Half are BoTorch's hit-and-run samples, uniform on the capped simplex (what ``optimize_acqf`` draws
    by itself, but ~1 s per draw at 17 domains in a profile, so a strategy call draws once and each search
    reuses them). Half are flat-Dirichlet draws, projected onto the caps where they break one: under
    tight epoch caps that is nearly all of them (on the RegMix space 0.3 % of flat draws fit the
    caps), so they sit on the faces where small domains are at their cap, which uniform draws rarely reach.
    """
    k = len(lo)
    uniform = get_polytope_samples(n, box(lo, hi), equality_constraints=simplex_equality(k), seed=seed)
    faces = simplex.dirichlet(np.random.default_rng(seed), np.ones(k), [float(k)], n, lo, hi)
    weights = np.concatenate([uniform.cpu().numpy(), faces])
    return with_columns(simplex.project(weights, lo, hi), fixed).unsqueeze(1)


def restart_points(acq: AcquisitionFunction, pool: Tensor, num_restarts: int, seed: int) -> Tensor:
    """``num_restarts`` of ``pool`` ``(n, 1, d)``, picked by BoTorch's Boltzmann rule on ``acq``: mostly
    the best-scoring points, with some spread."""
    with torch.no_grad():
        values = acq(pool)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        chosen, _ = initialize_q_batch(pool, values, num_restarts)
    return chosen


def with_columns(w: np.ndarray, fixed: dict[int, float]) -> Tensor:
    """Append the ``fixed`` columns (in index order) to weights ``(n, k)`` → ``(n, k + len(fixed))``."""
    w = np.atleast_2d(w)
    extra = [np.full((len(w), 1), fixed[i]) for i in sorted(fixed)]
    return as_tensor(np.concatenate([w, *extra], axis=1))


def mean_and_std(model: GPyTorchModel, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and latent std (no observation noise) at ``x`` ``(n, d)``: two ``(n,)`` arrays."""
    with torch.no_grad():
        post = model.posterior(x)
    mean = post.mean.squeeze(-1).cpu().numpy()  # type: ignore[attr-defined]
    std = post.variance.clamp_min(0).sqrt().squeeze(-1).cpu().numpy()  # type: ignore[attr-defined]
    return mean, std


def ranked_by_loss(
    model: GPyTorchModel,
    pool: np.ndarray,
    fixed: dict[int, float],
    n: int,
    pessimism: float = 0.0,
    extra_std: Callable[[Tensor], np.ndarray] | None = None,
) -> list[tuple[np.ndarray, float, float]]:
    """The ``n`` distinct mixtures of ``pool`` with the lowest predicted loss + ``pessimism`` x std,
    as ``(w, loss, std)``; ``extra_std`` (inputs → ``(n,)``, loss units), where given, is uncertainty
    the posterior leaves out (a hyperparameter's), added to the posterior's std in quadrature.

    The model is one fit on *negated* loss (BoTorch maximises), so loss = -mean.
    """
    pool = simplex.dedupe(pool, decimals=3)
    x = with_columns(pool, fixed)
    mean, std = mean_and_std(model, x)
    spread = np.hypot(std, extra_std(x)) if extra_std is not None else std
    order = np.argsort(pessimism * spread - mean, kind="stable")[:n]
    return [(pool[i], float(-mean[i]), float(spread[i])) for i in order]


def noise_std(model: GPyTorchModel, x: Tensor) -> float:
    """Fitted observation-noise std at input ``x`` ``(1, d)``, in the data's own units (undoing
    ``Standardize``); the input matters for noise models such as ``HeteroskedasticNoise``."""
    likelihood: GaussianLikelihood = model.likelihood  # type: ignore[assignment]
    with torch.no_grad():
        noise = float(likelihood.noise_covar(x).diagonal().mean().sqrt())
    return noise * outcome_scale(model)


def outcome_scale(model: GPyTorchModel) -> float:
    """The std ``Standardize`` divided the training outcomes by (1 without one): model units → data units."""
    transform = getattr(model, "outcome_transform", None)
    return float(transform.stdvs.squeeze()) if transform is not None else 1.0


@dataclass(frozen=True)
class LeaveOneOut:
    """Each run on some rows predicted from all the others, hyperparameters fixed (BoTorch's closed-form
    LOO, so slightly optimistic): in the data's units, run noise in the std."""

    predicted: np.ndarray
    std: np.ndarray
    observed: np.ndarray

    def z(self) -> np.ndarray:
        """Residuals in units of their predicted std: of mean square 1 for a model that knows its own
        error, more for a truth rougher than the kernel assumes."""
        return (self.observed - self.predicted) / np.maximum(self.std, 1e-9)

    def spearman(self) -> float | None:
        """Spearman correlation of predictions with observations (the CV score the RegMix paper
        reports), or None with fewer than 4 rows or no spread."""
        if len(self.observed) < 4 or np.ptp(self.observed) == 0 or np.ptp(self.predicted) == 0:
            return None
        return float(spearmanr(self.predicted, self.observed).statistic)


def leave_one_out(model: GPyTorchModel, rows: list[int]) -> LeaveOneOut:
    """Leave-one-out predictions of the training runs ``rows`` (all rows are left in for the others)."""
    if not rows:
        return LeaveOneOut(np.zeros(0), np.zeros(0), np.zeros(0))
    cv = loo_cv(model)
    posterior = cv.posterior
    mean = posterior.mean.reshape(-1).detach().cpu().numpy()  # type: ignore[attr-defined]
    var = posterior.variance.reshape(-1).detach().cpu().numpy()  # type: ignore[attr-defined]
    observed = cv.observed_Y.reshape(-1).detach().cpu().numpy()
    return LeaveOneOut(mean[rows], np.sqrt(np.maximum(var[rows], 0.0)), observed[rows])
