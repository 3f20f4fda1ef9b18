"""The surrogate of ``admire``: a multi-fidelity GP over (mixture, fidelity) and how well it fits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from botorch.models import SingleTaskGP
from botorch.models.kernels import LinearTruncatedFidelityKernel
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import (
    MIN_INFERRED_NOISE_LEVEL,
    get_covar_module_with_dim_scaled_prior,
)
from gpytorch import Module
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import ScaleKernel
from gpytorch.likelihoods import _GaussianLikelihoodBase
from gpytorch.likelihoods.noise_models import HeteroskedasticNoise
from gpytorch.means import Mean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, NormalPrior
from linear_operator.operators import DiagLinearOperator

from strategies import botorch_utils as bt
from strategies import simplex
from strategies.base import Observation, SearchSpace
from strategies.mf_design import fidelity_coordinates

LOO_PRIOR_RUNS = 1.0  # pseudo-runs at z = 1 in ``loo_calibration``: one target run says little
AMPLITUDE_PRIOR_SD = 1.0  # of the target's log amplitude (``AmplitudeFidelityKernel``): a factor e per sd


def fit_model(
    space: SearchSpace, obs: Sequence[Observation], coords: dict[str, float], max_fit: int
) -> SingleTaskGP:
    """MF-GP on ``[w, s] -> -loss`` (BoTorch maximises): a mean level per fidelity, BoTorch's
    linear-truncated fidelity kernel with a bias term scaled on its own and the target's amplitude fitted
    once target runs at two mixtures exist, noise that depends on the fidelity.

    Hyperparameters are fitted on at most ``max_fit`` runs (every target-fidelity run first, the rest
    spread evenly over the others), then the posterior conditions on all runs: each marginal-likelihood
    step costs O(n^3) and a fit takes a hundred of them, the conditioning only one.
    """
    x = bt.as_tensor([[*o.weights, coords[o.fidelity]] for o in obs])  # (n, k + 1)
    y = bt.as_tensor([[-o.target_loss] for o in obs])  # (n, 1)
    levels = sorted(set(coords.values()))
    target_mixtures = {o.weights for o in obs if o.fidelity == space.target_fidelity.name}
    learn_amplitude = len(target_mixtures) >= 2  # one target run says nothing of the target's amplitude

    def build(rows: np.ndarray) -> SingleTaskGP:
        return SingleTaskGP(
            x[rows],
            y[rows],
            likelihood=fidelity_noise_likelihood(space.k, x[rows]),
            covar_module=fidelity_kernel(space.k, learn_amplitude),
            mean_module=FidelityLevels(space.k, levels),
            outcome_transform=Standardize(m=1),
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


def level_variance(model: SingleTaskGP, x: torch.Tensor, rows: Sequence[int]) -> float:
    """Variance the target fidelity's fitted mean level adds to the prediction at ``x`` ``(1, d)``, in
    squared loss units; ``rows`` are the target-fidelity runs.

    ``FidelityLevels`` holds each level at its marginal-likelihood point estimate, so the posterior
    std alone treats the target's level as known; with two or three target runs it is not. Universal
    kriging's correction counts its estimation error: (1 - k*' K^-1 u)^2 / (u' K^-1 u), with u the
    target rows' indicator, k* the covariances of ``x`` with the runs and K theirs, noise included.
    It is small near many target runs and infinite with none (nothing says where the target's level is).
    """
    if not rows:
        return float("inf")
    train = model.train_inputs[0]
    with torch.no_grad():
        cov = model.covar_module(train).to_dense()
        cov = cov + torch.diag(model.likelihood.noise_covar(train).diagonal())
        chol, info = torch.linalg.cholesky_ex(cov + 1e-8 * torch.eye(len(train), dtype=cov.dtype))
        if int(info) != 0:
            return float("inf")
        u = torch.zeros(len(train), 1, dtype=cov.dtype)
        u[list(rows)] = 1.0
        k_star = model.covar_module(train, x).to_dense()
        solved = torch.cholesky_solve(torch.cat([u, k_star], dim=1), chol)
        precision = float(u[:, 0] @ solved[:, 0])
        gap = 1.0 - float(k_star[:, 0] @ solved[:, 0])
    return gap**2 / max(precision, 1e-12) * bt.outcome_scale(model) ** 2


def amplitude_std(model: SingleTaskGP, x: torch.Tensor) -> np.ndarray:
    """Std the target amplitude's uncertainty adds to the prediction at each row of ``x`` ``(n, d)``, in
    loss units: ``(n,)``.

    The fit keeps one value of ``log_amplitude``; how far a mixture beats the target runs scales with
    it, so the std grows with the predicted gain. Its posterior std is the Laplace one (curvature of the
    log marginal likelihood with its prior) once it is fitted, the prior's before (fewer than two target
    mixtures). Half the spread of the posterior mean between minus and plus one std is the std it adds.
    """
    kernel = _amplitude_kernel(model)
    fitted = kernel.log_amplitude.detach().clone()
    learned = isinstance(kernel.log_amplitude, torch.nn.Parameter)
    sd = _laplace_std(model, kernel, fitted) if learned else AMPLITUDE_PRIOR_SD
    means = []
    try:
        for shift in (-sd, sd):
            _set_amplitude(model, kernel, fitted + shift)
            means.append(bt.mean_and_std(model, x)[0])
    finally:
        _set_amplitude(model, kernel, fitted)
    return np.abs(means[1] - means[0]) / 2  # the posterior is in the data's units already


def _amplitude_kernel(model: SingleTaskGP) -> AmplitudeFidelityKernel:
    """The ``AmplitudeFidelityKernel`` inside ``fidelity_kernel``'s scale kernel."""
    return model.covar_module.base_kernel  # type: ignore[union-attr,return-value]


def _set_amplitude(model: SingleTaskGP, kernel: AmplitudeFidelityKernel, value: torch.Tensor) -> None:
    with torch.no_grad():
        kernel.log_amplitude.copy_(value)
    # The cached posterior was built with the old value.
    model.prediction_strategy = None  # type: ignore[assignment]


def _laplace_std(model: SingleTaskGP, kernel: AmplitudeFidelityKernel, fitted: torch.Tensor) -> float:
    """Posterior std of ``log_amplitude`` by the curvature of the log posterior (marginal likelihood
    and priors) at the fitted value, by central differences, the other hyperparameters held where the
    fit left them (so it errs narrow); the prior's where that is no sharper than the prior."""
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    inputs, n, step = model.train_inputs, len(model.train_targets), 0.05
    values = []
    try:
        model.train()
        for shift in (-step, 0.0, step):
            _set_amplitude(model, kernel, fitted + shift)
            with torch.no_grad():
                values.append(float(mll(model(*inputs), model.train_targets, *inputs)) * n)
    finally:
        model.eval()
        _set_amplitude(model, kernel, fitted)
    curvature = -(values[0] - 2 * values[1] + values[2]) / step**2
    prior_precision = 1 / AMPLITUDE_PRIOR_SD**2
    return float(curvature**-0.5) if curvature >= prior_precision else AMPLITUDE_PRIOR_SD


def fidelity_kernel(k: int, learn_amplitude: bool = True) -> ScaleKernel:
    """BoTorch's linear-truncated fidelity kernel ``k0(w) + c(s, s') k1(w)``, built from the kernels of
    BoTorch's single-fidelity default, with a scale of its own on the bias term ``k1`` and a fitted
    amplitude per fidelity on ``k0`` (``AmplitudeFidelityKernel``; fixed at 1 unless ``learn_amplitude``).

    ``SingleTaskMultiFidelityGP`` gives ``k0`` and ``k1`` Matern kernels with short-lengthscale priors
    (means 0.5 and 3) and one scale over both. On the tuning simulator
    (``bench/search_efficiency.py --split tune``) that predicted held-out target runs worse than RBF
    kernels with ``SingleTaskGP``'s dimension-scaled lengthscale prior (Hvarfner et al. 2024). The
    bias's own scale (prior centred on the 1 BoTorch fixes) lets the data say how far cheap proxies
    stray from the target; it sets the correlation ``fidelity_correlations`` reports. There, the
    bias scale and ``FidelityLevels`` bought lower regret at small budgets, and at 32 runs' cost the
    plain kernel did as well, within the seed spread.
    """
    biased = ScaleKernel(get_covar_module_with_dim_scaled_prior(k), outputscale_prior=GammaPrior(2.0, 2.0))
    kernel = AmplitudeFidelityKernel(
        learn_amplitude=learn_amplitude,
        fidelity_dims=[k],
        dimension=k + 1,
        power_prior=GammaPrior(3.0, 3.0),
        covar_module_unbiased=get_covar_module_with_dim_scaled_prior(k),
        covar_module_biased=biased,
    )
    return ScaleKernel(kernel, outputscale_prior=GammaPrior(2.0, 0.15))


class AmplitudeFidelityKernel(LinearTruncatedFidelityKernel):
    """BoTorch's linear-truncated fidelity kernel with the shared term scaled per fidelity:
    ``a(s) a(s') k0(w, w') + c(s, s') k1(w, w')``, ``a(s) = exp(log_amplitude * s)``.

    In BoTorch's kernel the target (``s = 1``) is the shared term alone and every cheaper fidelity adds a
    bias term to it, so the target can never vary with the mixture more than the cheapest proxy does.
    Larger models can: on our own two-fidelity runs (``bench/data/two_fidelity_runs.csv``, GP fits) the
    target's loss varies 1.6 times as much over RegMix-style mixtures as the small proxies' (``python
    bench/truths.py``), and a proxy that tells good mixtures apart less well than bad ones (the held-out
    truths' convex warp) makes the target vary more where the search ends up. A model that cannot learn
    that transfers a fraction of every difference the cheap runs show and is confidently wrong about how
    much better the recommendation is than the target runs. ``log_amplitude`` is the log ratio of the
    target's to the cheapest fidelity's amplitude in the shared term, fitted with the other
    hyperparameters under a vague ``N(0, AMPLITUDE_PRIOR_SD)`` prior (a factor e either way per standard
    deviation; 0 is BoTorch's kernel). It takes two target runs at different mixtures to say anything
    about it (one run only fixes the target's level, and the likelihood of a lone run shrinks every
    variance it touches), so with ``learn_amplitude=False`` it stays 0, a buffer. One fidelity column.
    """

    def __init__(self, *args: object, learn_amplitude: bool = True, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        zero = torch.zeros(1, dtype=torch.float64)
        if learn_amplitude:
            self.register_parameter("log_amplitude", torch.nn.Parameter(zero))
            self.register_prior("log_amplitude_prior", NormalPrior(0.0, AMPLITUDE_PRIOR_SD), "log_amplitude")
        else:
            self.register_buffer("log_amplitude", zero)

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params: object
    ) -> torch.Tensor:
        column = self.fidelity_dims[0]
        keep = [i for i in range(x1.size(-1)) if i != column]
        w1, w2 = x1[..., keep], x2[..., keep]
        shared = self.covar_module_unbiased(w1, w2, diag=diag)
        bias = self.covar_module_biased(w1, w2, diag=diag)
        s1 = x1[..., column : column + 1].clamp(0, 1)
        s2 = x2[..., column : column + 1].clamp(0, 1)
        s2 = s2 if diag else s2.transpose(-1, -2)
        amplitude = torch.exp(self.log_amplitude * (s1 + s2))
        truncated = (1 - s1) * (1 - s2) * (1 + s1 * s2).pow(self.power)
        if diag:
            amplitude, truncated = amplitude.view(shared.shape), truncated.view(bias.shape)
        return amplitude * shared + truncated * bias


class FidelityLevels(Mean):
    """A constant mean per fidelity: small proxies read higher everywhere (a scaling-law offset), so
    the kernel's bias term is left to model how the bias *varies* with the mixture.

    Fidelities are discrete (the optimisers hold ``s`` at a fidelity's coordinate), so each input
    takes the level of the nearest coordinate in ``levels``.
    """

    def __init__(self, column: int, levels: Sequence[float]) -> None:
        super().__init__()
        self.column = column
        self.register_buffer("levels", torch.tensor(list(levels), dtype=torch.float64))
        self.constants = torch.nn.Parameter(torch.zeros(len(levels), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nearest = (x[..., self.column, None] - self.levels).abs().argmin(dim=-1)
        return self.constants[nearest]


class LogLinearNoise(Module):
    """Log noise variance linear in the fidelity coordinate: ``log(noise - floor) = a + b s``, with
    BoTorch's floor for inferred noise (1e-4).

    One noise level for all runs lets the many cheap, noisy runs set it: on the tuning simulator the
    fitted level came out near the cheapest fidelity's, about twice the target runs' scatter, so the
    posterior smoothed the target runs away and its argmax landed where cheap runs pointed. ``a`` has
    BoTorch's default noise prior; ``b ~ N(0, 1)`` lets the levels differ by an e-fold across the
    fidelities without a strong case. A ``HeteroskedasticNoise`` model, so GPyTorch evaluates it at
    each input; called with none (BoTorch's closed-form LOO does that) it gives the training inputs'
    noise.
    """

    def __init__(self, column: int, train_x: torch.Tensor) -> None:
        super().__init__()
        self.column, self.train_x = column, train_x
        # Starts where BoTorch starts its homoskedastic noise: at its prior's mode, exp(-5).
        self.offset = torch.nn.Parameter(torch.tensor(-5.0, dtype=torch.float64))
        self.slope = torch.nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
        self.register_prior("offset_prior", NormalPrior(-4.0, 1.0), "offset")
        self.register_prior("slope_prior", NormalPrior(0.0, 1.0), "slope")

    def forward(self, x: torch.Tensor | None = None) -> MultivariateNormal:
        x = self.train_x if x is None else x
        log_noise = self.offset + self.slope * x[..., self.column]
        return MultivariateNormal(log_noise, DiagLinearOperator(torch.full_like(log_noise, 1e-8)))


def fidelity_noise_likelihood(column: int, train_x: torch.Tensor) -> _GaussianLikelihoodBase:
    """Gaussian likelihood whose noise follows ``LogLinearNoise`` in input ``column``."""
    positive = GreaterThan(MIN_INFERRED_NOISE_LEVEL, transform=torch.exp, inv_transform=torch.log)
    return _GaussianLikelihoodBase(
        noise_covar=HeteroskedasticNoise(LogLinearNoise(column, train_x), noise_constraint=positive)
    )


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


def fidelity_correlations(
    model: SingleTaskGP, space: SearchSpace, coords: dict[str, float], obs: Sequence[Observation]
) -> dict[str, float]:
    """Each cheaper fidelity's correlation with the target, as the fitted kernel says: the latent
    loss at ``(w, s)`` against that at ``(w, 1)``, averaged over (up to 64 of) the observed mixtures.

    The bias term's scale, fitted by marginal likelihood, sets it: near 1 the cheap runs stand in for
    target runs, near 0 they say little about the target, whatever their own fit.
    """
    observed = np.array([o.weights for o in obs], dtype=float).reshape(-1, space.k)
    w = observed[np.linspace(0, len(observed) - 1, min(64, len(observed))).astype(int)]
    at_target = bt.with_columns(w, {space.k: 1.0})
    out: dict[str, float] = {}
    with torch.no_grad():
        var_target = model.covar_module(at_target, at_target, diag=True)
        for name, s in coords.items():
            if name == space.target_fidelity.name or s == 1.0:
                continue
            cheap = bt.with_columns(w, {space.k: s})
            cross = model.covar_module(cheap, at_target, diag=True)
            var_cheap = model.covar_module(cheap, cheap, diag=True)
            out[name] = float((cross / (var_cheap * var_target).sqrt()).mean())
    return out


def target_amplitude(model: SingleTaskGP) -> float:
    """How many times as much the target's loss varies with the mixture as the cheapest fidelity's does,
    in the kernel's shared term (``AmplitudeFidelityKernel``)."""
    return float(torch.exp(_amplitude_kernel(model).log_amplitude.detach()).squeeze())


def diagnostics(
    model: SingleTaskGP,
    space: SearchSpace,
    obs: Sequence[Observation],
    n_history: int,
    max_fit: int,
) -> dict[str, float]:
    """Counts (``n_fit``: runs the hyperparameters were fitted on), the fitted noise std and mean
    offset from the target (``offset_<name>``, in loss units: the predicted loss there less the
    target's, averaged over the observed mixtures; with a fitted target amplitude the mean levels
    alone no longer say it) at each fidelity, and how well
    leave-one-out predictions rank the target-fidelity runs (``cv_spearman``) and how far they miss in
    units of their std (``std_calibration``, ``loo_calibration``)."""
    target = [i for i, o in enumerate(obs) if o.fidelity == space.target_fidelity.name]
    out = {
        "n_observations": float(len(obs)),
        "n_target": float(len(target)),
        "n_dropped": float(n_history - len(obs)),
        "n_fit": float(min(len(obs), max_fit)),
    }
    centre = np.full((1, space.k), 1.0 / space.k)
    observed = simplex.dedupe(np.array([o.weights for o in obs]))
    at_target, _ = bt.mean_and_std(model, bt.with_columns(observed, {space.k: 1.0}))  # -loss
    coords = fidelity_coordinates(space)
    for f, s in coords.items():
        out[f"noise_std_{f}"] = bt.noise_std(model, bt.with_columns(centre, {space.k: s}))
        here, _ = bt.mean_and_std(model, bt.with_columns(observed, {space.k: s}))
        out[f"offset_{f}"] = float(np.mean(at_target - here))
    for f, rho in fidelity_correlations(model, space, coords, obs).items():
        out[f"fidelity_corr_{f}"] = rho
    out["target_amplitude"] = target_amplitude(model)
    loo = bt.leave_one_out(model, target)
    spearman = loo.spearman()
    if spearman is not None:
        out["cv_spearman"] = spearman
    if target:
        out["std_calibration"] = loo_calibration(loo.z())
    return out


def loo_calibration(z: np.ndarray) -> float:
    """How much wider than the model's own std its errors at the target runs were: the root mean square
    of their leave-one-out z, with ``LOO_PRIOR_RUNS`` pseudo-runs at z = 1 (a model that knows its
    error). The truth may be rougher than the kernel, or the cheap runs may mislead it about the target;
    either shows up as target runs the rest of the history predicted worse than the std said. Never
    below 1: a few lucky z are no evidence that the std is too wide."""
    return max(1.0, float(np.sqrt((LOO_PRIOR_RUNS + np.sum(z**2)) / (LOO_PRIOR_RUNS + len(z)))))
