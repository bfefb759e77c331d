"""Fit time of the latent-optimum lr / batch model against the number of runs (2 cores).

Fits models/hyper/steplaw.toml on nested subsets of the Step Law dense grid (every 4th, every
2nd, then all 17 cells), each time with the same sampler settings, and reports wall time
(including compilation), runs, cells, min bulk ESS and seconds per 1,000 runs, side by side.

    .venv/bin/python benchmarks/bench_hyper.py [--draws 1000 --chains 4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from _results import save_table

from bayes_scaling.datasets import load_dataset
from bayes_scaling.fit import fit
from bayes_scaling.spec import read_spec

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_hyper.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    args = parser.parse_args()
    runs = load_dataset("steplaw-dense")
    cells = runs.groupby(["n_active", "tokens"]).ngroup()
    spec = read_spec(ROOT / "models" / "hyper" / "steplaw.toml")
    rows = []
    for every in (4, 2, 1):
        subset = runs[cells % every == 0].reset_index(drop=True)
        started = time.perf_counter()
        posterior = fit(
            subset, spec, draws=args.draws, tune=args.draws, chains=args.chains, progressbar=False
        )
        seconds = time.perf_counter() - started
        report = posterior.convergence()
        fitted = len(posterior.fitted_runs)
        rows.append(
            {
                "cells": int(cells[cells % every == 0].nunique()),
                "runs_fitted": fitted,
                "wall_s": seconds,
                "s_per_1000_runs": 1000 * seconds / fitted,
                "min_bulk_ess": report.min_ess,
                "converged": report.ok,
            }
        )
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    save_table(table, RESULTS)


if __name__ == "__main__":
    main()
