"""Held-out extrapolation on the DeepMind routed data (issue 3's acceptance figure).

Fit the hierarchical experts law (models/loss/wang2024.toml) on models up to 370M parameters,
predict every 1.3B run (all archs and expert counts), and report the coverage of the 90%
new-run intervals and the median relative error of the posterior median, next to the
point-estimate baseline (Huber + L-BFGS from Hoffmann et al.'s grid) fitted on the same runs.

    .venv/bin/python benchmarks/heldout_deepmind.py [--draws 1000 --chains 4 --seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_scaling.baseline import fit_huber
from bayes_scaling.datasets import load_dataset
from bayes_scaling.fit import fit
from bayes_scaling.predict import predict_loss
from bayes_scaling.spec import read_spec

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs = load_dataset("deepmind-routing")
    train = runs[runs["model_size_label"] != "1.3B"].reset_index(drop=True)
    test = runs[runs["model_size_label"] == "1.3B"].reset_index(drop=True)
    started = time.perf_counter()
    posterior = fit(
        train,
        read_spec(ROOT / "models/loss/wang2024.toml"),
        draws=args.draws,
        tune=2000,
        target_accept=0.95,
        chains=args.chains,
        random_seed=args.seed,
        progressbar=False,
    )
    bayes_seconds = time.perf_counter() - started
    table = predict_loss(posterior, test[["n_active", "tokens", "experts", "arch"]], probs=(0.9,))
    inside = (table["new_run_low_90"] <= test["loss"]) & (test["loss"] <= table["new_run_high_90"])
    started = time.perf_counter()
    huber = fit_huber(train)
    huber_seconds = time.perf_counter() - started
    baseline = np.exp(huber.log_loss(test))
    rows = [
        {
            "method": "bayes hierarchical (wang2024)",
            "held_out_runs": len(test),
            "coverage_90": float(inside.mean()),
            "median_rel_error": float(np.median(np.abs(table["loss_median"] / test["loss"] - 1))),
            "fit_seconds": bayes_seconds,
            "converged": posterior.convergence().ok,
        },
        {
            "method": "huber + L-BFGS grid (point)",
            "held_out_runs": len(test),
            "coverage_90": float("nan"),
            "median_rel_error": float(np.median(np.abs(baseline / test["loss"] - 1))),
            "fit_seconds": huber_seconds,
            "converged": True,
        },
    ]
    result = pd.DataFrame(rows)
    print(str(posterior.convergence()))
    print(result.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    out = ROOT / "benchmarks" / "results" / "heldout_deepmind.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
