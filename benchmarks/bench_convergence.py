"""Converged by default: every shipped hypothesis, fitted with its own default settings on every
public data set it applies to, against the package's convergence check.

A row per (hypothesis, data set): whether the check passed (R-hat <= 1.01, bulk ESS >= 400, no
divergent transitions), max R-hat, min bulk ESS, divergent transitions, how many times ``fit``
extended the warm-up, the settings of the saved attempt, and the wall time (model building and
compilation included; on a shared 2-core machine read seconds as rough). No sampler option is
passed: the hypothesis file's ``[sampler]`` section is what is being tested.

Which data a hypothesis applies to (decided here, once, for every hypothesis alike):

- loss laws with experts (wang2024 and its pooled / separate ladder, clark2022,
  ludziejewski2025): DeepMind's routed runs, whole and fit-small (models <= 370M, the held-out
  task), and the package's own trainer sweep (dense + MoE, its runs at the base lr and batch);
- the dense law (chinchilla): Epoch AI's Chinchilla, whole and fit-small (C <= 1e21 FLOPs);
- hyperparameter laws: the Step Law dense grid (steplaw, compute, wang2024), the Step Law
  MoE grid (steplaw-sparsity), both grids together (wang2024, whose claim is about dense
  and MoE at equal loss), and the trainer sweep's lr x batch grids (steplaw-pooled, the law
  for grids of a few cells per arch).

Left out, with the reason: krajewski2024 (no public data set varies granularity outside an lr x
batch grid), Porian et al.'s isoFLOP points (15 configurations whose hyperparameters differ by
design, so one law across them is misspecified) and Pythia (its loss is LAMBADA's last-word NLL
along a learning-rate schedule, not a pre-training loss).

    .venv/bin/python benchmarks/bench_convergence.py [--only wang2024 chinchilla] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from _results import RESULTS, save_table

from bayes_scaling.datasets import load_dataset
from bayes_scaling.datasets.loaders import trainer_grid_runs, trainer_scaling_runs
from bayes_scaling.fit import fit
from bayes_scaling.spec import read_spec

Subset = Callable[[pd.DataFrame], pd.DataFrame]


def _all(runs: pd.DataFrame) -> pd.DataFrame:
    return runs


def _small_models(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["n_active"] <= 3.7e8]


def _small_compute(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["flops"] <= 1e21]


def _scaling_grid(runs: pd.DataFrame) -> pd.DataFrame:
    return trainer_scaling_runs(runs)


def _lr_batch_grid(runs: pd.DataFrame) -> pd.DataFrame:
    return trainer_grid_runs(runs)


# The loss hypotheses with an expert count, each fitted on the same routed and trainer data.
EXPERT_LAWS = (
    "loss/wang2024",
    "loss/wang2024-pooled",
    "loss/wang2024-separate",
    "loss/clark2022",
    "loss/ludziejewski2025",
)
# (hypothesis, data set, subset label, subset)
TASKS: list[tuple[str, str, str, Subset]] = [
    ("loss/chinchilla", "chinchilla", "all", _all),
    ("loss/chinchilla", "chinchilla", "C <= 1e21", _small_compute),
    *[
        (model, "deepmind-routing", label, subset)
        for model in EXPERT_LAWS
        for label, subset in (("all", _all), ("N <= 370M", _small_models))
    ],
    *[(model, "trainer-cpu", "scaling runs", _scaling_grid) for model in EXPERT_LAWS],
    ("hyper/steplaw", "steplaw-dense", "all", _all),
    ("hyper/compute", "steplaw-dense", "all", _all),
    ("hyper/wang2024", "steplaw-dense", "all", _all),
    # Wang et al.'s claim is about dense and MoE together: both Step Law grids in one fit.
    ("hyper/wang2024", "steplaw-dense+steplaw-moe", "all", _all),
    ("hyper/steplaw-sparsity", "steplaw-moe", "all", _all),
    # The trainer's own lr x batch grids (dense and top-k, 2 cells each): the pooled law.
    ("hyper/steplaw-pooled", "trainer-cpu", "lr x batch grid", _lr_batch_grid),
]


def _load(dataset: str) -> pd.DataFrame:
    """A registered data set, or ``a+b``: two of them in one table (dense + MoE grids)."""
    return pd.concat([load_dataset(name) for name in dataset.split("+")], ignore_index=True)


def run_task(model: str, dataset: str, label: str, subset: Subset, seed: int) -> dict:
    """Fit one hypothesis on one data set with default settings; one row of the table."""
    runs = subset(_load(dataset))
    spec = read_spec(model)
    started = time.perf_counter()
    posterior = fit(runs, spec, random_seed=seed, progressbar=False)
    seconds = time.perf_counter() - started
    report = posterior.convergence()
    last = posterior.sampler["attempts"][-1]
    return {
        "hypothesis": model,
        "data": dataset,
        "subset": label,
        "runs": len(posterior.runs),
        "passed": report.ok,
        "max_rhat": round(report.max_rhat, 4),
        "min_bulk_ess": round(report.min_ess),
        "divergent_transitions": report.divergences,
        "extensions": len(posterior.sampler["attempts"]) - 1,
        "tune": last["tune"],
        "draws": last["draws"],
        "target_accept": last["target_accept"],
        "adaptation": last["adaptation"],
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="substrings of hypothesis or data set names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "bench_convergence.csv"))
    parser.add_argument(
        "--merge", action="store_true", help="replace only the rows run now in an existing --out"
    )
    args = parser.parse_args()
    rows = []
    for model, dataset, label, subset in TASKS:
        if args.only and not any(key in f"{model} {dataset}" for key in args.only):
            continue
        row = run_task(model, dataset, label, subset, args.seed)
        rows.append(row)
        print(" | ".join(f"{key}={value}" for key, value in row.items()), flush=True)
    table = pd.DataFrame(rows)
    if args.merge and Path(args.out).exists():
        old = pd.read_csv(args.out)
        key = ["hypothesis", "data", "subset"]
        fresh = set(map(tuple, table[key].to_numpy()))
        kept = old[[tuple(row) not in fresh for row in old[key].to_numpy()]]
        table = pd.concat([kept, table], ignore_index=True)
    print(table.to_string(index=False))
    save_table(table, args.out)


if __name__ == "__main__":
    main()
