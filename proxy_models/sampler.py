"""Mixture sampling with epoch accounting.

Each domain's training tokens are cut into ``seq_len``-token windows that are visited in a seeded random
order, one full pass per epoch, then reshuffled: so "epochs used" is an exact count of tokens drawn, and a
domain that runs out simply repeats. Batch slots go to the domain furthest behind its share (a weighted
round robin), so a domain of weight 0.01 gets exactly 1 % of the sequences over time rather than a noisy
binomial share. A *static* mixture that would need more than ``max_epochs`` passes over a domain is
refused up front (``check_epochs``); online mixtures change weights as they go and only record epochs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from proxy_models.data import PreparedData


class EpochCapError(ValueError):
    """A mixture would repeat some domain more than ``max_epochs`` times at the run's token budget."""

    def __init__(self, message: str, epochs: Mapping[str, float]) -> None:
        super().__init__(message)
        self.epochs = dict(epochs)


def normalized_weights(domains: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """Weights in ``domains`` order, summing to 1; missing domains get 0, unknown ones are an error."""
    unknown = sorted(set(weights) - set(domains))
    if unknown:
        raise ValueError(f"weights name unknown domains {unknown}; known: {list(domains)}")
    w = np.asarray([float(weights.get(d, 0.0)) for d in domains], dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and non-negative, got {dict(weights)}")
    if w.sum() <= 0:
        raise ValueError("weights must not all be zero")
    return w / w.sum()


def epochs_needed(
    train_tokens: Mapping[str, int], weights: Mapping[str, float], budget: int
) -> dict[str, float]:
    """Passes over each domain that ``budget`` training tokens at these weights would take."""
    domains = tuple(train_tokens)
    w = normalized_weights(domains, weights)
    return {d: (wi * budget / train_tokens[d] if wi > 0 else 0.0) for d, wi in zip(domains, w, strict=True)}


def check_epochs(
    train_tokens: Mapping[str, int], weights: Mapping[str, float], budget: int, max_epochs: float
) -> dict[str, float]:
    """Epochs per domain; raises ``EpochCapError`` naming every domain that would exceed ``max_epochs``."""
    epochs = epochs_needed(train_tokens, weights, budget)
    over = {d: e for d, e in epochs.items() if e > max_epochs * (1 + 1e-9)}
    if over:
        w = normalized_weights(tuple(train_tokens), weights)
        parts = [
            f"{d!r} would be repeated {e:.2f} times (weight {w[list(train_tokens).index(d)]:.4g}, "
            f"{train_tokens[d]:,} tokens; at most {max_epochs * train_tokens[d] / budget:.4g} fits)"
            for d, e in over.items()
        ]
        raise EpochCapError(
            f"at {budget:,} training tokens {'; '.join(parts)}, but max_epochs is {max_epochs:g}: "
            "lower those weights, raise max_epochs, add data, or lower the token budget",
            epochs,
        )
    return epochs


class MixtureSampler:
    """Training batches ``(x, y, domain_ids)`` drawn by mixture weights, deterministic given ``seed``."""

    def __init__(
        self, data: PreparedData, weights: Mapping[str, float], *, batch_size: int, seq_len: int, seed: int
    ) -> None:
        self.domains = data.domains
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self._tokens = [data.tokens(d, "train") for d in self.domains]
        self._windows = [max(0, (len(t) - 1) // seq_len) for t in self._tokens]
        self.weights = normalized_weights(self.domains, weights)
        k = len(self.domains)
        self._credit = np.zeros(k)  # sequences owed to each domain
        self._epoch = np.zeros(k, dtype=np.int64)
        self._cursor = np.zeros(k, dtype=np.int64)
        self._order: dict[int, np.ndarray] = {}
        self.tokens_drawn = np.zeros(k, dtype=np.int64)
        self._side_rng = np.random.default_rng([seed, 1])

    def set_weights(self, weights: Mapping[str, float]) -> None:
        self.weights = normalized_weights(self.domains, weights)
        self._credit[:] = 0.0  # debts under the old weights do not carry over

    def weights_dict(self) -> dict[str, float]:
        return {d: float(w) for d, w in zip(self.domains, self.weights, strict=True)}

    def epochs(self) -> dict[str, float]:
        """Passes made over each domain's training tokens so far (fractional)."""
        return {
            d: float(self.tokens_drawn[i]) / max(1, len(self._tokens[i])) for i, d in enumerate(self.domains)
        }

    def _counts(self) -> np.ndarray:
        """Sequences per domain in the next batch: each slot goes to the domain furthest behind its share."""
        self._credit += self.weights * self.batch_size
        counts = np.zeros(len(self.domains), dtype=np.int64)
        for _ in range(self.batch_size):
            i = int(np.argmax(self._credit))
            counts[i] += 1
            self._credit[i] -= 1.0
        return counts

    def _order_of(self, i: int) -> np.ndarray:
        if i not in self._order:
            rng = np.random.default_rng([self.seed, i, int(self._epoch[i])])
            self._order[i] = rng.permutation(self._windows[i])
        return self._order[i]

    def _take(self, i: int, n: int) -> list[int]:
        if self._windows[i] == 0:
            raise ValueError(
                f"domain {self.domains[i]!r} has {len(self._tokens[i])} training tokens; "
                f"a sequence needs {self.seq_len + 1}"
            )
        starts: list[int] = []
        while len(starts) < n:
            order = self._order_of(i)
            got = order[self._cursor[i] : self._cursor[i] + n - len(starts)]
            starts.extend((got * self.seq_len).tolist())
            self._cursor[i] += len(got)
            if self._cursor[i] == len(order):  # epoch done: reshuffle and wrap around
                self._epoch[i] += 1
                self._cursor[i] = 0
                del self._order[i]
        self.tokens_drawn[i] += n * self.seq_len
        return starts

    def _windows_at(self, i: int, starts: Sequence[int]) -> np.ndarray:
        tokens = self._tokens[i]
        return np.stack([tokens[s : s + self.seq_len + 1] for s in starts]).astype(np.int64)  # (n, T+1)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``x (B, T)``, ``y (B, T)`` (x shifted by one), ``domain_ids (B,)``."""
        rows, ids = [], []
        for i, n in enumerate(self._counts()):
            if n:
                rows.append(self._windows_at(i, self._take(i, int(n))))
                ids.append(np.full(n, i, dtype=np.int64))
        seqs = np.concatenate(rows)  # (B, T+1)
        return seqs[:, :-1], seqs[:, 1:], np.concatenate(ids)

    def domain_batch(self, domain: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Random training windows of one domain, for online controllers; not counted as training tokens."""
        i = self.domains.index(domain)
        if self._windows[i] == 0:
            raise ValueError(f"domain {domain!r} has too few training tokens for one sequence")
        starts = self._side_rng.integers(0, self._windows[i], size=batch_size) * self.seq_len
        seqs = self._windows_at(i, starts.tolist())
        return seqs[:, :-1], seqs[:, 1:]

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights.tolist(),
            "credit": self._credit.tolist(),
            "epoch": self._epoch.tolist(),
            "cursor": self._cursor.tolist(),
            "tokens_drawn": self.tokens_drawn.tolist(),
            "side_rng": self._side_rng.bit_generator.state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self._credit = np.asarray(state["credit"], dtype=np.float64)
        self._epoch = np.asarray(state["epoch"], dtype=np.int64)
        self._cursor = np.asarray(state["cursor"], dtype=np.int64)
        self.tokens_drawn = np.asarray(state["tokens_drawn"], dtype=np.int64)
        self._side_rng.bit_generator.state = state["side_rng"]
        self._order.clear()


def eval_windows(tokens: np.ndarray, seq_len: int, max_tokens: int) -> np.ndarray:
    """Non-overlapping ``(n, seq_len + 1)`` windows from the start of a slice, ``n·seq_len ≤ max_tokens``.

    A slice shorter than one window is used whole as a single shorter window.
    """
    n = min((len(tokens) - 1) // seq_len, max(1, max_tokens // seq_len))
    if n == 0:
        return np.asarray(tokens[None, :], dtype=np.int64)
    return np.lib.stride_tricks.sliding_window_view(tokens[: n * seq_len + 1], seq_len + 1)[::seq_len].astype(
        np.int64
    )
