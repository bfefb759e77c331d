"""Fit-time benchmark: the full posterior against the point-estimate baseline, in one run.

For each data set (Chinchilla with the dense law; DeepMind routed runs with the hierarchical
experts law) this times, on the same machine and in the same process:

- nutpie (the package default) and PyMC's own NUTS: wall time including model building and
  compilation, minimum bulk ESS over all parameters, minimum ESS per second, divergences and
  whether the fit passes the convergence check;
- the baseline users run today: Huber + L-BFGS-B from Hoffmann et al.'s grid of starts, then a
  bootstrap of ``--resamples`` refits, each started from the full-data optimum.

Ratios in the last column are relative to the bootstrap baseline of the same data set, so
they survive a noisy, shared machine. Results go to ``benchmarks/results/bench_fit.csv``.

    .venv/bin/python benchmarks/bench_fit.py [--datasets chinchilla deepmind-routing]
        [--samplers nutpie pymc] [--resamples 200] [--draws 1000 --chains 4 --seed 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from _results import save_table

from bayes_scaling.baseline import bootstrap_huber
from bayes_scaling.datasets import load_dataset
from bayes_scaling.fit import fit
from bayes_scaling.spec import read_spec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_fit.csv"

# data set -> (hypothesis file, whether the baseline fits gamma, warmup draws, target_accept).
# The hierarchical DeepMind fit needs 2000 warmup draws: with four archs the population
# spreads mix slowly, and 1000 left an R-hat above 1.01 on some seeds.
TASKS = {
    "chinchilla": ("models/loss/chinchilla.toml", False, 1000, 0.9),
    "deepmind-routing": ("models/loss/wang2024.toml", True, 2000, 0.95),
}


def _timed(function: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def bench_dataset(name: str, samplers: list[str], args: argparse.Namespace) -> list[dict]:
    """Rows of the table for one data set: one per sampler and one for the baseline."""
    spec_file, experts, tune, target_accept = TASKS[name]
    runs = load_dataset(name)
    spec = read_spec(ROOT / spec_file)
    rows = []
    for sampler in samplers:
        posterior, seconds = _timed(
            lambda sampler=sampler: fit(
                runs,
                spec,
                draws=args.draws,
                tune=tune,
                target_accept=target_accept,
                chains=args.chains,
                random_seed=args.seed,
                sampler=sampler,
                progressbar=False,
            )
        )
        report = posterior.convergence()  # type: ignore[attr-defined]
        rows.append(
            {
                "dataset": name,
                "runs": len(runs),
                "method": f"bayes {spec.name} ({sampler}, {args.chains} x {args.draws}"
                f" draws, {tune} warmup)",
                "wall_s": seconds,
                "min_bulk_ess": report.min_ess,
                "min_ess_per_s": report.min_ess / seconds,
                "divergences": report.divergences,
                "converged": report.ok,
            }
        )
        print(f"{name} {sampler}: {seconds:.1f} s, {report}", flush=True)
    (full, _refits), seconds = _timed(
        lambda: bootstrap_huber(
            runs, resamples=args.resamples, random_seed=args.seed, experts=experts
        )
    )
    rows.append(
        {
            "dataset": name,
            "runs": len(runs),
            "method": f"huber grid + {args.resamples} bootstrap refits",
            "wall_s": seconds,
            "min_bulk_ess": float("nan"),
            "min_ess_per_s": float("nan"),
            "divergences": 0,
            "converged": True,
        }
    )
    print(f"{name} baseline: {seconds:.1f} s, optimum {full.params}", flush=True)  # type: ignore[attr-defined]
    baseline = rows[-1]["wall_s"]
    for row in rows:
        row["wall_vs_bootstrap"] = row["wall_s"] / baseline
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--samplers", nargs="+", default=["nutpie", "pymc"])
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--draws", type=int, default=1000, help="per chain")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = [row for name in args.datasets for row in bench_dataset(name, args.samplers, args)]
    table = pd.DataFrame(rows)
    table["machine"] = f"{platform.machine()} x{os.cpu_count()} ({platform.python_version()})"
    print(table.drop(columns="machine").to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    save_table(table, args.out)


if __name__ == "__main__":
    main()
