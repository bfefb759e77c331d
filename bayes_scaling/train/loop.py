"""One training run: AdamW with warm-up then cosine or warmup-stable-decay, gradient clipping
and accumulation, bf16 autocast on CUDA, optional ``torch.compile``, the fixed evaluation of
:mod:`~bayes_scaling.train.evaluate`, exact resume from checkpoints, JSONL metrics, and a
run-table row at the end.

The step has no host sync: losses and router statistics stay on the device and are read every
``sync_every`` steps (and at every evaluation, checkpoint and the last step). Then a NaN,
infinite or exploding training loss (above ``diverge_factor`` times the loss of a uniform
prediction, ln 256, after the first 10% of steps) stops the run at the first such step; its
row is written with ``status = "diverged"`` and the last finite evaluation loss, so a sweep
records it instead of crashing. Throughput is measured over those windows, evaluation excluded.

Data parallel: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA); each rank draws its own batches of
``batch_size / world_size`` sequences. The logged losses are averaged over ranks, and the
divergence decision is taken on those averages, so every rank stops at the same step. Rank 0
alone writes metrics, checkpoints and the row.

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
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bayes_scaling._io import atomic_write
from bayes_scaling.train.accounting import PEAK_FLOPS, mfu, parameter_counts
from bayes_scaling.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    truncate_metrics,
)
from bayes_scaling.train.config import TrainConfig, run_id_of
from bayes_scaling.train.data import Corpus, prepare_corpus
from bayes_scaling.train.evaluate import eval_windows, evaluate
from bayes_scaling.train.model import Transformer
from bayes_scaling.train.moe import update_expert_bias
from bayes_scaling.train.runtime import (
    autocast_for,
    build_optimizer,
    distributed,
    numerics,
    pick_device,
    reduce_window,
    to_device,
)

__all__ = ["CheckpointError", "TrainConfig", "run_id_of", "train"]


def _default_data_dir(source: str = "") -> Path:
    """The package's own corpus cache: one folder per Python version and source, so runs on
    different sources never share (or keep rebuilding) one folder."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    name = f"stdlib-{version}"
    if source:
        digest = hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:8]
        name = f"{Path(source).name}-{digest}-{version}"
    return Path.home() / ".cache" / "bayes_scaling" / name


