"""One training run: AdamW with warmup then cosine or warmup-stable-decay, gradient clipping,
bf16 autocast on CUDA, optional ``torch.compile``, held-out evaluation, exact resume from
checkpoints, JSONL metrics, and a run-table row at the end.

A NaN, infinite or exploding training loss (above ``diverge_factor`` times the loss of a
uniform prediction, ln 256) stops the run; its row is written with ``status = "diverged"``
and the last finite evaluation loss, so a sweep records it instead of crashing.

Data parallel: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA); each rank draws its own batches of
``batch_size / world_size`` sequences, and rank 0 alone writes metrics, checkpoints and the row.

Checkpoints are loaded with ``torch.load(..., weights_only=True)``, so they hold only tensors and
plain containers: a crafted ``checkpoint.pt`` cannot run code, it is refused with a
:class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from bayes_scaling._io import atomic_write
from bayes_scaling.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
)
from bayes_scaling.train.data import Corpus, prepare_corpus
from bayes_scaling.train.model import ModelConfig, Transformer, parameter_counts

__all__ = ["CheckpointError", "TrainConfig", "run_id_of", "train"]

# Dense bf16 peak of one H200 (and H100) SXM, for MFU.
PEAK_FLOPS = {"cuda": 989e12}


@dataclass(frozen=True)
class TrainConfig:
    """Everything one run needs; ``tokens`` is the training budget, ``batch_size`` sequences
    per optimizer step (all ranks together)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    tokens: int = 200_000
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.05
    schedule: str = "cosine"
    decay_fraction: float = 0.2
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 0
    eval_batches: int = 8
    checkpoint_every: int = 0
    compile: bool = False
    diverge_factor: float = 1.5
    data_dir: str = ""
    data_source: str = ""

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "wsd"):
            raise ValueError(f"schedule {self.schedule!r} is not 'cosine' or 'wsd'")
        if self.tokens <= 0 or self.batch_size <= 0 or not self.lr > 0:
            raise ValueError("tokens, batch_size and lr must be positive")

    @property
    def steps(self) -> int:
        return max(1, self.tokens // (self.batch_size * self.model.seq_len))

    def lr_at(self, step: int) -> float:
        """Learning rate at ``step`` (0-based): linear warmup, then cosine to ``min_lr_ratio``
        or stable then linear decay over the last ``decay_fraction`` (WSD)."""
        warmup = max(1, int(self.warmup_fraction * self.steps))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        floor = self.min_lr_ratio * self.lr
        if self.schedule == "cosine":
            progress = (step - warmup) / max(1, self.steps - warmup)
            return floor + 0.5 * (self.lr - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))
        decay_start = int(self.steps * (1 - self.decay_fraction))
        if step < decay_start:
            return self.lr
        progress = (step - decay_start) / max(1, self.steps - decay_start)
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


def run_id_of(config: TrainConfig) -> str:
    """A readable id (shape, budget, batch, lr, seed) plus a hash of every setting that
    changes the result, so two configs share an id only when they train the same run."""
    m = config.model
    moe = f"-e{m.experts}k{m.top_k}g{m.granularity}s{m.shared_experts}" if m.experts > 1 else ""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("data_dir", "compile")}
    settings["model"] = {k: v for k, v in settings["model"].items() if k != "dispatch"}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:6]
    return (
        f"d{m.d_model}l{m.n_layers}{moe}-t{config.tokens}-b{config.batch_size}"
        f"-lr{config.lr:.3g}-s{config.seed}-{digest}"
    )


def _default_data_dir(source: str = "") -> Path:
    """The package's own corpus cache: one folder per Python version and source, so runs on
    different sources never share (or keep rebuilding) one folder."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    name = f"stdlib-{version}"
    if source:
        digest = hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:8]
        name = f"{Path(source).name}-{digest}-{version}"
    return Path.home() / ".cache" / "bayes_scaling" / name


def _distributed() -> tuple[int, int]:
    """(rank, world size), initialising the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


