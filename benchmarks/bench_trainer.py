"""Trainer throughput on this machine: dense vs every router (token choice with its grouped and
loop dispatch, at G = 1 and 2, with aux-loss-free balancing; expert choice; Mixture of Tokens)
at equal active parameters, with peak memory, side by side in one run.

Each configuration trains for ``--steps`` optimizer steps (after 3 warm-up steps) in its own
subprocess, so the peak memory is its own: allocated memory on CUDA; on the CPU the peak
resident memory above what the process held after its imports.
Ratios are relative to the dense model, measured in the same run.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 30 --d-model 64 --layers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from _results import save_table

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "bench_trainer.csv"


def measure(spec: dict) -> dict:
    """Train ``spec`` for its steps in this process; tokens/s and peak memory."""
    import torch

    from bayes_scaling.train.config import ModelConfig, TrainConfig
    from bayes_scaling.train.model import Transformer, parameter_counts
    from bayes_scaling.train.moe import update_expert_bias
    from bayes_scaling.train.runtime import autocast_for, build_optimizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # On the CPU: the resident-memory peak above what the imports already hold (~0.8 GB).
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    config = ModelConfig(**spec["model"])
    settings = TrainConfig(model=config, lr=1e-3)
    torch.manual_seed(0)
    model = Transformer(config).to(device)
    optimizer = build_optimizer(model, settings, device)  # the trainer's (fused on CUDA)
    x = torch.randint(0, 256, (spec["batch"], config.seq_len), device=device)
    autocast = autocast_for(settings, device)  # bf16 on CUDA, fp32 on the CPU

    def step() -> None:
        with autocast:
            output = model(x, x)
        (output.loss + output.aux).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for layer, moe in enumerate(model.moe_layers()):
            if config.bias_update_rate:
                update_expert_bias(moe, output.load[layer])

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    seconds = time.perf_counter() - started
    counts = parameter_counts(config)
    return {
        "tokens_per_s": spec["steps"] * spec["batch"] * config.seq_len / seconds,
        "peak_memory_mib": peak,
        "n_active": counts["n_active"],
        "n_total": counts["n_total"],
        "device": device.type,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return
    shape = {"d_model": args.d_model, "n_layers": args.layers, "seq_len": args.seq_len,
             "n_heads": 4}  # fmt: skip
    moe = {**shape, "experts": args.experts}
    e = args.experts
    variants = {
        "dense": {**shape},
        f"topk E={e} k=1, grouped": {**moe, "dispatch": "grouped"},
        f"topk E={e} k=1, loop": {**moe, "dispatch": "loop"},
        f"topk E={e} k=1 G=2, grouped": {**moe, "granularity": 2, "dispatch": "grouped"},
        f"topk E={e} k=1, aux-free bias": {**moe, "bias_update_rate": 1e-3,
                                           "aux_loss_coef": 0.0},
        f"expert_choice E={e} k=1": {**moe, "router": "expert_choice"},
        f"mot E={e} k=1": {**moe, "router": "mot"},
    }  # fmt: skip
    rows = []
    for name, model in variants.items():
        spec = {"model": model, "batch": args.batch, "steps": args.steps}
        result = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            capture_output=True, text=True, check=True, env={**os.environ},
        )  # fmt: skip
        row = {"variant": name, **json.loads(result.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(f"{name}: {row['tokens_per_s']:.0f} tokens/s, {row['peak_memory_mib']:.0f} MiB")
    table = pd.DataFrame(rows)
    table["speed_vs_dense"] = table["tokens_per_s"] / table.loc[0, "tokens_per_s"]
    table["memory_vs_dense"] = table["peak_memory_mib"] / table.loc[0, "peak_memory_mib"]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    save_table(table, RESULTS)


if __name__ == "__main__":
    main()
