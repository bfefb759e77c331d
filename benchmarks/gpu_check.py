"""GPU check: dense vs every router (token choice at two granularities, expert choice, Mixture
of Tokens) at equal active parameters on one GPU (an H200), compiled, in about 5 minutes.

Needs only torch, numpy and pandas (no PyMC stack): run it from the repository root with
``PYTHONPATH=.``. Each run trains through :func:`bayes_scaling.train.loop.train` exactly as a
sweep does (bf16 autocast, ``torch.compile(dynamic=False)``, fused AdamW, TF32, pinned
memory, no host sync inside the step), then evaluates on the fixed validation windows.

Writes to ``$OUT`` (else ``out/gpu-check``), rewritten after every run so a timeout still leaves
results: ``gpu_runs.jsonl`` (the run table), ``gpu_summary.csv`` and ``gpu_summary.json``
(tokens/s and MFU as the median over the second half of each run's sync windows, the first
window's time, which holds the compilation, peak memory, graph breaks), ``gpu_metrics.jsonl``
(every step of every run) and ``environment.json``. Run folders and the corpus go to a scratch
folder (``--scratch``, default under the system's temporary folder), not ``$OUT``.

MFU counts nanoGPT's / nanochat's model FLOPs (6 N + 6 V d + 12 L T d per token, see
:mod:`bayes_scaling.train.accounting`) against the dense bf16 peak of an H100 / H200 SXM,
989 TFLOP/s.

    cd <repo> && PYTHONPATH=. OMP_NUM_THREADS=8 python3 benchmarks/gpu_check.py   # on the GPU
    PYTHONPATH=. python3 benchmarks/gpu_check.py --tiny    # the same code on a CPU, compiled

``--tiny`` runs the same runs at CPU size with bf16 autocast and ``torch.compile`` (inductor,
or ``--backend aot_eager`` to trace the same graphs without code generation, as the test does).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import sysconfig
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayes_scaling._io import atomic_write
from bayes_scaling.train.accounting import PEAK_FLOPS
from bayes_scaling.train.config import TrainConfig
from bayes_scaling.train.data import stdlib_files
from bayes_scaling.train.loop import train
from bayes_scaling.train.sweep import append_row

# Equal active parameters: E = 8 experts, one expert's worth per token (k G = G).
# In order of importance: if compilation is slow, the last ones are skipped (BUDGET_S).
ROUTERS = {
    "dense": {},
    "topk": {"experts": 8, "router": "topk"},
    "expert_choice": {"experts": 8, "router": "expert_choice"},
    "mot": {"experts": 8, "router": "mot"},
    "topk-g2": {"experts": 8, "router": "topk", "granularity": 2},
}
SIZES = {
    # ~50M non-embedding active parameters, 32 x 1024 tokens per step, 160 steps.
    "gpu": {"d_model": 1024, "n_layers": 4, "n_heads": 8, "seq_len": 1024, "batch_size": 32,
            "lr": 1e-3, "tokens": 160 * 32 * 1024, "eval_tokens": 0, "sync_every": 10},
    # The same runs at CPU size: d_model 64 keeps grouped_mm's alignment at G = 2.
    "tiny": {"d_model": 64, "n_layers": 1, "n_heads": 2, "seq_len": 64, "batch_size": 8,
             "lr": 3e-3, "tokens": 12 * 8 * 64, "eval_tokens": 64 * 64, "sync_every": 4},
}  # fmt: skip
BUDGET_S = 260.0  # no new run starts after this (the check must end within ~6 minutes)


def corpus_source() -> str:
    """The standard library's folder when it holds enough ``.py`` text, else torch's own
    sources (a stripped interpreter may ship only bytecode)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files(stdlib) if stdlib.is_dir() else []
    if sum(f.stat().st_size for f in files[:2000]) > 2_000_000:
        return ""  # the trainer's default: this interpreter's standard library
    return str(Path(torch.__file__).parent)


def _environment(args: argparse.Namespace) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "peak_flops_used_for_mfu": PEAK_FLOPS["cuda"] if cuda else None,
        "peak_note": "dense bf16 tensor-core peak of an H100/H200 SXM (989 TFLOP/s)",
        "size": "tiny" if args.tiny else "gpu",
        "backend": args.backend,
        "corpus_source": corpus_source() or sysconfig.get_paths()["stdlib"],
    }


