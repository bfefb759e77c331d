"""The replay benchmark's Step Law pieces: the coarse-grid strategy's order, which bought runs a
bowl fit can use, the grid optimum a target cell is scored against, and the interval score."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bench_design = pytest.importorskip("bench_design")


def grid(n_active: float, tokens: float, lrs: list[float], batches: list[float]) -> pd.DataFrame:
    rows = [
        {"arch": "dense", "n_active": n_active, "n_total": n_active, "tokens": tokens,
         "lr": lr, "batch_tokens": b, "flops": 6 * n_active * tokens, "loss": 3.0}
        for lr in lrs for b in batches
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_grid_order_sweeps_every_cell_coarsely_before_filling_any_in() -> None:
    lrs, batches = [1e-4, 2e-4, 4e-4], [1e5, 2e5, 4e5]
    pool = pd.concat([grid(2e8, 4e10, lrs, batches), grid(1e8, 2e9, lrs, batches)])
    pool = pool.reset_index(drop=True)
    order = bench_design.grid_order(pool)
    assert sorted(order) == list(pool.index)  # every run, once
    first = pool.loc[order[:8]]
    # The cheaper cell's 4 corners of the lattice (every other lr and batch), then the other's.
    assert (first["n_active"].iloc[:4] == 1e8).all() and (first["n_active"].iloc[4:] == 2e8).all()
    assert set(first["lr"]) == {1e-4, 4e-4} and set(first["batch_tokens"]) == {1e5, 4e5}
    assert (pool.loc[order[8:], "n_active"].iloc[:5] == 1e8).all()  # then the rest, cheapest first


def test_fittable_holds_back_a_lone_run_in_its_cell() -> None:
    pool = pd.concat([grid(1e8, 2e9, [1e-4, 2e-4], [1e5]), grid(2e8, 4e10, [1e-4], [1e5])])
    kept = bench_design.fittable(pool, "lr-batch")
    assert len(kept) == 2 and (kept["n_active"] == 1e8).all()
    assert len(bench_design.fittable(pool, "loss")) == 3  # a loss law has no cells


def test_grid_optimum_is_the_geometric_mean_of_the_near_best_runs() -> None:
    cell = grid(1e8, 2e9, [1e-4, 4e-4, 1.6e-3], [1e5, 4e5])
    cell["loss"] = [3.0, 3.1, 2.0, 2.004, 2.5, 2.001]  # best 2.0; 2.004 and 2.001 within 0.25%
    log_lr, log_batch = bench_design.grid_optimum(cell)
    good = cell[cell["loss"] <= 2.005]
    assert log_lr == pytest.approx(np.log(good["lr"]).mean())
    assert log_batch == pytest.approx(np.log(good["batch_tokens"]).mean())
    assert math.exp(log_lr) == pytest.approx((4e-4 * 4e-4 * 1.6e-3) ** (1 / 3))


def test_interval_score_charges_twenty_times_a_miss_at_90_percent() -> None:
    assert bench_design.interval_score(1.0, 2.0, 1.5, 0.9) == pytest.approx(1.0)
    assert bench_design.interval_score(1.0, 2.0, 0.9, 0.9) == pytest.approx(1.0 + 20 * 0.1)
    assert bench_design.interval_score(1.0, 2.0, 2.5, 0.9) == pytest.approx(1.0 + 20 * 0.5)


def test_fittable_waits_for_a_second_run_on_the_bowl() -> None:
    cell = grid(1e8, 2e9, [1e-4, 1e-2], [1e5])
    cell["loss"] = [3.0, 9.0]  # the high-lr run blew up: the cell has one run on its bowl
    assert bench_design.fittable(cell, "lr-batch", off_bowl_above=0.1).empty
    assert len(bench_design.fittable(cell, "lr-batch", off_bowl_above=10.0)) == 2
