"""The trainer's side of run planning: a sweep grid as candidate runs, a plan as run configs.

:func:`candidate_runs` turns a sweep file's grid into the candidate table that
:func:`bayes_scaling.design.plan_runs` ranks: each config's run-table columns as training it
would write them (``n_active``, ``tokens``, ``flops``, ... from
:func:`~bayes_scaling.train.accounting.parameter_counts`, no training needed) and the config
itself. :func:`plan_configs` reads the configs back from a ``plan.json``, for ``bayes-scaling
sweep --plan``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from bayes_scaling.train.accounting import parameter_counts
from bayes_scaling.train.config import TrainConfig, run_id_of
from bayes_scaling.train.sweep import SweepError, expand_sweep

__all__ = ["candidate_runs", "plan_configs"]


def candidate_row(config: TrainConfig) -> dict[str, Any]:
    """The run-table columns a finished run of ``config`` will have (all but its loss)."""
    m = config.model
    counts = parameter_counts(m)
    tokens_per_step = config.batch_size * m.seq_len
    tokens = config.steps * tokens_per_step
    return {
        "run_id": run_id_of(config),
        "arch": m.arch,
        "n_active": float(counts["n_active"]),
        "n_total": float(counts["n_total"]),
        "tokens": float(tokens),
        "flops": float(counts["flops_per_token"] * tokens),
        "experts": float(m.experts),
        "top_k": float(m.top_k if m.is_moe else 1),
        "granularity": float(m.granularity),
        "batch_tokens": float(tokens_per_step),
        "lr": config.lr,
        "config": config.flat(),
    }


def candidate_runs(sweep_file: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per config of the sweep's grid (see :func:`candidate_row`)."""
    _, configs = expand_sweep(sweep_file)
    return pd.DataFrame([candidate_row(config) for config in configs])


def plan_configs(path: str | os.PathLike[str]) -> tuple[str, list[TrainConfig]]:
    """The plan's name (``plan-<file stem>``) and its runs' trainer configs, in plan order.

    Raises
    ------
    SweepError
        When the file is not a plan, or a run has no trainer config or a bad one (the run's
        position is named).
    """
    path = Path(path)
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SweepError(f"{path}: not a plan (JSON) file ({error})") from error
    runs = plan.get("runs") if isinstance(plan, dict) else None
    if not isinstance(runs, list):
        raise SweepError(f"{path}: not a plan: no list of 'runs' (write one with `plan`)")
    configs = []
    for number, run in enumerate(runs, start=1):
        config = run.get("config") if isinstance(run, dict) else None
        if not isinstance(config, dict):
            raise SweepError(
                f"{path}, run {number}: no trainer 'config'; only plans whose candidates came "
                "from a sweep file (`plan --candidates SWEEP.toml`) can be trained"
            )
        try:
            configs.append(TrainConfig.from_flat(config))
        except (TypeError, ValueError) as error:
            raise SweepError(f"{path}, run {number}: {error}") from error
    if not configs:
        raise SweepError(f"{path}: the plan has no runs")
    return f"plan-{path.stem}", configs
