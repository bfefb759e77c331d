"""Decision speed: 4,000 posterior draws x 50 budgets, on this machine, in one run.

Times, side by side: the closed-form frontier (experts law), the numerical frontier (the
joint law of Ludziejewski et al., golden-section per draw and budget), P(MoE better) with data
gain and Efficiency Leverage (two frontiers plus inversions), and one recommendation over
every (arch, expert count, size) candidate. The draws are synthetic, scattered around
published coefficients, so the benchmark needs no fit. Target: each under 5 s on 2 cores.

    .venv/bin/python benchmarks/bench_decide.py [--draws 4000 --budgets 50 --repeats 3]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from _results import save_table

from bayes_scaling.decide import recommend
from bayes_scaling.frontier import frontier
from bayes_scaling.moe import moe_vs_dense
from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import ModelSpec

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "bench_decide.csv"


def synthetic(law: str, centre: dict[str, dict[str, float]], log_e: float, draws: int) -> Posterior:
    """A posterior of ``draws`` draws (4 chains) scattered 2% around ``centre`` per arch."""
    rng = np.random.default_rng(0)
    archs = sorted(centre)
    chains = 4
    shape = (chains, draws // chains, len(archs))
    data = {
        name: (
            ("chain", "draw", "arch"),
            np.array([centre[a][name] for a in archs]) * (1 + 0.02 * rng.standard_normal(shape)),
        )
        for name in centre[archs[0]]
    }
    data["log_e"] = (
        ("chain", "draw", "eval_set"),
        log_e + 0.01 * rng.standard_normal((chains, draws // chains, 1)),
    )
    tree = xr.DataTree.from_dict(
        {"posterior": xr.Dataset(data, coords={"arch": archs, "eval_set": ["synthetic"]})}
    )
    runs = pd.DataFrame(
        {"arch": archs, "experts": [1.0 if a == "dense" else 32.0 for a in archs]}
    ).assign(eval_set="synthetic")
    return Posterior(ModelSpec(law=law, pooling="separate"), runs, tree)


def best_of(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=4000)
    parser.add_argument("--budgets", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    budgets = np.geomspace(1e19, 1e25, args.budgets)
    dense = {"log_a": math.log(482.0), "alpha": 0.348, "gamma": 0.0, "log_b": math.log(2085.0),
             "beta": 0.366}  # fmt: skip
    experts = synthetic(
        "experts", {"dense": dense, "moe": {**dense, "gamma": 0.1}}, math.log(1.82), args.draws
    )
    joint = synthetic(
        "joint",
        {"moe": {"log_a": math.log(35.91), "alpha": -0.1889, "delta": -0.2285, "gamma": 0.0098,
                 "log_b": math.log(35.98), "beta": -0.1775, "omega": 0.5529, "zeta": -0.0259}},
        math.log(1.3637),
        args.draws,
    )  # fmt: skip
    tasks = {
        "frontier, experts law (closed form)": lambda: frontier(experts, budgets, "moe"),
        "frontier, joint law (golden section)": lambda: frontier(joint, budgets, experts=8.0),
        "moe_vs_dense (P, data gain, leverage)": lambda: moe_vs_dense(experts, budgets, "moe"),
        "recommend, 1 budget, 2 archs x 241 sizes": lambda: recommend(experts, 1e22),
        "recommend x 50 budgets": lambda: [recommend(experts, c) for c in budgets],
    }
    rows = []
    for name, task in tasks.items():
        seconds = best_of(task, args.repeats)
        rows.append(
            {
                "task": name,
                "draws": args.draws,
                "budgets": args.budgets,
                "seconds": seconds,
                "under_5s": seconds < 5.0,
            }
        )
        print(f"{name}: {seconds:.3f} s", flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    save_table(table, RESULTS)


if __name__ == "__main__":
    main()
