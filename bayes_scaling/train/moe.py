"""The Mixture-of-Experts feed-forward block: three routers over one set of experts.

- **Token choice** (``router = "topk"``; Shazeer et al. 2017, Switch, megablocks): each token
  goes to the k G experts with the highest router probability. Dropless: tokens are sorted by
  expert and the experts run as one grouped matmul (``dispatch = "grouped"``) or a loop over
  experts (``"loop"``: a host sync per layer, the CPU fp32 reference). The grouped path pads
  each expert's rows to a multiple of 16 (at least 16) inside a buffer of fixed size, so it
  has no host sync, no data-dependent shape (``torch.compile(dynamic=False)`` traces it whole)
  and no empty group. Under autocast it casts its inputs and weights to the autocast dtype, as
  torchtitan does (grouped_mm is not on autocast's list, and its fast CUDA kernel and its
  compiled form need bf16); ``"auto"`` takes it whenever that dtype is bf16 or fp16 and the
  model width and expert hidden size are multiples of 8 (grouped_mm's 16-byte alignment).
  Balance: Switch's loss, or the aux-loss-free per-expert bias of DeepSeek-V3 (added to the
  scores for selection only, updated by the loop after each step: :func:`update_expert_bias`).
- **Expert choice** (``"expert_choice"``; Zhou et al. 2022): each expert takes its top
  ``seq_len k / E`` tokens of every sequence. Balanced by construction, fixed shapes (a batched
  matmul). Routing within one sequence keeps rows independent (the loss of a sequence does not
  depend on the batch), but a token's routing depends on later tokens of its sequence: the
  known causality leak of expert choice in decoders.
- **Mixture of Tokens** (``"mot"``; Antoniak et al. 2023): tokens at one position of E / k
  sequences form a group; each expert gets the group's softmax-weighted mixture and its output
  goes back to the tokens with the same weights. Causal, no discrete choice; a row's output
  depends on the other rows of its group, so batches must be multiples of the group.

One gate rule for all three: an expert's output is weighted by the router's softmax, scaled so
that a token's weights sum to one at uniform routing. Token choice divides the chosen
probabilities by their sum, a factor held constant in the backward pass (a top-1 router still
learns from the language-model loss, which a true renormalisation would cut); expert choice
multiplies by E / k (tokens get a varying number of experts); Mixture of Tokens divides its
unmixing weights (which sum to E G / group = k G per token at uniform weights) by k G.

Matched init: every weight is N(0, 1/fan_in), as in the dense FFN, and the routed experts'
output projections are scaled up by sqrt(number of experts a token's output averages): k G,
or all E G for Mixture of Tokens, whose mixtures are also scaled by sqrt(group) (a mixture of
independent tokens is smaller than a token by that factor). So every block starts at the dense
FFN's output scale (a test checks it: within 5% for token choice and Mixture of Tokens; expert
choice starts ~25% above, as each expert takes the tokens that rate it highest).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812 (the torch convention)
from torch import nn

from bayes_scaling.train.config import ModelConfig

__all__ = ["MoE", "MoEOutput", "SwiGLU", "grouped_matmul_available", "update_expert_bias"]

ALIGN = 16  # rows per expert group are padded to a multiple of this (16-byte bf16 alignment x 8)


def _grouped_mm() -> Any:
    """torch's grouped matmul (public name first), or None."""
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_matmul_available() -> bool:
    """Whether this torch provides a grouped matmul."""
    return _grouped_mm() is not None


