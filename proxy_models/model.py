"""A small GPT for proxy runs: pre-norm blocks, learned positions, tied embeddings, causal attention.

Kept deliberately plain (nanoGPT style) so that almost all time goes to a handful of large matmuls:
no dropout, no biases, fused QKV projection, exact GELU, and learned positions instead of RoPE (one
add instead of several elementwise kernels per layer, which matters on CPU). The output head and the
loss are fused (``lm_loss``). Attention is PyTorch's SDPA except on CPU in bf16, where two batched
matmuls are faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from proxy_models.lm_loss import linear_cross_entropy


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 4096
    seq_len: int = 256  # context length (block size)
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 256
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")

    @property
    def non_embedding_params(self) -> int:
        """Parameters in the transformer blocks (attention + MLP + norms), the usual 'model size'."""
        d = self.d_model
        per_layer = 4 * d * d + 2 * self.mlp_ratio * d * d + 2 * d
        return self.n_layer * per_layer + d  # + final norm

    @property
    def params(self) -> int:
        """All trainable parameters (tied token embedding counted once, learned positions included)."""
        return self.non_embedding_params + self.vocab_size * self.d_model + self.seq_len * self.d_model

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6 per matmul weight (tied head included) plus causal attention.

        Embedding lookups cost nothing, so position embeddings are left out; the token embedding is
        counted because it doubles as the output head. Scores (QKᵀ) and the weighted sum (AV) take
        4·T·d FLOPs per token per layer forward at full context; causal masking halves that and
        backward costs twice the forward: 6·T·d per layer in all (nanoGPT counts 12·L·T·d, unmasked).
        """
        matmul_params = self.non_embedding_params + self.vocab_size * self.d_model
        return 6.0 * matmul_params + 6.0 * self.n_layer * self.seq_len * self.d_model


def _causal_attention_bmm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention as two batched matmuls and a softmax.

    On CPU in bf16 this is 1.5× faster (forward + backward) than the fused SDPA kernel, whose
    backward is slow there; in fp32 and on GPUs the fused kernel wins, so it is used instead.
    """
    B, nh, T, hs = q.shape
    mask = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu_(1)  # (T, T)
    scores = torch.baddbmm(
        mask.expand(B * nh, T, T),
        q.reshape(B * nh, T, hs),
        k.reshape(B * nh, T, hs).transpose(1, 2),
        alpha=hs**-0.5,
    )  # (B·nh, T, T)
    return (torch.softmax(scores, dim=-1) @ v.reshape(B * nh, T, hs)).view(B, nh, T, hs)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 × (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            y = _causal_attention_bmm(q, k, v)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.down = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))  # (B, T, C); exact GELU: 2× faster than tanh in bf16 on CPU


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=False)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=False)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=False)
        self.apply(self._init_weights)
        # GPT-2 scaling: residual projections shrink with depth so the residual stream stays O(1).
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final normalised hidden states ``(B, T, C)`` for token ids ``idx`` ``(B, T)``."""
        _, T = idx.shape
        x = self.wte(idx) + self.wpe.weight[:T]  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab)``; the head is the tied token embedding."""
        return self.hidden(idx) @ self.wte.weight.t()  # (B, T, vocab)


def sequence_losses(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of each sequence ``(B,)``; their mean is the batch loss.

    Per-sequence losses come for free with the batch loss, and they let the trainer attribute
    training loss to the domain each sequence was drawn from. The head and the loss are fused
    (``lm_loss``) so the full logits tensor is never materialised in fp32.
    """
    h = model.hidden(x)  # (B, T, C)
    B, T, C = h.shape
    token_loss = linear_cross_entropy(h.reshape(B * T, C), model.wte.weight, y.reshape(B * T))  # (B·T,)
    return token_loss.view(B, T).mean(dim=1)  # (B,)


def batch_loss(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of a batch (a scalar to call ``backward`` on)."""
    return sequence_losses(model, x, y).mean()