def _micro_batches(config: TrainConfig, world: int) -> tuple[int, int]:
    """(sequences per rank and step, sequences per forward), checked against the model."""
    per_rank = max(1, config.batch_size // world)
    micro = config.micro_batch or per_rank
    group = config.model.token_group
    if per_rank % micro or micro % group:
        raise ValueError(
            f"{per_rank} sequences per rank must split into micro-batches of {micro}, each a "
            f"multiple of the router's group of {group} sequences"
        )
    return per_rank, micro


def _step_values(output: Any, grad_norm: torch.Tensor) -> torch.Tensor:
    """One step's logged values as one device vector: loss, aux, grad norm, then per MoE
    layer the load imbalance (max / mean), balance loss and z-loss."""
    imbalance = output.load.max(dim=-1).values / output.load.mean(dim=-1).clamp(min=1e-9)
    return torch.cat([torch.stack([output.loss, output.aux, grad_norm.float()]),
                      imbalance, output.balance, output.z_loss]).detach()  # fmt: skip


def _record(values: list[float], layers: int) -> dict[str, Any]:
    record: dict[str, Any] = {"loss": values[0], "aux_loss": values[1], "grad_norm": values[2]}
    if layers:
        imbalance = values[3 : 3 + layers]
        record.update(
            imbalance=sum(imbalance) / layers,
            imbalance_per_layer=imbalance,
            balance=sum(values[3 + layers : 3 + 2 * layers]) / layers,
            z_loss=sum(values[3 + 2 * layers :]) / layers,
        )
    return record


class _Accumulated:
    """Sums a step's micro-batch outputs (the loss and router losses as means)."""

    def __init__(self) -> None:
        self.parts: list[Any] = []

    def add(self, output: Any) -> None:
        self.parts.append(output)

    def result(self) -> Any:
        n = len(self.parts)
        first = self.parts[0]
        return first._replace(
            loss=sum(p.loss.detach() for p in self.parts) / n,
            aux=sum(p.aux.detach() for p in self.parts) / n,
            load=sum(p.load for p in self.parts),
            balance=sum(p.balance for p in self.parts) / n,
            z_loss=sum(p.z_loss for p in self.parts) / n,
        )


def train(config: TrainConfig, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Run (or resume) one training run in ``out_dir``; returns its run-table row.

    ``out_dir`` receives ``metrics.jsonl``, ``checkpoint.pt`` (when ``checkpoint_every``; removed
    when the run finishes), ``model.pt`` (the final weights, when ``keep_weights``) and
    ``config.json``. A checkpoint there is resumed exactly: model, optimizer, step, data
    position (the step) and torch's RNG. The row's ``status`` is ``"finished"`` or
    ``"diverged"``; ``loss`` and ``eval_se`` come from the fixed evaluation.

    Raises
    ------
    CheckpointError
        When ``checkpoint.pt`` is not a loadable checkpoint of this run (nothing in it runs).
    CorpusError
        When ``config.data_dir`` holds a corpus built from another source.
    ValueError
        When the batch does not split into micro-batches of whole router groups.
    """
    rank, world = distributed()
    per_rank, micro = _micro_batches(config, world)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(rank)
    with numerics(config, device):
        return _train(config, out, rank, world, per_rank, micro, device)


def _train(
    config: TrainConfig, out: Path, rank: int, world: int, per_rank: int, micro: int,
    device: torch.device,
) -> dict[str, Any]:  # fmt: skip
    """The body of :func:`train`."""
    data_dir = Path(config.data_dir) if config.data_dir else _default_data_dir(config.data_source)
    if rank == 0:
        # The default folder is the package's cache, rebuilt when stale; a named one is refused.
        prepare_corpus(data_dir, config.data_source or None, rebuild_stale=not config.data_dir)
    if world > 1:
        dist.barrier()
    corpus = Corpus(data_dir)
    windows = eval_windows(corpus, config.model.seq_len, config.eval_tokens)
    torch.manual_seed(config.seed)
    model = Transformer(config.model).to(device)
    counts = parameter_counts(config.model)
    optimizer = build_optimizer(model, config, device)
    start_step, last_eval, last_se, status = 0, math.nan, math.nan, "running"
    blocks: list[float] = []
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        start_step, last_eval, last_se = load_checkpoint(checkpoint, model, optimizer, config.steps)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else None
    step_model: Any = ddp or model
    if config.compile:
        step_model = torch.compile(step_model, dynamic=False, backend=config.compile_backend)
    if rank == 0:
        atomic_write(out / "config.json", json.dumps(config.to_dict(), indent=1))
        truncate_metrics(out / "metrics.jsonl", start_step)
    metrics = (out / "metrics.jsonl").open("a") if rank == 0 else None
    autocast = autocast_for(config, device)
    seq = config.model.seq_len
    tokens_per_step = per_rank * world * seq
    limit = config.diverge_factor * math.log(config.model.vocab)
    moe_layers = model.moe_layers()
    pending: list[torch.Tensor] = []
    lrs: list[float] = []
    started = tick = time.perf_counter()
    done_steps = start_step
    try:
        for step in range(start_step, config.steps):
            lr = config.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = corpus.batch("train", per_rank, seq, config.seed, step, rank)
            x, y = to_device(x, device), to_device(y, device)
            accumulated = _Accumulated()
            for start in range(0, per_rank, micro):
                last_micro = start + micro >= per_rank
                sync_grads = ddp.no_sync() if ddp is not None and not last_micro else nullcontext()
                with sync_grads:
                    with autocast:
                        output = step_model(x[start : start + micro], y[start : start + micro])
                    ((output.loss + output.aux) * (micro / per_rank)).backward()
                accumulated.add(output)
            output = accumulated.result()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for layer, moe in enumerate(moe_layers):
                if moe.config.bias_update_rate:
                    load = output.load[layer].clone()
                    if world > 1:
                        dist.all_reduce(load)
                    update_expert_bias(moe, load)
            pending.append(_step_values(output, grad_norm))
            lrs.append(lr)
            number = step + 1
            evaluate_now = (config.eval_every and number % config.eval_every == 0) or (
                number == config.steps
            )
            save_now = config.checkpoint_every and number % config.checkpoint_every == 0
            if not (evaluate_now or save_now or number % config.sync_every == 0):
                continue
            first = number - len(pending)
            checked = config.steps // 10 + 1
            rows, bad = reduce_window(torch.stack(pending), world, limit, checked, first)
            speed = len(pending) * tokens_per_step / max(time.perf_counter() - tick, 1e-9)
            records = [
                {"step": first + offset + 1, "tokens": (first + offset + 1) * tokens_per_step,
                 "lr": lrs[offset], **_record(values, len(moe_layers)), "tokens_per_s": speed}
                for offset, values in enumerate(rows if bad is None else rows[:bad])
            ]  # fmt: skip
            if device.type == "cuda":
                share = mfu(counts["model_flops_per_token"], speed, world, PEAK_FLOPS["cuda"])
                records = [{**record, "mfu": share} for record in records]
            if evaluate_now and bad is None:
                last_eval, last_se, blocks = evaluate(
                    model, windows, config.eval_batch, device, autocast
                )
                records[-1].update(val_loss=last_eval, val_se=last_se)
            if metrics is not None:
                metrics.writelines(json.dumps(record) + "\n" for record in records)
            pending, lrs = [], []
            if bad is not None:
                done_steps, status = first + bad, "diverged"
                break
            done_steps = number
            if rank == 0 and save_now:
                metrics.flush()  # type: ignore[union-attr]
                save_checkpoint(
                    {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "step": number, "last_eval": last_eval, "last_se": last_se,
                     "rng": rng_state()},
                    checkpoint,
                )  # fmt: skip
            tick = time.perf_counter()
        else:
            status = "finished"
    finally:
        if metrics is not None:
            metrics.close()
    wall = time.perf_counter() - started
    if rank == 0 and status == "finished":
        if config.keep_weights:
            atomic_write(out / "model.pt", lambda path: torch.save(model.state_dict(), path))
        checkpoint.unlink(missing_ok=True)  # finished runs keep metrics (and weights), not state
    row = _row(config, counts, status, done_steps, tokens_per_step, last_eval, last_se,
               len(windows) * seq, wall, start_step, device, world)  # fmt: skip
    row["eval_blocks"] = " ".join(f"{b:.6f}" for b in blocks) if status == "finished" else None
    return row


def _row(
    config: TrainConfig, counts: dict[str, int], status: str, done_steps: int,
    tokens_per_step: int, last_eval: float, last_se: float, eval_tokens: int, wall: float,
    start_step: int, device: torch.device, world: int,
) -> dict[str, Any]:  # fmt: skip
    m = config.model
    tokens = done_steps * tokens_per_step
    if not math.isfinite(last_eval):
        last_eval, last_se = math.log(m.vocab), math.nan  # diverged before any evaluation
    source = Path(config.data_source).stem if config.data_source else "python-stdlib"
    return {
        "run_id": run_id_of(config),
        "source": "bayes_scaling.train",
        "arch": m.arch,
        "n_active": counts["n_active"],
        "n_total": counts["n_total"],
        "tokens": tokens if status == "diverged" else config.steps * tokens_per_step,
        "flops": counts["flops_per_token"] * max(tokens, 1),
        "experts": m.experts,
        "top_k": m.top_k if m.is_moe else 1,
        "granularity": float(m.granularity),
        "shared_experts": m.shared_experts,
        "batch_tokens": float(tokens_per_step),
        "lr": config.lr,
        "loss": last_eval,
        "eval_set": f"{source}-val-{eval_tokens}",
        "seed": config.seed,
        "step": done_steps,
        "status": status,
        "eval_se": last_se if math.isfinite(last_se) else None,
        "eval_tokens": eval_tokens,
        "router": m.router if m.is_moe else "dense",
        "d_model": m.d_model,
        "n_layers": m.n_layers,
        "schedule": config.schedule,
        "embedding_params": counts["embedding"],
        "flops_per_token": counts["flops_per_token"],
        "model_flops_per_token": counts["model_flops_per_token"],
        "wall_s": wall,
        "tokens_per_s": (done_steps - start_step) * tokens_per_step / max(wall, 1e-9),
        "device": device.type,
        "world_size": world,
    }
