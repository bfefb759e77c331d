"""Efficiency Leverage on the package's own CPU runs (`trainer-cpu`), measured and fitted.

1. A dense loss posterior (`loss/chinchilla`, its own sampler settings) on the sweep's dense
   runs at the base recipe (lr 0.01, 512-token batches, seed 0): the scaling runs on the
   standard eval split and the base-size runs on the larger one (each eval set its own
   irreducible loss).
2. EL of every finished MoE run at the same recipe (token choice, expert choice, Mixture of
   Tokens; E in {4, 8}, G in {1, 2}; seeds 0-2), per draw of that posterior: the compute at
   which dense, on the run's own tokens-per-parameter path, reaches the run's loss, over the
   run's 6 N D (`bayes_scaling.leverage.leverage_measurements`).
3. Tian et al.'s law fitted to those measurements (priors centred on the paper's constants,
   one intercept per router), and its EL with 90% intervals per (router, E, G) at the base
   run's compute; the paper's law at the same points for comparison.

    .venv/bin/python benchmarks/leverage_trainer.py [--seed 0]

The dense fit samples 3,000 draws after 2,000 warm-up (11 runs: the hypothesis' defaults
leave the bulk ESS below 400). Writes benchmarks/results/leverage_trainer.csv (per
configuration) and leverage_trainer_constants.csv (the fitted constants).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _results import save_table

from bayes_scaling.datasets import load_dataset
from bayes_scaling.datasets.loaders import trainer_scaling_runs
from bayes_scaling.fit import fit
from bayes_scaling.leverage import TIAN2025, fit_leverage, leverage_measurements
from bayes_scaling.posterior import check_convergence
from bayes_scaling.spec import read_spec

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
BASE = {"lr": 0.01, "batch_tokens": 512.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs = load_dataset("trainer-cpu")
    runs = runs[runs["status"] == "finished"]
    recipe = np.isclose(runs["lr"], BASE["lr"]) & np.isclose(
        runs["batch_tokens"], BASE["batch_tokens"]
    )
    scaling = trainer_scaling_runs(runs)
    dense = pd.concat([
        scaling[scaling["arch"] == "dense"],
        runs[recipe & (runs["arch"] == "dense") & (runs["seed"] == 0)
             & (runs["eval_set"] != scaling["eval_set"].iloc[0])],
    ]).drop_duplicates("run_id").reset_index(drop=True)  # fmt: skip
    start = time.perf_counter()
    # 11 runs: the hypothesis' default chains leave bulk ESS below 400, so sample longer.
    posterior = fit(dense, read_spec("loss/chinchilla"), random_seed=args.seed,
                    progressbar=False, draws=3000, tune=2000)  # fmt: skip
    print(f"dense posterior on {len(dense)} runs ({dense['eval_set'].nunique()} eval sets): "
          f"{posterior.convergence()} [{time.perf_counter() - start:.0f} s]")  # fmt: skip
    moe = runs[recipe & (runs["experts"] > 1)].reset_index(drop=True)
    measured = leverage_measurements(posterior, moe)
    unreachable = measured[measured["unreachable"] > 0]
    if len(unreachable):
        print(f"left out (dense never reaches their loss on some draws): "
              f"{unreachable['run_id'].tolist()}")  # fmt: skip
    measured = measured[measured["unreachable"] == 0].reset_index(drop=True)
    start = time.perf_counter()
    law = fit_leverage(measured, random_seed=args.seed, draws=2000, tune=1000)
    report = check_convergence(law.idata)
    print(f"EL law on {len(measured)} runs: {report} [{time.perf_counter() - start:.0f} s]")
    columns = ["run_id", "log_el_median", "log_el_sd", "activation_ratio", "tian_granularity",
               "flops"]  # fmt: skip
    merged = moe.merge(measured[columns], on="run_id", suffixes=("_run", ""))
    rows = []
    for (arch, experts, g), group in merged.groupby(["arch", "experts", "granularity"]):
        point = group.sort_values("flops").iloc[len(group) // 2]
        band = law.predict(point["activation_ratio"], point["tian_granularity"], point["flops"],
                           router=arch)  # fmt: skip
        el = np.exp(group["log_el_median"])
        rows.append({
            "router": arch, "experts": experts, "G": g, "runs": len(group),
            "A": point["activation_ratio"], "G_tian": point["tian_granularity"],
            "flops": point["flops"],
            "measured_el_median": float(np.median(el)),
            "measured_el_min": float(el.min()), "measured_el_max": float(el.max()),
            "fitted_el": float(band["median"][0]), "fitted_low_90": float(band["low"][0]),
            "fitted_high_90": float(band["high"][0]),
            "tian_el": float(np.ravel(TIAN2025(point["activation_ratio"],
                                               point["tian_granularity"], point["flops"]))[0]),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    constants = []
    for name in ("a_mu", "d", "gamma", "beta", "sigma"):
        values = law.draws[name]
        low, mid, high = np.quantile(values, [0.05, 0.5, 0.95])
        constants.append({"constant": name, "median": mid, "low_90": low, "high_90": high,
                          "tian": getattr(TIAN2025, name.replace("_mu", ""), np.nan)})  # fmt: skip
    for i, router in enumerate(law.routers):
        low, mid, high = np.quantile(law.draws["a"][:, i], [0.05, 0.5, 0.95])
        constants.append({"constant": f"a[{router}]", "median": mid, "low_90": low,
                          "high_90": high, "tian": TIAN2025.a})  # fmt: skip
    constants_table = pd.DataFrame(constants)
    print(constants_table.round(4).to_string(index=False))
    print(f"converged: {report.ok}")
    save_table(table, RESULTS / "leverage_trainer.csv")
    save_table(constants_table, RESULTS / "leverage_trainer_constants.csv")


if __name__ == "__main__":
    main()
