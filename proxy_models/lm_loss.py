"""Output head and cross-entropy fused into one autograd function, to save memory traffic on CPU.

With a 4k vocabulary the logits of a batch are the largest tensor of the whole step (B·T × V), and
the eager path walks over them about ten times: upcast, log-softmax, its saved output, a zero-filled
gradient, the scatter, log-softmax backward, and a downcast. Here the forward runs, per chunk of rows,
one softmax kernel in the matmul dtype (it computes in fp32 inside), reads the loss off the target
probabilities, and turns the softmax in place into ``softmax − onehot``, the gradient with respect to
the logits, which is all backward needs. Backward never touches the (B·T × V) tensor elementwise: the
incoming per-token gradient scales the thin side of each matmul instead. Loss and gradients match
``F.cross_entropy`` on the same logits up to rounding in the matmul dtype; evaluation (no gradient)
takes a plain log-sum-exp path.
"""

from __future__ import annotations

from typing import Any

import torch

CHUNK_ROWS = 2048  # rows of logits at a time (measured: 1.3× faster than all rows at once on CPU)
TINY = 1e-30  # floor for a target probability that underflowed (loss capped near 69)


def _matmul_dtype(device_type: str) -> torch.dtype | None:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype | None
    ) -> torch.Tensor:
        hm = h if dtype is None else h.to(dtype)  # (N, C)
        wm = weight if dtype is None else weight.to(dtype)  # (V, C)
        losses, grads = [], []
        for start in range(0, hm.shape[0], CHUNK_ROWS):
            tgt = targets[start : start + CHUNK_ROWS]  # (n,)
            probs = torch.softmax(hm[start : start + CHUNK_ROWS] @ wm.t(), dim=1)  # (n, V), fp32 inside
            picked = torch.arange(len(tgt), device=tgt.device) * probs.shape[1] + tgt  # (n,) flat indices
            flat = probs.view(-1)  # (scatter_add_ would round-trip a bf16 tensor through fp32)
            target_probs = flat[picked]  # (n,)
            losses.append(-target_probs.float().clamp_min(TINY).log())
            flat[picked] = target_probs - 1  # probs becomes dL/dlogits = softmax - onehot
            grads.append(probs)
        ctx.save_for_backward(hm, wm, *grads)
        ctx.input_dtypes = (h.dtype, weight.dtype)
        return torch.cat(losses)  # (N,)

    @staticmethod
    def backward(ctx: Any, grad_losses: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        hm, wm, *grads = ctx.saved_tensors
        # Row scaling commutes with the matmuls, so it goes on the thin (n, C) side, not on (n, V).
        scale = grad_losses.to(hm.dtype)[:, None]  # (N, 1)
        grad_h = torch.empty(hm.shape, dtype=ctx.input_dtypes[0], device=hm.device)  # (N, C)
        grad_w = torch.zeros(wm.shape, dtype=torch.float32, device=hm.device)  # (V, C)
        for i, g in enumerate(grads):
            rows = slice(i * CHUNK_ROWS, i * CHUNK_ROWS + g.shape[0])
            grad_h[rows] = (g @ wm) * scale[rows]  # (n, C)
            grad_w += g.t() @ (hm[rows] * scale[rows])  # (V, C)
        return grad_h, grad_w.to(ctx.input_dtypes[1]), None, None


def _losses_only(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype | None
) -> torch.Tensor:
    """The forward without the gradient bookkeeping (evaluation)."""
    hm = h if dtype is None else h.to(dtype)  # (N, C)
    wm = weight if dtype is None else weight.to(dtype)  # (V, C)
    losses = []
    for start in range(0, hm.shape[0], CHUNK_ROWS):
        logits = (hm[start : start + CHUNK_ROWS] @ wm.t()).float()  # (n, V)
        tgt = targets[start : start + CHUNK_ROWS, None]  # (n, 1)
        losses.append(torch.logsumexp(logits, dim=1) - logits.gather(1, tgt).squeeze(1))
    return torch.cat(losses)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token loss ``(N,)`` of logits ``h @ weight.T`` for ``targets``; honours an active autocast."""
    dtype = _matmul_dtype(h.device.type)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return LinearCrossEntropy.apply(h, weight, targets, dtype)
    return _losses_only(h, weight, targets, dtype)