def _normal_(weight: torch.Tensor, fan_in: int, gain: float = 1.0) -> torch.Tensor:
    return nn.init.normal_(weight, std=gain / math.sqrt(fan_in))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, hidden, bias=False)
        self.w3 = nn.Linear(d_model, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d_model, bias=False)
        for layer, fan_in in ((self.w1, d_model), (self.w3, d_model), (self.w2, hidden)):
            _normal_(layer.weight, fan_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoEOutput(NamedTuple):
    out: torch.Tensor  # (B, T, d)
    aux: torch.Tensor  # weighted balance + z-loss, () fp32
    load: torch.Tensor  # (E G,) token assignments per expert in this forward, fp32
    balance: torch.Tensor  # () Switch balance loss (1 when balanced)
    z_loss: torch.Tensor  # () router z-loss


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run a matmul in, else the input's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class MoE(nn.Module):
    """MoE feed-forward block; ``forward`` returns a :class:`MoEOutput`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        n, d, h = config.routed, config.d_model, config.expert_hidden
        self.router = nn.Linear(d, n, bias=False)
        nn.init.normal_(self.router.weight, std=0.02)  # near-uniform routing at init
        self.w1 = nn.Parameter(_normal_(torch.empty(n, d, h), d))
        self.w3 = nn.Parameter(_normal_(torch.empty(n, d, h), d))
        # A token's output averages k G experts (every expert for Mixture of Tokens).
        averaged = n if config.router == "mot" else config.active
        self.w2 = nn.Parameter(_normal_(torch.empty(n, h, d), h, math.sqrt(averaged)))
        self.shared: SwiGLU | None = (
            SwiGLU(d, config.shared_experts * config.d_ff) if config.shared_experts else None
        )
        self.expert_bias: torch.Tensor
        self.register_buffer("expert_bias", torch.zeros(n))

    def _use_grouped(self, dtype: torch.dtype) -> bool:
        mode = self.config.dispatch
        if mode == "grouped" and not grouped_matmul_available():
            raise RuntimeError("dispatch='grouped' needs a torch with a grouped matmul")
        if mode != "auto":
            return mode == "grouped"
        # grouped_mm needs rows of 16-byte multiples: d and the expert hidden size.
        size = torch.finfo(dtype).bits // 8
        aligned = all(dim * size % 16 == 0 for dim in self.w2.shape[1:])
        return grouped_matmul_available() and aligned and dtype in (torch.bfloat16, torch.float16)

    def _grouped(self, x: torch.Tensor, expert: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Experts on sorted rows ``x`` (expert ids ``expert``), padded groups, no host sync."""
        n = self.config.routed
        padded = ((counts + ALIGN - 1) // ALIGN).clamp(min=1) * ALIGN  # (n,)
        starts = torch.cumsum(counts, 0) - counts
        padded_starts = torch.cumsum(padded, 0) - padded
        rows = torch.arange(x.shape[0], device=x.device)
        dest = rows - starts[expert] + padded_starts[expert]  # (M,) row in the padded buffer
        capacity = x.shape[0] + n * ALIGN  # fixed: holds any padding
        buffer = x.new_zeros(capacity, x.shape[1]).index_copy(0, dest, x)
        ends = torch.cumsum(padded, 0)
        ends = torch.cat([ends[:-1], ends.new_full((1,), capacity)]).to(torch.int32)
        gmm = _grouped_mm()
        w1, w3, w2 = (w.to(x.dtype) for w in (self.w1, self.w3, self.w2))
        hidden = F.silu(gmm(buffer, w1, offs=ends)) * gmm(buffer, w3, offs=ends)
        return gmm(hidden, w2, offs=ends)[dest]

    def _loop(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The reference: one matmul per expert (syncs to read the counts)."""
        out = torch.empty_like(x)
        start = 0
        for expert, count in enumerate(counts.tolist()):
            if count:
                part = x[start : start + count]
                w1, w3, w2 = (w[expert].to(x.dtype) for w in (self.w1, self.w3, self.w2))
                out[start : start + count] = (F.silu(part @ w1) * (part @ w3)) @ w2
            start += count
        return out

    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=tokens.device.type, enabled=False):  # router in fp32
            return F.linear(tokens.float(), self.router.weight.float())

    def _token_choice(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n, k = self.config.routed, self.config.active
        logits = self._logits(tokens)  # (N, n)
        probs = logits.softmax(dim=-1)
        scores = probs + self.expert_bias if self.config.bias_update_rate else probs
        expert = scores.topk(k, dim=-1).indices  # (N, k)
        gate = probs.gather(1, expert)
        gate = gate / gate.sum(dim=-1, keepdim=True).detach()  # the gate rule (module notes)
        flat = expert.reshape(-1)  # (N k,): row i k + j is token i's j-th expert
        order = flat.argsort(stable=True)
        load = probs.new_zeros(n).scatter_add_(0, flat, probs.new_ones(flat.shape))
        counts = load.long()
        dtype = _compute_dtype(tokens)
        x = tokens.to(dtype).repeat_interleave(k, dim=0)[order]  # (N k, d) sorted by expert
        if self._use_grouped(dtype):
            y = self._grouped(x, flat[order], counts)
        else:
            y = self._loop(x, counts)
        positions = torch.arange(order.numel(), device=order.device)
        inverse = torch.empty_like(order).scatter_(0, order, positions)
        y = y[inverse].view(tokens.shape[0], k, -1)  # back to token order
        out = (y * gate.unsqueeze(-1).to(y.dtype)).sum(dim=1)
        # Switch balance loss: n * sum_i (share of assignments to i) * (mean router prob of i).
        balance = n * (load / flat.numel() * probs.mean(dim=0)).sum()
        return out, logits, load, balance

    def _batched_experts(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert on its own rows: (n, M, d) -> (n, M, d), one batched matmul each."""
        w1, w3, w2 = (w.to(x.dtype) for w in (self.w1, self.w3, self.w2))
        return torch.bmm(F.silu(torch.bmm(x, w1)) * torch.bmm(x, w3), w2)

    def _expert_choice(self, tokens: torch.Tensor, batch: int) -> tuple[torch.Tensor, ...]:
        n, seq = self.config.routed, tokens.shape[0] // batch
        capacity = seq * self.config.top_k // self.config.experts  # per expert and sequence
        logits = self._logits(tokens)
        probs = logits.softmax(dim=-1).view(batch, seq, n)
        gate, index = probs.transpose(1, 2).topk(capacity, dim=-1)  # (B, n, c) positions
        x = tokens.view(batch, seq, -1).to(_compute_dtype(tokens))
        gather = index.reshape(batch, n * capacity, 1).expand(-1, -1, x.shape[-1])
        chosen = x.gather(1, gather).view(batch, n, capacity, -1).transpose(0, 1)
        y = self._batched_experts(chosen.reshape(n, batch * capacity, -1))
        y = y.view(n, batch, capacity, -1).transpose(0, 1)  # (B, n, c, d)
        y = y * (gate * (self.config.experts / self.config.top_k)).unsqueeze(-1).to(y.dtype)
        out = torch.zeros_like(x).scatter_add_(1, gather, y.reshape(batch, n * capacity, -1))
        load = torch.full((n,), float(batch * capacity), device=tokens.device)
        return out.view(tokens.shape[0], -1), logits, load, torch.ones((), device=tokens.device)

    def _mixture_of_tokens(self, tokens: torch.Tensor, batch: int) -> tuple[torch.Tensor, ...]:
        n, group = self.config.routed, self.config.token_group
        seq = tokens.shape[0] // batch
        if batch % group:
            raise ValueError(f"Mixture of Tokens needs batches of a multiple of {group} rows")
        logits = self._logits(tokens)  # (B T, n)
        # Groups: position t of sequences g*group .. g*group + group - 1.
        grouped = logits.view(batch // group, group, seq, n).permute(0, 2, 3, 1)  # (G, T, n, g)
        weights = grouped.softmax(dim=-1)  # over the group, per expert
        x = tokens.view(batch // group, group, seq, -1).transpose(1, 2).to(_compute_dtype(tokens))
        # Scaled by sqrt(group): a mixture of independent tokens keeps a token's scale at init.
        mixed = torch.matmul(weights.to(x.dtype), x) * math.sqrt(group)  # (G, T, n, d)
        y = self._batched_experts(mixed.permute(2, 0, 1, 3).reshape(n, -1, x.shape[-1]))
        y = y.view(n, batch // group, seq, -1).permute(1, 2, 0, 3)  # (G, T, n, d)
        unmix = weights.transpose(-1, -2) / self.config.active  # (G, T, g, n)
        out = torch.matmul(unmix.to(y.dtype), y)  # (G, T, g, d)
        out = out.transpose(1, 2).reshape(tokens.shape[0], -1)
        load = torch.full((n,), float(tokens.shape[0] // group), device=tokens.device)
        return out, logits, load, torch.ones((), device=tokens.device)

    def forward(self, x: torch.Tensor) -> MoEOutput:
        batch, _, d = x.shape
        tokens = x.reshape(-1, d)
        if self.config.router == "expert_choice":
            out, logits, load, balance = self._expert_choice(tokens, batch)
        elif self.config.router == "mot":
            out, logits, load, balance = self._mixture_of_tokens(tokens, batch)
        else:
            out, logits, load, balance = self._token_choice(tokens)
        out = out.to(x.dtype)
        if self.shared is not None:
            out = out + self.shared(tokens).to(x.dtype)
        z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()
        aux = z_loss * self.config.z_loss_coef
        if self.config.router == "topk":
            aux = aux + self.config.aux_loss_coef * balance
        return MoEOutput(out.view(x.shape), aux, load, balance.detach(), z_loss.detach())


@torch.no_grad()
def update_expert_bias(moe: MoE, load: torch.Tensor) -> None:
    """DeepSeek-V3's aux-loss-free balancing: raise the bias of under-loaded experts and lower
    that of over-loaded ones by ``bias_update_rate`` (``load``: assignments since the last
    update, summed over ranks); the bias is centred, so only differences matter."""
    step = moe.config.bias_update_rate * torch.sign(load.mean() - load)
    moe.expert_bias.add_(step).sub_(moe.expert_bias.mean())
