"""A compact decoder-only transformer with a dense or Mixture-of-Experts feed-forward block.

RMSNorm, rotary positions, causal scaled-dot-product attention, SwiGLU; the output projection is
tied to the embedding. The MoE block and its routers live in :mod:`~bayes_scaling.train.moe`,
the parameter and FLOP accounting in :mod:`~bayes_scaling.train.accounting`.

Init: the embedding N(0, 0.02) (GPT-2); every other matrix N(0, 1/fan_in), the MoE block's
experts as described in :mod:`~bayes_scaling.train.moe`, so dense and MoE blocks start at the
same output scale.

``forward`` returns a :class:`ModelOutput` whose per-layer router statistics are tensors (no
host sync; the loop reads them when it logs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 (the torch convention)
from torch import nn

from bayes_scaling.train.accounting import parameter_counts
from bayes_scaling.train.config import ModelConfig
from bayes_scaling.train.moe import MoE, SwiGLU, grouped_matmul_available

__all__ = ["ModelConfig", "ModelOutput", "Transformer", "grouped_matmul_available",
           "parameter_counts"]  # fmt: skip


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (x.float() * scale).type_as(x) * self.weight


def _rotary(seq_len: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    inverse = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(seq_len).float(), inverse)
    return angles.cos(), angles.sin()


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., ::2], x[..., 1::2]) of (batch, heads, time, head_dim)."""
    even, odd = x[..., ::2], x[..., 1::2]
    t = x.shape[-2]
    c, s = cos[:t].to(x.dtype), sin[:t].to(x.dtype)
    return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)
        for layer in (self.qkv, self.out):
            nn.init.normal_(layer.weight, std=config.d_model**-0.5)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        # (3, B, heads, T, head_dim)
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, T, head_dim)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(config.d_model)
        self.attention = Attention(config)
        self.norm2 = RMSNorm(config.d_model)
        self.ffn: nn.Module = MoE(config) if config.is_moe else SwiGLU(config.d_model, config.d_ff)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple:
        x = x + self.attention(self.norm1(x), cos, sin)
        if isinstance(self.ffn, MoE):
            moe = self.ffn(self.norm2(x))
            return x + moe.out, moe
        return x + self.ffn(self.norm2(x)), None


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, vocab)
    loss: torch.Tensor  # () mean cross-entropy, nats per token (0 without targets)
    aux: torch.Tensor  # () router losses, mean over MoE layers (0 for dense)
    load: torch.Tensor  # (MoE layers, E G) assignments per expert
    balance: torch.Tensor  # (MoE layers,) Switch balance loss
    z_loss: torch.Tensor  # (MoE layers,) router z-loss


class Transformer(nn.Module):
    """Decoder-only LM over ``config.vocab`` tokens; the output projection is tied."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model)
        cos, sin = _rotary(config.seq_len, config.d_model // config.n_heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        nn.init.normal_(self.embed.weight, std=0.02)

    def moe_layers(self) -> list[MoE]:
        return [b.ffn for b in self.blocks if isinstance(b.ffn, MoE)]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> ModelOutput:
        """Logits, loss, auxiliary loss and router statistics of token ids ``idx`` (B, T)."""
        x = self.embed(idx)  # (B, T, d)
        routed = []
        for block in self.blocks:
            x, moe = block(x, self.cos, self.sin)
            if moe is not None:
                routed.append(moe)
        logits = F.linear(self.norm(x), self.embed.weight)  # (B, T, vocab)
        loss = x.new_zeros((), dtype=torch.float32)
        if targets is not None:
            flat = logits.float().reshape(-1, logits.size(-1))
            loss = F.cross_entropy(flat, targets.reshape(-1))
        if not routed:
            empty = x.new_zeros((0,), dtype=torch.float32)
            return ModelOutput(logits, loss, loss.new_zeros(()), empty.view(0, 1), empty, empty)
        return ModelOutput(
            logits,
            loss,
            torch.stack([m.aux.float() for m in routed]).mean(),
            torch.stack([m.load for m in routed]),
            torch.stack([m.balance for m in routed]),
            torch.stack([m.z_loss for m in routed]),
        )
