"""Fit-time benchmark: the package's converged posterior against the peers' fits, in one run.

For each task, on the same data, one after the other on the same machine, each method in a
fresh process (so "cold" pays imports' side effects and compilation, and peak memory is the
method's own):

- **bayes cold**: :func:`bayes_scaling.fit.fit` with the hypothesis' own default settings
  (compilation, sampling, the convergence check, and any automatic extension it triggers);
- **bayes warm**: in the same process afterwards, a refit on a different subset of the runs,
  which reuses the compiled model (:mod:`bayes_scaling.compiled`);
- **huber top-32 + bootstrap**: the point fit people run (Huber + L-BFGS-B from the best 32 of
  Epoch AI's 4,500 starts, then 200 run-resampled refits warm-started from the optimum and the
  resample's 4 best starts, in one worker process per core with one BLAS thread each;
  :mod:`bayes_scaling.baseline`); for the Step Law grid, the Step Law recipe (keep runs within
  0.25% of each cell's best, least squares);
- **simple-scaling-laws** (``pip install -e '.[bench]'``; skipped with a note when missing),
  ``fit`` with its default settings on N and D (it has no experts term: on DeepMind's data,
  where D is constant, that is N alone).

Wall time excludes importing the libraries; ``peak_rss_mib`` is the largest resident set of the
process or any worker it started. For Bayesian fits: the convergence check, min bulk ESS, and
min ESS per second. ``vs_baseline`` is wall time over the baseline's, in the same run.

    .venv/bin/python benchmarks/bench_fit.py [--tasks chinchilla deepmind-routing steplaw-dense]
        [--seed 0] [--resamples 200]

Results: ``benchmarks/results/bench_fit.csv``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from _results import RESULTS, save_table


@dataclass(frozen=True)
class Task:
    """One data set, the hypothesis fitted to it, and the other subset a warm refit sees."""

    dataset: str
    model: str
    warm: str  # a pandas query selecting the warm refit's runs
    warm_label: str
    baseline: str  # "huber", "huber-dense" or "recipe"


TASKS = {
    "chinchilla": Task("chinchilla", "chinchilla", "flops <= 1e21", "C <= 1e21", "huber-dense"),
    "deepmind-routing": Task(
        "deepmind-routing", "wang2024", "n_active <= 3.7e8", "N <= 370M", "huber"
    ),
    # the warm refit keeps every (N, D) cell: a grid model's cells are part of its structure
    "steplaw-dense": Task(
        "steplaw-dense", "hyper/steplaw", "index % 5 != 0", "4 of 5 runs", "recipe"
    ),
}


def _peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, workers) / 1024.0


def _bayes(task: Task, seed: int, resamples: int) -> list[dict[str, Any]]:
    from bayes_scaling.compiled import MODELS
    from bayes_scaling.datasets import load_dataset
    from bayes_scaling.fit import fit
    from bayes_scaling.spec import find_spec, read_spec

    runs = load_dataset(task.dataset)
    spec = read_spec(find_spec(task.model))
    rows = []
    for label, table in (("cold", runs), (f"warm ({task.warm_label})", runs.query(task.warm))):
        hits = MODELS.hits
        started = time.perf_counter()
        posterior = fit(table, spec, random_seed=seed, progressbar=False)
        seconds = time.perf_counter() - started
        report = posterior.convergence()
        settings = posterior.sampler
        rows.append(
            {
                "method": f"bayes {spec.name} {label}",
                "runs": len(table),
                "wall_s": seconds,
                "converged": report.ok,
                "max_rhat": report.max_rhat,
                "min_bulk_ess": report.min_ess,
                "min_ess_per_s": report.min_ess / seconds,
                "divergences": report.divergences,
                "attempts": len(settings["attempts"]),
                "reused_compiled_model": MODELS.hits > hits,
                "settings": f"{settings['chains']} x {settings['draws']} draws, "
                f"{settings['tune']} warm-up, {settings['adaptation']}, "
                f"accept {settings['target_accept']}",
            }
        )
    return rows


def _huber(task: Task, seed: int, resamples: int) -> list[dict[str, Any]]:
    from bayes_scaling.baseline import bootstrap_huber, steplaw_recipe
    from bayes_scaling.datasets import load_dataset

    runs = load_dataset(task.dataset)
    started = time.perf_counter()
    if task.baseline == "recipe":
        steplaw_recipe(runs)
        method, settings = "Step Law recipe (0.25% of cell best, least squares)", ""
    else:
        bootstrap_huber(runs, resamples, seed, experts=task.baseline == "huber")
        method = f"huber top-32 + {resamples} bootstrap refits"
        settings = f"{os.cpu_count()} worker processes"
    seconds = time.perf_counter() - started
    return [{"method": method, "runs": len(runs), "wall_s": seconds, "settings": settings}]


def _simple_scaling_laws(task: Task, seed: int, resamples: int) -> list[dict[str, Any]]:
    import simple_scaling_laws

    from bayes_scaling.datasets import load_dataset

    runs = load_dataset(task.dataset)
    frame = pd.DataFrame(
        {
            "training_run_id": runs["run_id"].astype(str),
            "model_size__params": runs["n_active"].astype(float),
            "dataset_size__tokens": runs["tokens"].astype(float),
            "test_loss__cross_entropy": runs["loss"].astype(float),
        }
    )
    started = time.perf_counter()
    simple_scaling_laws.fit(frame, seed=seed)
    seconds = time.perf_counter() - started
    version = simple_scaling_laws.__version__
    return [
        {
            "method": f"simple-scaling-laws {version} (default settings, N and D only)",
            "runs": len(runs),
            "wall_s": seconds,
            "settings": "",
        }
    ]


METHODS: dict[str, Callable[[Task, int, int], list[dict[str, Any]]]] = {
    "bayes": _bayes,
    "baseline": _huber,
    "simple-scaling-laws": _simple_scaling_laws,
}


def _child(method: str, task: Task, seed: int, resamples: int, conn: Any) -> None:
    try:
        rows = METHODS[method](task, seed, resamples)
        for row in rows:
            row["peak_rss_mib"] = _peak_rss_mib()
        conn.send(rows)
    except ImportError as error:
        conn.send([{"method": f"{method} (not installed: {error.name})", "wall_s": float("nan")}])
    except Exception as error:  # reported in the table, not swallowed
        conn.send([{"method": f"{method} failed: {type(error).__name__}: {error}"}])
        raise


def measure(method: str, task: Task, seed: int, resamples: int) -> list[dict[str, Any]]:
    """Run one method in a fresh process and return its rows."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(method, task, seed, resamples, send))
    process.start()
    rows = receive.recv()
    process.join()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_fit.csv")
    args = parser.parse_args()
    rows = []
    for name in args.tasks:
        task = TASKS[name]
        found = []
        for method in args.methods:
            if method == "simple-scaling-laws" and task.baseline == "recipe":
                continue  # a grid of lr x batch is not a loss-vs-scale fit
            found += measure(method, task, args.seed, args.resamples)
            print(pd.DataFrame(found[-2:]).to_string(index=False), flush=True)
        baseline = next((r["wall_s"] for r in found if not r["method"].startswith(("bayes",
                        "simple"))), float("nan"))  # fmt: skip
        for row in found:
            row["task"] = name
            row["vs_baseline"] = row.get("wall_s", float("nan")) / baseline
        rows += found
    table = pd.DataFrame(rows)
    columns = ["task", "method", "runs", "wall_s", "vs_baseline", "peak_rss_mib", "converged",
               "max_rhat", "min_bulk_ess", "min_ess_per_s", "divergences", "attempts",
               "reused_compiled_model", "settings"]  # fmt: skip
    table = table.reindex(columns=columns)
    table["machine"] = f"{platform.machine()} x{os.cpu_count()} ({platform.python_version()})"
    print(table.drop(columns="machine").to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    save_table(table, args.out)


if __name__ == "__main__":
    main()
