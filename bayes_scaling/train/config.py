"""The trainer's two configs: the model's shape (:class:`ModelConfig`) and one run's settings
(:class:`TrainConfig`, with its learning-rate schedule), and the run id derived from them."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["ROUTERS", "ModelConfig", "TrainConfig", "run_id_of"]

# Token choice (top-k; Shazeer et al. 2017, Switch), expert choice (Zhou et al. 2022, routed
# within each sequence) and Mixture of Tokens (Antoniak et al. 2023, groups across sequences).
ROUTERS = ("topk", "expert_choice", "mot")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the model. ``experts = 1`` is dense.

    At equal ``top_k`` every router costs the same per token: token choice sends each token to
    k G experts; expert choice lets each of the E G experts take ``seq_len * top_k / experts``
    tokens of every sequence (k G per token on average); Mixture of Tokens mixes groups of
    ``experts / top_k`` tokens (one position of that many sequences) and runs every expert once
    per group (k G expert calls per token).
    """

    d_model: int = 64  # residual width
    n_layers: int = 2  # transformer blocks
    n_heads: int = 4  # attention heads (head size d_model / n_heads, even for rotary)
    seq_len: int = 128  # context T
    vocab: int = 256  # byte tokens
    d_ff: int = 0  # dense SwiGLU hidden size; 0: 8/3 d_model rounded up to a multiple of 8
    experts: int = 1  # E (1: dense); each is split G ways into E G experts of d_ff / G
    top_k: int = 1  # k: active experts per token at G = 1 (activation ratio k / E)
    granularity: int = 1  # G (Krajewski et al. 2024): d_ff / expert hidden size
    shared_experts: int = 0  # always-on experts, each of hidden d_ff whatever G (n_active fixed)
    router: str = "topk"  # one of ROUTERS
    aux_loss_coef: float = 0.01  # Switch balance loss weight (token choice), mean over layers
    z_loss_coef: float = 0.001  # router z-loss weight (ST-MoE), mean over layers
    bias_update_rate: float = 0.0  # aux-loss-free balancing step (DeepSeek-V3 uses 0.001); 0: off
    dispatch: str = "auto"  # token choice: grouped matmul, per-expert loop, or auto (see moe.py)

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
        if self.router not in ROUTERS:
            problems.append(f"router {self.router!r} is not one of {', '.join(ROUTERS)}")
        if self.router == "expert_choice" and (self.seq_len * self.top_k) % self.experts:
            problems.append(f"expert choice needs experts ({self.experts}) to divide T x top_k")
        if self.router == "mot" and self.experts % self.top_k:
            problems.append(f"Mixture of Tokens needs top_k ({self.top_k}) to divide experts")
        if self.bias_update_rate and self.router != "topk":
            problems.append("bias_update_rate balances token choice only (router = 'topk')")
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
        return self.experts * self.granularity if self.is_moe else 1

    @property
    def active(self) -> int:
        """Expert calls per token: k G."""
        return self.top_k * self.granularity if self.is_moe else 1

    @property
    def expert_hidden(self) -> int:
        return self.d_ff // self.granularity if self.is_moe else self.d_ff

    @property
    def token_group(self) -> int:
        """Sequences routed together: E / k for Mixture of Tokens, else 1 (rows independent)."""
        return self.experts // self.top_k if self.is_moe and self.router == "mot" else 1

    @property
    def arch(self) -> str:
        """The run-table label: ``dense``, or the router's name (``topk``, ...)."""
        return self.router if self.is_moe else "dense"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Settings that change how a run executes, not what it computes: not part of its id.
