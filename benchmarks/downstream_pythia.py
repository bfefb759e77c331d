"""Downstream accuracy on Pythia: the direct laws against the two-stage path, by backtest.

Fit on the 70M-1.4B models (the data's suggested split; 2.8B is not used; 0-shot, standard
runs, every checkpoint past each hypothesis' min_tokens; direct-c: each model's checkpoint
nearest 20 tokens per parameter), predict the
6.9B and 12B models' accuracy on LAMBADA, ARC-Easy, PIQA and SciQ (direct-nd and two-stage:
their final checkpoints, 5.3x and 9.4x the largest fitted compute, about 7x on average;
direct-c: their ratio-20 checkpoints). Each hypothesis at its file's sampler settings, seed 0.
Krajewski et al. report 1.96% mean relative error for the direct law at 6.7x compute
extrapolation and 6.4-6.7% for two-stage fits.

    .venv/bin/python benchmarks/downstream_pythia.py

Writes benchmarks/results/downstream_pythia.csv (one row per hypothesis) and
downstream_pythia_points.csv (every held-out prediction).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from _results import save_table

from bayes_scaling.datasets import load_dataset
from bayes_scaling.downstream import backtest_accuracy
from bayes_scaling.posterior import check_convergence

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
HELD_OUT = ("6.9b", "12b")
PAPER = {"direct-nd": "1.96% (direct, 6.7x)", "direct-c": "1.96% (direct, 6.7x)",
         "two-stage": "6.4-6.7% (two-stage)"}  # fmt: skip


def main() -> None:
    pythia = load_dataset("pythia")
    pythia = pythia[(pythia["num_fewshot"] == 0) & (pythia["variant"] == "standard")]
    pythia = pythia[pythia["size"] != "2.8b"].reset_index(drop=True)
    held = pythia["size"].isin(HELD_OUT)
    final = pythia["step"] == pythia["step"].max()
    rows, points = [], []
    for name in ("direct-nd", "direct-c", "two-stage"):
        # direct-c picks its own checkpoints of the held-out models; the others score the final ones
        table = pythia if name == "direct-c" else pythia[~held | final]
        table = table.reset_index(drop=True)
        start = time.perf_counter()
        fitted, predicted = backtest_accuracy(table, name, table["size"].isin(HELD_OUT))
        seconds = time.perf_counter() - start
        report = check_convergence(fitted.idata)
        largest_fit = (6 * fitted.table["n_active"] * fitted.table["tokens"]).max()
        ratio = (6 * predicted["n_active"] * predicted["tokens"] / largest_fit).mean()
        rows.append({
            "hypothesis": name, "fitted_rows": len(fitted.table), "held_out": len(predicted),
            "mean_rel_error": predicted["rel_error"].mean(),
            "max_rel_error": predicted["rel_error"].max(),
            "coverage_90": predicted["covered"].mean(),
            "mean_width_90": (predicted["new_high"] - predicted["new_low"]).mean(),
            "compute_ratio": ratio, "converged": report.ok, "seconds": seconds,
            "paper": PAPER[name],
        })  # fmt: skip
        print(f"{name}: {report} [{seconds:.0f} s]")
        points.append(predicted.assign(hypothesis=name))
    table = pd.DataFrame(rows)
    print(table.round(4).to_string(index=False))
    detail = pd.concat(points, ignore_index=True)
    print(detail[["hypothesis", "task", "n_active", "acc", "acc_median", "new_low", "new_high",
                  "rel_error"]].round(3).to_string(index=False))  # fmt: skip
    save_table(table, RESULTS / "downstream_pythia.csv")
    save_table(detail.drop(columns=[c for c in detail if c.endswith("_id")], errors="ignore")
               .replace({np.nan: None}), RESULTS / "downstream_pythia_points.csv")  # fmt: skip


if __name__ == "__main__":
    main()