@torch.no_grad()
def _evaluate(
    model: torch.nn.Module, corpus: Corpus, config: TrainConfig, device: torch.device
) -> float:
    model.eval()
    losses = []
    for index in range(config.eval_batches):
        x, y = corpus.batch("val", config.batch_size, config.model.seq_len, 10_000 + index, 0)
        with _autocast(device):
            _, loss, _ = model(x.to(device), y.to(device))
        losses.append(float(loss))
    model.train()
    return float(np.mean(losses))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past ``step`` (written after the checkpoint a resume starts from).

    A crash mid-write can leave the last line incomplete; it is past the checkpoint (metrics
    are flushed before each checkpoint) and dropped. An unreadable line before it is refused.
    """
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise CheckpointError(
                f"{path}, line {number}: not valid JSON ({error.msg}); delete the run folder "
                f"{path.parent} to restart this run"
            ) from error
        if record["step"] <= step:
            kept.append(line)
    atomic_write(path, "".join(f"{line}\n" for line in kept))


def _autocast(device: torch.device) -> Any:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train(config: TrainConfig, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Run (or resume) one training run in ``out_dir``; returns its run-table row.

    ``out_dir`` receives ``metrics.jsonl``, ``checkpoint.pt`` (when ``checkpoint_every``) and
    ``config.json``. A checkpoint there is resumed exactly: model, optimizer, step, data
    position (the step) and torch's RNG. The row's ``status`` is ``"finished"`` or
    ``"diverged"``.

    Raises
    ------
    CheckpointError
        When ``checkpoint.pt`` is not a loadable checkpoint of this run (nothing in it runs).
    CorpusError
        When ``config.data_dir`` holds a corpus built from another source.
    """
    rank, world = _distributed()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = (
        torch.device(f"cuda:{rank % torch.cuda.device_count()}")
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    data_dir = Path(config.data_dir) if config.data_dir else _default_data_dir(config.data_source)
    if rank == 0:
        # The default folder is the package's cache, rebuilt when stale; a named one is refused.
        prepare_corpus(data_dir, config.data_source or None, rebuild_stale=not config.data_dir)
    if world > 1:
        dist.barrier()
    corpus = Corpus(data_dir)
    torch.manual_seed(config.seed)
    model = Transformer(config.model).to(device)
    counts = parameter_counts(config.model)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    start_step, last_eval, status = 0, float("nan"), "running"
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        start_step, last_eval = load_checkpoint(checkpoint, model, optimizer, config.steps)
    step_model: torch.nn.Module = model
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(model)
    if config.compile:
        step_model = torch.compile(step_model)  # type: ignore[assignment]
    if rank == 0:
        atomic_write(out / "config.json", json.dumps(config.to_dict(), indent=1))
        _truncate_metrics(out / "metrics.jsonl", start_step)
    metrics = (out / "metrics.jsonl").open("a") if rank == 0 else None
    per_rank = max(1, config.batch_size // world)
    tokens_per_step = per_rank * world * config.model.seq_len
    limit = config.diverge_factor * math.log(config.model.vocab)
    started = time.perf_counter()
    done_steps = start_step
    try:
        for step in range(start_step, config.steps):
            lr = config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = corpus.batch("train", per_rank, config.model.seq_len, config.seed, step, rank)
            tick = time.perf_counter()
            with _autocast(device):
                _, loss, aux = step_model(x.to(device), y.to(device))
            (loss + aux).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = loss.detach().item()
            if not math.isfinite(value) or (step > config.steps // 10 and value > limit):
                status = "diverged"
                break
            done_steps = step + 1
            last_step = step + 1 == config.steps
            if (config.eval_every and (step + 1) % config.eval_every == 0) or last_step:
                last_eval = _evaluate(model, corpus, config, device)
            if metrics is not None:
                seconds = time.perf_counter() - tick
                record = {
                    "step": step + 1,
                    "tokens": (step + 1) * tokens_per_step,
                    "lr": lr,
                    "loss": value,
                    "aux_loss": aux.detach().item(),
                    "tokens_per_s": tokens_per_step / max(seconds, 1e-9),
                    **model.moe_stats(),
                }
                if device.type == "cuda":
                    achieved = counts["flops_per_token"] * tokens_per_step / max(seconds, 1e-9)
                    record["mfu"] = achieved / (PEAK_FLOPS["cuda"] * world)
                if (config.eval_every and (step + 1) % config.eval_every == 0) or last_step:
                    record["val_loss"] = last_eval
                metrics.write(json.dumps(record) + "\n")
            if rank == 0 and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
                metrics.flush()  # type: ignore[union-attr]
                save_checkpoint(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "step": step + 1,
                        "last_eval": last_eval,
                        "rng": rng_state(),
                    },
                    checkpoint,
                )
        else:
            status = "finished"
    finally:
        if metrics is not None:
            metrics.close()
    wall = time.perf_counter() - started
    m = config.model
    tokens = done_steps * tokens_per_step
    if not math.isfinite(last_eval):
        last_eval = math.log(m.vocab)  # diverged before any evaluation: a uniform prediction
    row = {
        "run_id": run_id_of(config),
        "source": "bayes_scaling.train",
        "arch": "moe" if m.experts > 1 else "dense",
        "n_active": counts["n_active"],
        "n_total": counts["n_total"],
        "tokens": tokens if status == "diverged" else config.steps * tokens_per_step,
        "flops": counts["flops_per_token"] * max(tokens, 1),
        "experts": m.experts,
        "top_k": m.top_k if m.experts > 1 else 1,
        "granularity": float(m.granularity),
        "shared_experts": m.shared_experts,
        "batch_tokens": float(tokens_per_step),
        "lr": config.lr,
        "loss": last_eval,
        "eval_set": "python-stdlib-val",
        "seed": config.seed,
        "step": done_steps,
        "status": status,
        "d_model": m.d_model,
        "n_layers": m.n_layers,
        "schedule": config.schedule,
        "embedding_params": counts["embedding"],
        "flops_per_token": counts["flops_per_token"],
        "wall_s": wall,
        "tokens_per_s": (done_steps - start_step) * tokens_per_step / max(wall, 1e-9),
        "device": device.type,
        "world_size": world,
    }
    if checkpoint.exists() and status == "finished" and rank == 0:
        checkpoint.unlink()  # finished runs keep metrics, not optimizer state
    return row