def summarise(name: str, row: dict[str, Any], metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary line: steady-state speed (second half of the windows), first-window time."""
    speeds = sorted({(m["step"], m["tokens_per_s"]) for m in metrics})
    windows = list(dict.fromkeys(m["tokens_per_s"] for m in metrics))  # one value per window
    steady = windows[len(windows) // 2 :] or windows
    first_steps = sum(1 for m in metrics if m["tokens_per_s"] == windows[0]) if windows else 0
    tokens_per_step = row["batch_tokens"]
    mfus = [m["mfu"] for m in metrics if "mfu" in m and m["tokens_per_s"] in steady]
    return {
        "variant": name,
        "arch": row["arch"],
        "status": row["status"],
        "n_active": row["n_active"],
        "n_total": row["n_total"],
        "loss": row["loss"],
        "eval_se": row["eval_se"],
        "steps": len(speeds),
        "tokens_per_s": float(np.median(steady)) if steady else np.nan,
        "mfu": float(np.median(mfus)) if mfus else np.nan,
        "first_window_s": first_steps * tokens_per_step / windows[0] if windows else np.nan,
        "wall_s": row["wall_s"],
    }


def run_one(name: str, config: TrainConfig, folder: Path, out: Path) -> dict[str, Any]:
    """Train one variant; its row, metrics and summary line (peak memory, graph breaks)."""
    from torch._dynamo.utils import counters

    counters.clear()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    row = train(config, folder)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else np.nan
    append_row(out / "gpu_runs.jsonl", row)
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").open()]
    with (out / "gpu_metrics.jsonl").open("a") as stream:
        stream.writelines(json.dumps({"variant": name, **m}) + "\n" for m in metrics)
    summary = summarise(name, row, metrics)
    summary["peak_memory_mib"] = peak
    summary["graph_breaks"] = sum(counters["graph_break"].values())
    return summary


def write_summary(out: Path, lines: list[dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame(lines)
    if "tokens_per_s" in table and (table["variant"] == "dense").any():
        dense = table.loc[table["variant"] == "dense"].iloc[0]
        table["speed_vs_dense"] = table["tokens_per_s"] / dense["tokens_per_s"]
        table["memory_vs_dense"] = table["peak_memory_mib"] / dense["peak_memory_mib"]
    atomic_write(out / "gpu_summary.csv", table.to_csv(index=False))
    atomic_write(out / "gpu_summary.json", table.to_json(orient="records", indent=1))
    return table


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the same runs at CPU size")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--only", nargs="*", help="variants to run (default: all)")
    parser.add_argument("--scratch", default=str(Path(tempfile.gettempdir()) / "gpu-check"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = Path(os.environ.get("OUT") or "out/gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("gpu_runs.jsonl", "gpu_metrics.jsonl"):
        (out / stale).unlink(missing_ok=True)
    scratch = Path(args.scratch)
    environment = _environment(args)
    atomic_write(out / "environment.json", json.dumps(environment, indent=1))
    print(json.dumps(environment), flush=True)
    shared = {**SIZES["tiny" if args.tiny else "gpu"], "precision": "bf16", "compile": True,
              "compile_backend": args.backend, "data_source": corpus_source(),
              "data_dir": str(scratch / "corpus")}  # fmt: skip
    lines: list[dict[str, Any]] = []
    table = pd.DataFrame()
    for name in args.only or list(ROUTERS):
        elapsed = time.perf_counter() - started
        if elapsed > BUDGET_S and not args.tiny:
            print(f"{name}: skipped, {elapsed:.0f} s spent (budget {BUDGET_S:.0f} s)", flush=True)
            continue
        print(f"{name}: starting at {elapsed:.0f} s", flush=True)
        config = TrainConfig.from_flat({**shared, **ROUTERS[name]})
        try:
            lines.append(run_one(name, config, scratch / "runs" / name, out))
        except Exception as error:  # record it and go on: the other variants still count
            traceback.print_exc()
            lines.append({"variant": name, "status": f"error: {type(error).__name__}: {error}"})
        print(json.dumps(lines[-1], default=str), flush=True)
        table = write_summary(out, lines)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"), flush=True)
    print(f"done in {time.perf_counter() - started:.0f} s", flush=True)
    return table


if __name__ == "__main__":
    main()
