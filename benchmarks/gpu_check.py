"""GPU check: a short dense-vs-MoE sweep on one GPU (an H200) in under 8 minutes.

Writes the run table (``gpu_runs.jsonl``) and a throughput summary (``gpu_throughput.csv``:
tokens/s and MFU, the median over the second half of each run's steps) to ``$OUT`` when set,
else to ``out/gpu-check``. ``--tiny`` runs the same code at CPU size, to test the script before
spending device time.

    python benchmarks/gpu_check.py            # on the GPU machine
    python benchmarks/gpu_check.py --tiny     # on a CPU, ~1 minute
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bayes_scaling.train.loop import TrainConfig, train
from bayes_scaling.train.sweep import append_row

SIZES = {  # name -> (shared keys, per-run grid)
    "gpu": ({"seq_len": 512, "n_heads": 8, "n_layers": 6, "batch_size": 64, "lr": 1e-3,
             "tokens": 40_000_000, "compile": True, "eval_batches": 16},
            [{"d_model": d, "experts": e} for d in (384, 768) for e in (1, 8)]),
    "tiny": ({"seq_len": 64, "n_heads": 2, "n_layers": 1, "batch_size": 8, "lr": 3e-3,
              "tokens": 20_000, "eval_batches": 2},
             [{"d_model": d, "experts": e} for d in (16, 32) for e in (1, 4)]),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    out = Path(os.environ.get("OUT") or "out/gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    shared, grid = SIZES["tiny" if args.tiny else "gpu"]
    print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")
    rows = []
    for point in grid:
        config = TrainConfig.from_flat({**shared, **point, "data_dir": str(out / "corpus")})
        folder = out / "runs" / f"d{point['d_model']}-e{point['experts']}"
        row = train(config, folder)
        append_row(out / "gpu_runs.jsonl", row)
        metrics = [json.loads(line) for line in (folder / "metrics.jsonl").open()]
        steady = metrics[len(metrics) // 2 :]
        rows.append(
            {
                "run_id": row["run_id"],
                "arch": row["arch"],
                "n_active": row["n_active"],
                "n_total": row["n_total"],
                "loss": row["loss"],
                "status": row["status"],
                "tokens_per_s": float(np.median([m["tokens_per_s"] for m in steady])),
                "mfu": float(np.median([m.get("mfu", np.nan) for m in steady])),
                "wall_s": row["wall_s"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "gpu_throughput.csv", index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
