"""A compact decoder-only transformer with a dense or Mixture-of-Experts feed-forward block.

RMSNorm, rotary positions, causal scaled-dot-product attention, SwiGLU. The MoE block routes
each token to its top-k experts (token choice, router in fp32 with softmax), adds Switch's
load-balancing loss and the router z-loss, optionally runs shared experts on every token, and
supports granularity G: each expert is split G ways (hidden size d_ff / G, E G experts, k G of
them active), so the active parameter count does not change with G. Dispatch is dropless:
tokens are sorted by expert and the expert matmuls run batched, through torch's grouped matmul
where the installed torch has one (``dispatch="grouped"``) or a loop over experts
(``dispatch="loop"``); both give the same result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the torch convention)
from torch import nn

__all__ = ["ModelConfig", "Transformer", "grouped_matmul_available", "parameter_counts"]


def _grouped_mm() -> Any:
    """torch's grouped matmul (public name first), or None."""
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_matmul_available() -> bool:
    """Whether this torch provides a grouped matmul."""
    return _grouped_mm() is not None


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the model. ``experts = 1`` is dense; ``d_ff`` is the dense (or per-expert at
    G = 1) SwiGLU hidden size, by default 8/3 d_model rounded up to a multiple of 8."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    seq_len: int = 128
    vocab: int = 256
    d_ff: int = 0
    experts: int = 1
    top_k: int = 1
    granularity: int = 1
    shared_experts: int = 0
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.001
    dispatch: str = "auto"

    def __post_init__(self) -> None:
        if self.d_ff == 0:
            object.__setattr__(self, "d_ff", 8 * math.ceil(8 * self.d_model / 3 / 8))
        problems = []
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            problems.append(f"d_model {self.d_model} must split into {self.n_heads} even heads")
        if self.experts < 1 or self.top_k < 1 or self.top_k > self.experts:
            problems.append(f"need 1 <= top_k ({self.top_k}) <= experts ({self.experts})")
        if self.granularity < 1 or self.d_ff % self.granularity:
            problems.append(f"granularity {self.granularity} must divide d_ff {self.d_ff}")
        if self.dispatch not in ("auto", "grouped", "loop"):
            problems.append(f"dispatch {self.dispatch!r} is not one of auto, grouped, loop")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    @property
    def routed(self) -> int:
        """Routed experts after splitting: E G."""
        return self.experts * self.granularity if self.experts > 1 else 1

    @property
    def active(self) -> int:
        """Experts each token uses: k G."""
        return self.top_k * self.granularity if self.experts > 1 else 1

    @property
    def expert_hidden(self) -> int:
        return self.d_ff // self.granularity if self.experts > 1 else self.d_ff

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parameter_counts(config: ModelConfig) -> dict[str, int]:
    """Parameter breakdown of :class:`Transformer` (no biases; output tied to the embedding).

    ``n_active`` and ``n_total`` exclude the embedding; ``flops_per_token`` is the training cost
    of one token, 6 (N_matmul_active + V d) + 6 L T d: forward plus backward (3 x 2 FLOPs per
    multiply-add) over the active matmul parameters, the output projection, and attention's
    score and value products (Kaplan et al. 2020, eq. 2.1, with context T).
    """
    d, layers = config.d_model, config.n_layers
    attention = 4 * d * d
    norms = 2 * d * layers + d
    if config.experts > 1:
        per_expert = 3 * d * config.expert_hidden
        router = d * config.routed
        experts_total = config.routed * per_expert
        experts_active = config.active * per_expert
        shared = config.shared_experts * per_expert
    else:
        router, shared = 0, 0
        experts_total = experts_active = 3 * d * config.d_ff
    matmul_active = layers * (attention + router + experts_active + shared)
    matmul_total = layers * (attention + router + experts_total + shared)
    return {
        "embedding": config.vocab * d,
        "attention": layers * attention,
        "router": layers * router,
        "experts_total": layers * experts_total,
        "experts_active": layers * experts_active,
        "shared": layers * shared,
        "norms": norms,
        "n_active": matmul_active + norms,
        "n_total": matmul_total + norms,
        "flops_per_token": 6 * (matmul_active + config.vocab * d) + 6 * layers * config.seq_len * d,
    }


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

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden, bias=False)
        self.w3 = nn.Linear(d_model, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoE(nn.Module):
    """Token-choice top-k MoE feed-forward block with dropless, sorted dispatch."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        n, d, h = config.routed, config.d_model, config.expert_hidden
        self.router = nn.Linear(d, n, bias=False)
        scale = 1.0 / math.sqrt(d)
        self.w1 = nn.Parameter(torch.randn(n, d, h) * scale)
        self.w3 = nn.Parameter(torch.randn(n, d, h) * scale)
        self.w2 = nn.Parameter(torch.randn(n, h, d) / math.sqrt(h))
        self.shared = nn.ModuleList(SwiGLU(d, h) for _ in range(config.shared_experts))
        self.last_stats: dict[str, torch.Tensor] = {}

    def _use_grouped(self, x: torch.Tensor) -> bool:
        mode = self.config.dispatch
        if mode == "loop":
            return False
        # torch's grouped matmul needs 16-byte aligned rows.
        aligned = all(size * x.element_size() % 16 == 0 for size in self.w1.shape[1:])
        if mode == "grouped":
            if not grouped_matmul_available():
                raise RuntimeError("dispatch='grouped' needs a torch with a grouped matmul")
            return True
        return grouped_matmul_available() and aligned and x.dtype == torch.float32

    def _experts(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Apply expert i to its contiguous slice of the sorted tokens ``x``."""
        if self._use_grouped(x):
            gmm = _grouped_mm()
            offsets = torch.cumsum(counts, 0).to(torch.int32)
            hidden = F.silu(gmm(x, self.w1.to(x.dtype), offs=offsets)) * gmm(
                x, self.w3.to(x.dtype), offs=offsets
            )
            return gmm(hidden, self.w2.to(x.dtype), offs=offsets)
        out = torch.empty_like(x)
        start = 0
        for expert, count in enumerate(counts.tolist()):
            if count:
                part = x[start : start + count]
                w1, w3, w2 = (w[expert].to(x.dtype) for w in (self.w1, self.w3, self.w2))
                out[start : start + count] = (F.silu(part @ w1) * (part @ w3)) @ w2
            start += count
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output and the auxiliary loss (weighted load-balancing + z-loss)."""
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        n, k = self.config.routed, self.config.active
        with torch.autocast(device_type=x.device.type, enabled=False):  # router in fp32
            logits = F.linear(tokens.float(), self.router.weight.float())
        probs = logits.softmax(dim=-1)
        gate, expert = probs.topk(k, dim=-1)
        if k > 1:
            gate = gate / gate.sum(dim=-1, keepdim=True)
        flat_expert = expert.reshape(-1)
        order = flat_expert.argsort(stable=True)
        token_of = torch.arange(tokens.shape[0], device=x.device).repeat_interleave(k)[order]
        counts = torch.bincount(flat_expert, minlength=n)
        routed = self._experts(tokens[token_of], counts)
        weights = gate.reshape(-1)[order].to(routed.dtype).unsqueeze(-1)
        out = torch.zeros_like(tokens).index_add_(0, token_of, routed * weights)
        for block in self.shared:
            out = out + block(tokens)
        # Switch Transformer balance loss: n * sum_i (fraction of assignments to i) * (mean p_i).
        fraction = counts.float() / flat_expert.numel()
        balance = n * (fraction * probs.mean(dim=0)).sum()
        z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()
        self.last_stats = {
            "balance": balance.detach(),
            "z_loss": z_loss.detach(),
            "imbalance": (counts.max().float() / counts.float().mean()).detach(),
        }
        aux = self.config.aux_loss_coef * balance + self.config.z_loss_coef * z_loss
        return out.reshape(shape), aux


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(config.d_model)
        self.attention = Attention(config)
        self.norm2 = RMSNorm(config.d_model)
        self.ffn: nn.Module = (
            MoE(config) if config.experts > 1 else SwiGLU(config.d_model, config.d_ff)
        )

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + self.attention(self.norm1(x), cos, sin)
        if isinstance(self.ffn, MoE):
            y, aux = self.ffn(self.norm2(x))
        else:
            y, aux = self.ffn(self.norm2(x)), x.new_zeros(())
        return x + y, aux


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

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, mean cross-entropy (nats/token; 0 without targets) and auxiliary loss."""
        x = self.embed(idx)
        aux = x.new_zeros((), dtype=torch.float32)
        for block in self.blocks:
            x, block_aux = block(x, self.cos, self.sin)
            aux = aux + block_aux.float()
        logits = F.linear(self.norm(x), self.embed.weight)
        if targets is None:
            return logits, x.new_zeros(()), aux
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss, aux

    def moe_stats(self) -> dict[str, float]:
        """Mean balance loss, z-loss and load imbalance (max / mean) over MoE layers."""
        stats = [b.ffn.last_stats for b in self.blocks if isinstance(b.ffn, MoE)]
        if not stats or not stats[0]:
            return {}
        return {key: float(torch.stack([s[key] for s in stats]).mean()) for key in stats[0]}
