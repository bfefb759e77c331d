"""The fit-small / predict-largest tasks of benchmarks/calibration.py, one family per public study.

A task fits a shipped hypothesis on a data set's smaller runs and scores its larger ones. The
cuts are each source's own natural split, decided once for every family alike (the SOURCE.md
"suggested held-out split" where there is one), never tuned to the results:

- ``chinchilla``: Epoch AI's read-back; fit C <= 1e21 FLOPs; fit N <= 1e9 parameters.
- ``deepmind``: Clark et al.'s routed runs, hierarchical wang2024; fit N <= 370M (score 1.3B),
  and fit E <= 64 (score E = 128..512).
- ``porian``: four configurations of Porian et al.'s isoFLOP points (RefinedWeb and
  OpenWebText2, tuned and untuned hyperparameters, validation loss); fit C <= 1.6e18.
- ``pythia``: LAMBADA (0-shot) NLL of Pythia's standard and deduplicated runs at six
  checkpoints from 13k steps on; fit the 70M..1.4B models, score 2.8B..12B.
- ``steplaw``: the best run of each of Step Law's 17 dense (N, D) cells; fit 6 N D <= 1e20.
- ``trainer``: this package's own CPU sweep (scaling runs, dense and three routers), wang2024;
  fit n_active <= 26k, score the largest models.

``RIVALS`` are the other functional forms each task's law is stacked with (issue 13: stacking as
protection against the wrong form): Kaplan et al.'s joint form and the shifted power law for the
dense Chinchilla law; Clark et al.'s routing law for the experts law.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from bayes_scaling.datasets import load_dataset
from bayes_scaling.datasets.loaders import trainer_scaling_runs


@dataclass(frozen=True)
class Task:
    """One backtest: ``runs()`` gives the table; runs with ``column <= threshold`` are fitted."""

    family: str
    name: str
    model: str
    runs: Callable[[], pd.DataFrame]
    column: str
    threshold: float

    @property
    def key(self) -> str:
        return f"{self.family}--{self.name}"


def _pythia(variant: str) -> pd.DataFrame:
    runs = load_dataset("pythia")
    steps = (13000, 43000, 73000, 103000, 133000, 143000)
    keep = (runs["variant"] == variant) & (runs["eval_set"] == "lambada-0shot")
    return runs[keep & runs["step"].isin(steps)].reset_index(drop=True)


def _porian(config: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        runs = load_dataset("porian")
        return runs[runs["config"] == config].reset_index(drop=True)

    return load


def _steplaw_cells() -> pd.DataFrame:
    runs = load_dataset("steplaw-dense")
    best = runs.loc[runs.groupby(["n_active", "tokens"])["loss"].idxmin()]
    return best.drop(columns=["lr", "batch_tokens"]).reset_index(drop=True)


def _trainer() -> pd.DataFrame:
    return trainer_scaling_runs(load_dataset("trainer-cpu")).reset_index(drop=True)


PORIAN = (
    "rw/tuned/short/const/standard/val",
    "owt2/tuned/short/const/standard/val",
    "rw/base/short/chinchilla/standard/val",
    "owt2/base/long/kaplan/standard/val",
)

TASKS: list[Task] = [
    Task("chinchilla", "C<=1e21", "loss/chinchilla", lambda: load_dataset("chinchilla"),
         "flops", 1e21),
    Task("chinchilla", "N<=1e9", "loss/chinchilla", lambda: load_dataset("chinchilla"),
         "n_active", 1e9),
    Task("deepmind", "N<=370M", "loss/wang2024", lambda: load_dataset("deepmind-routing"),
         "n_active", 4e8),
    Task("deepmind", "E<=64", "loss/wang2024", lambda: load_dataset("deepmind-routing"),
         "experts", 64),
    *[Task("porian", config.replace("/", "-"), "loss/chinchilla", _porian(config), "flops",
           1.6e18) for config in PORIAN],
    Task("pythia", "standard", "loss/chinchilla", lambda: _pythia("standard"), "n_active", 1.5e9),
    Task("pythia", "deduped", "loss/chinchilla", lambda: _pythia("deduped"), "n_active", 1.5e9),
    Task("steplaw", "cells C<=1e20", "loss/chinchilla", _steplaw_cells, "flops", 1e20),
    Task("trainer", "N<=26k", "loss/wang2024", _trainer, "n_active", 2.6e4),
]  # fmt: skip

RIVALS: dict[str, tuple[str, ...]] = {
    "loss/chinchilla": ("loss/kaplan2020", "loss/shifted-power"),
    "loss/wang2024": ("loss/clark2022",),
}
