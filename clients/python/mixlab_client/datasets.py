"""Turn recommended weights into a data pipeline: Hugging Face ``datasets`` or a torch sampler.

Neither library is a dependency of mixlab-client: each helper imports its library when called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def interleave_probabilities(weights: Mapping[str, float], order: Sequence[str]) -> list[float]:
    """``probabilities=`` for ``datasets.interleave_datasets`` over datasets in ``order``."""
    probs = [float(weights.get(name, 0.0)) for name in order]
    total = sum(probs)
    if total <= 0:
        raise ValueError("the weights give no mass to any of these datasets")
    return [p / total for p in probs]


def interleave_datasets(
    datasets: Mapping[str, Any], weights: Mapping[str, float], seed: int = 0, **kw: Any
) -> Any:
    """``datasets.interleave_datasets`` over the named datasets, sampled by the recommended ``weights``
    (domains missing from ``weights`` get none); ``kw`` goes through (e.g. ``stopping_strategy``)."""
    from datasets import interleave_datasets as interleave

    order = list(datasets)
    return interleave(
        [datasets[name] for name in order],
        probabilities=interleave_probabilities(weights, order),
        seed=seed,
        **kw,
    )


def mixture_sampler(
    weights: Mapping[str, float], sizes: Mapping[str, int], num_samples: int, seed: int = 0
) -> Any:
    """A torch sampler over ``ConcatDataset`` (datasets in ``sizes`` order) drawing domains by weight."""
    import torch
    from torch.utils.data import WeightedRandomSampler

    per_item = []
    for name, size in sizes.items():
        if size <= 0:
            raise ValueError(f"dataset {name!r} is empty")
        per_item.append(torch.full((size,), float(weights.get(name, 0.0)) / size, dtype=torch.double))
    gen = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        torch.cat(per_item),  # type: ignore[arg-type]  # torch annotates Sequence[float]; it takes a tensor
        num_samples=num_samples,
        replacement=True,
        generator=gen,
    )
