"""Where and how a run executes: device and process group, precision, determinism, the
optimizer, host-to-device copies, and the cross-rank decisions of the training loop."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from bayes_scaling.train.config import TrainConfig

__all__ = [
    "autocast_for",
    "build_optimizer",
    "distributed",
    "numerics",
    "pick_device",
    "reduce_window",
    "to_device",
]  # fmt: skip


def distributed() -> tuple[int, int]:
    """(rank, world size), initialising the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def pick_device(rank: int) -> torch.device:
    if torch.cuda.is_available():
        return torch.device(f"cuda:{rank % torch.cuda.device_count()}")
    return torch.device("cpu")


@contextmanager
def numerics(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """TF32 matmuls on CUDA (fp32 parts only; bf16 autocast does the bulk), and, inside the
    block, the deterministic-kernel switch for exact resume on CUDA (CPU kernels are
    deterministic); the switch is restored on the way out, so one run does not set it for the
    next run of a sweep."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    previous = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        # cuBLAS reads this when it creates its first handle: set before any matmul on CUDA.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def autocast_for(config: TrainConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA (``precision = "auto"``) or wherever ``"bf16"`` asks for it."""
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def build_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> Any:
    """AdamW (betas 0.9, 0.95), weight decay on matrices only; fused kernels on CUDA."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Pinned memory and an asynchronous copy on CUDA; unchanged on the CPU."""
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def reduce_window(
    values: torch.Tensor, world: int, limit: float, first_checked: int, first_step: int
) -> tuple[list[list[float]], int | None]:
    """Average the window's per-step values (S, K) over ranks, then find the first diverged step.

    Column 0 is the training loss. Every rank gets the same averaged values and so takes the
    same decision (a spike or NaN on one rank stops all of them together, and the logged loss
    is the mean over ranks). Returns the rows as lists and the index in the window of the first
    step whose loss is not finite or, from step ``first_checked`` on, above ``limit``.
    """
    if world > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values / world
    rows = values.double().cpu().tolist()  # the host sync of the window
    for index, row in enumerate(rows):
        loss = row[0]
        if not math.isfinite(loss) or (first_step + index >= first_checked and loss > limit):
            return rows, index
    return rows, None
