"""A plain PyTorch training loop driven by a mixlab server over HTTP.

1. ask → train → tell: mixlab proposes mixtures, this script trains a small byte-level model on each and
   reports per-domain validation losses; at the end it reads the recommended mixture.
2. An online session: one training run whose mixture mixlab re-weights every few steps.

    python examples/train_with_mixlab.py --url http://127.0.0.1:8000 --key mlx_...
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from mixlab_client import ApiError, Client, mixture_sampler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from proxy_models.corpora import documents, take

DOMAINS = ("sports", "politics", "code")
SEQ, BATCH = 64, 32


def windows(domain: str, chars: int) -> torch.Tensor:
    """Byte windows of one bundled domain: (n, SEQ + 1) int64."""
    data = "\n".join(take(documents(domain), max_chars=chars)).encode()
    t = torch.tensor(list(data), dtype=torch.long)
    n = len(t) // (SEQ + 1)
    return t[: n * (SEQ + 1)].view(n, SEQ + 1)


class ByteLM(nn.Module):
    """A small byte-level language model: embedding → GRU → logits."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(256, width)
        self.rnn = nn.GRU(width, width, batch_first=True)
        self.out = nn.Linear(width, 256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.emb(x))
        return self.out(h)  # (B, T, 256)


def loss_of(model: nn.Module, w: torch.Tensor) -> torch.Tensor:
    logits = model(w[:, :-1])
    return nn.functional.cross_entropy(logits.reshape(-1, 256), w[:, 1:].reshape(-1))


def train(
    weights: dict[str, float],
    train_sets: dict[str, torch.Tensor],
    val_sets: dict[str, torch.Tensor],
    steps: int,
    seed: int,
    reweight: Callable[[int, dict[str, float]], dict[str, float]] | None = None,
    every: int = 10,
) -> dict[str, float]:
    """Train on a mixture (optionally re-weighted every ``every`` steps); per-domain validation losses."""
    torch.manual_seed(seed)
    model = ByteLM()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    names = list(train_sets)
    data = torch.cat([train_sets[n] for n in names])
    sizes = {n: len(train_sets[n]) for n in names}
    step = 0
    while step < steps:
        sampler = mixture_sampler(weights, sizes, num_samples=every * BATCH, seed=seed + step)
        for (x,) in DataLoader(TensorDataset(data), batch_size=BATCH, sampler=sampler):
            loss = loss_of(model, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
        if reweight is not None and step < steps:
            with torch.no_grad():
                recent = {n: float(loss_of(model, val_sets[n][:BATCH])) for n in names}
            weights = reweight(step, recent)
    with torch.no_grad():
        return {n: float(loss_of(model, v)) for n, v in val_sets.items()}


def main(url: str, key: str, budget: int = 4, steps: int = 40, chars: int = 60_000) -> dict[str, float]:
    sets = {d: windows(d, chars) for d in DOMAINS}
    train_sets = {d: w[: int(len(w) * 0.9)] for d, w in sets.items()}
    val_sets = {d: w[int(len(w) * 0.9) :] for d, w in sets.items()}
    with Client(url, key) as mx:
        exp = mx.create_experiment(
            name="pytorch loop (example)",
            executor="external",
            strategy="random",
            domains=[{"name": d, "tokens": train_sets[d].numel()} for d in DOMAINS],
            target={"sports": 0.5, "politics": 0.5},
            fidelities=[{"name": "byte-gru", "tokens": steps * BATCH * SEQ, "cost": 1.0}],
            budget=budget,
            parallelism=1,
        )
        exp.start()
        while True:
            try:
                trial = exp.ask()
            except ApiError as e:
                if e.code == "budget_spent":
                    break
                raise
            losses = train(trial.weights, train_sets, val_sets, steps, trial.seed)
            exp.tell(trial, losses)
            print(f"run {trial.run_id}: weights {_fmt(trial.weights)} → losses {_fmt(losses)}")
        rec = exp.recommendation(wait=True)
        print(f"recommended {_fmt(rec['weights'])} (predicted target loss {rec['predicted_loss']:.4f})")

        session = exp.online_session("aioli")
        final = train(
            session.weights,
            train_sets,
            val_sets,
            steps,
            seed=0,
            reweight=lambda step, losses: session.update(step, losses),
        )
        print(f"online session {session.id}: final weights {_fmt(session.weights)}, losses {_fmt(final)}")
        return final


def _fmt(d: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:.3f}" for k, v in d.items()) + "}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="project API key (`mixlab project create NAME`)")
    parser.add_argument("--budget", type=int, default=4, help="mixtures to try")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per run")
    args = parser.parse_args()
    main(args.url, args.key, args.budget, args.steps)