_EXECUTION_KEYS = (
    "data_dir", "compile", "compile_backend", "eval_batch", "micro_batch", "sync_every",
    "keep_weights", "deterministic",
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Everything one run needs; ``tokens`` is the training budget, ``batch_size`` sequences
    per optimizer step (all ranks together)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    tokens: int = 200_000  # training budget D
    batch_size: int = 16  # sequences per optimizer step, all ranks and micro-batches together
    micro_batch: int = 0  # sequences per forward pass and rank (gradient accumulation); 0: all
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float | None = None  # floor / peak; None: 0.1 cosine (Chinchilla), 0 WSD
    warmup_fraction: float = 0.05  # share of steps in linear warm-up
    schedule: str = "cosine"  # "cosine" or "wsd" (warm-up, stable, linear decay to the floor)
    decay_fraction: float = 0.2  # WSD: share of steps in the final decay
    weight_decay: float = 0.1  # AdamW, on matrices only
    grad_clip: float = 1.0  # global gradient-norm clip
    seed: int = 0  # weights and batch order
    eval_every: int = 0  # steps between evaluations (0: at the end only)
    eval_tokens: int = 0  # validation tokens per evaluation (0: the whole split), run-independent
    eval_batch: int = 64  # sequences per evaluation forward (does not change the result)
    checkpoint_every: int = 0  # steps between checkpoints (0: none)
    keep_weights: bool = False  # write the final weights to model.pt
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU), "bf16", "fp32"
    compile: bool = False  # torch.compile the model (dynamic=False)
    compile_backend: str = "inductor"  # "aot_eager" traces the same graph without codegen
    deterministic: bool = False  # deterministic kernels (exact resume on CUDA; slower)
    sync_every: int = 10  # steps between host syncs (divergence check, metrics); 1 on a CPU
    diverge_factor: float = 1.5  # stop when the loss exceeds this x ln(vocab) after 10% of steps
    data_dir: str = ""  # corpus folder (default: the package's cache)
    data_source: str = ""  # corpus source (default: the Python standard library)

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "wsd"):
            raise ValueError(f"schedule {self.schedule!r} is not 'cosine' or 'wsd'")
        if self.tokens <= 0 or self.batch_size <= 0 or not self.lr > 0:
            raise ValueError("tokens, batch_size and lr must be positive")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision {self.precision!r} is not 'auto', 'bf16' or 'fp32'")
        if self.micro_batch < 0 or self.eval_tokens < 0 or self.eval_batch < 1:
            raise ValueError("micro_batch and eval_tokens must be >= 0, eval_batch >= 1")
        if self.sync_every < 1:
            raise ValueError("sync_every must be >= 1")

    @property
    def steps(self) -> int:
        return max(1, self.tokens // (self.batch_size * self.model.seq_len))

    @property
    def floor_ratio(self) -> float:
        if self.min_lr_ratio is not None:
            return self.min_lr_ratio
        return 0.1 if self.schedule == "cosine" else 0.0

    def lr_at(self, step: int) -> float:
        """Learning rate at ``step`` (0-based): linear warm-up, then cosine to the floor, or
        stable then linear decay (WSD, Hägele et al. 2024); the last step is at the floor."""
        warmup = min(max(1, int(self.warmup_fraction * self.steps)), self.steps)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        floor = self.floor_ratio * self.lr
        if self.schedule == "cosine":
            progress = (step + 1 - warmup) / max(1, self.steps - warmup)
            return floor + 0.5 * (self.lr - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))
        # The decay starts after warm-up even when decay_fraction is near 1 (no jump).
        decay_start = max(warmup, round(self.steps * (1 - self.decay_fraction)))
        if step < decay_start:
            return self.lr
        progress = (step + 1 - decay_start) / max(1, self.steps - decay_start)
        return self.lr - (self.lr - floor) * min(progress, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from one flat mapping of model and training keys; unknown keys are errors."""
        model_keys = {f.name for f in fields(ModelConfig)}
        train_keys = {f.name for f in fields(cls)} - {"model"}
        unknown = sorted(set(values) - model_keys - train_keys)
        if unknown:
            raise ValueError(
                f"unknown key(s) {unknown}; expected some of {sorted(model_keys | train_keys)}"
            )
        model = ModelConfig(**{k: v for k, v in values.items() if k in model_keys})
        return cls(model=model, **{k: v for k, v in values.items() if k in train_keys})

    def flat(self) -> dict[str, Any]:
        """The inverse of :meth:`from_flat`."""
        values = self.to_dict()
        return {**values.pop("model"), **values}


def run_id_of(config: TrainConfig) -> str:
    """A readable id (shape, router, budget, batch, lr, seed) plus a hash of every setting that
    changes the result, so two configs share an id only when they train the same run."""
    m = config.model
    moe = ""
    if m.is_moe:
        router = {"topk": "", "expert_choice": "ec", "mot": "mot"}[m.router]
        moe = f"-{router}e{m.experts}k{m.top_k}g{m.granularity}s{m.shared_experts}"
    settings = {k: v for k, v in config.to_dict().items() if k not in _EXECUTION_KEYS}
    settings["model"] = {k: v for k, v in settings["model"].items() if k != "dispatch"}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:6]
    return (
        f"d{m.d_model}l{m.n_layers}{moe}-t{config.tokens}-b{config.batch_size}"
        f"-lr{config.lr:.3g}-s{config.seed}-{digest}"
    )
