"""Backtests: wall time of a 3-cut backtest, and the DeepMind hypothesis ranking (issue 12).

1. ``timing``: a 3-cut leave-largest-out backtest by compute (fit below the top 1/3, 1/2, 2/3
   of the log FLOP range) of ``chinchilla`` on Chinchilla and of ``wang2024`` on DeepMind, at
   the hypothesis files' sampler settings; compiled-model reuse shows in the cache hits.
2. ``ranking``: on DeepMind, every hypothesis fitted on the models up to 370M (n_active <= 1e9)
   and scored on the 1.3B runs, ranked by held-out elpd, next to two stacked predictives of
   those same fits, weighted on the fitted runs only: by LOO, and for extrapolation (a backtest
   by n_active inside the fitted runs, ``bayes_scaling.stacking.extrapolation_weights``). Each
   fit is calibrated (``calibrated=True``: its discrepancy rate updated by that same inner
   backtest, as ``fit --calibrate`` does), so every row scores the package's predictive.

    .venv/bin/python benchmarks/bench_backtest.py [--part timing|ranking|both] [--seed 0]

Writes benchmarks/results/bench_backtest.csv (timing) and backtest_deepmind.csv (ranking).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
from _results import RESULTS, save_table

from bayes_scaling.backtest import backtest, summarize
from bayes_scaling.compare import stacked_backtest
from bayes_scaling.compiled import MODELS
from bayes_scaling.datasets import load_dataset
from bayes_scaling.spec import read_spec

RANKED = ("wang2024", "wang2024-pooled", "wang2024-separate", "clark2022", "chinchilla",
          "kaplan2020", "shifted-power")  # fmt: skip


def timing(seed: int) -> None:
    rows = []
    for data, model in (("chinchilla", "chinchilla"), ("deepmind-routing", "wang2024")):
        runs = load_dataset(data)
        hits, misses = MODELS.hits, MODELS.misses
        started = time.perf_counter()
        result = backtest(runs, read_spec(model), cut="compute", n_cuts=3, random_seed=seed)
        seconds = time.perf_counter() - started
        summary = result.summary()
        rows.append({
            "data": data, "hypothesis": model, "cuts": 3, "runs": len(runs),
            "held_out": int(summary["held_out"]), "seconds": round(seconds, 1),
            "compiled": MODELS.misses - misses, "reused": MODELS.hits - hits,
            "converged_cuts": int(result.by_cut()["converged"].sum()),
            "coverage_new_run_90": round(summary["coverage_new_run_90"], 3),
            "interval_score_90": round(summary["interval_score_90"], 4),
        })  # fmt: skip
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    save_table(table, RESULTS / "bench_backtest.csv")


def ranking(seed: int) -> None:
    runs = load_dataset("deepmind-routing")
    results = {}
    for model in RANKED:
        started = time.perf_counter()
        results[model] = backtest(
            runs, read_spec(model), "n_active", thresholds=[1e9], random_seed=seed, calibrated=True
        )
        print(f"{model}: {time.perf_counter() - started:.0f} s", flush=True)
    rows = []
    for name, result in results.items():
        converged = bool(result.by_cut()["converged"].all())
        rows.append({"hypothesis": name, "converged": converged, **result.summary()})
    for by in ("loo", "extrapolation"):
        started = time.perf_counter()
        stacked = summarize(stacked_backtest(results, by, random_seed=seed))
        seconds = time.perf_counter() - started
        print(f"stacked by {by}: {seconds:.0f} s", flush=True)
        rows.append({"hypothesis": f"stacked ({by} weights)", "converged": None, **stacked})
    table = pd.DataFrame(rows).sort_values("elpd", ascending=False)
    columns = ["hypothesis", "converged", "held_out", "elpd", "coverage_expected_90",
               "coverage_new_run_50", "coverage_new_run_80", "coverage_new_run_90",
               "interval_score_90", "median_abs_rel_error"]  # fmt: skip
    print(table[columns].round(4).to_string(index=False))
    save_table(table.round(5), RESULTS / "backtest_deepmind.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("timing", "ranking", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.part in ("ranking", "both"):
        ranking(args.seed)
    if args.part in ("timing", "both"):
        timing(args.seed)


if __name__ == "__main__":
    main()
