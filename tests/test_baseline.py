"""The Huber + L-BFGS baseline recovers a known law and bootstraps from its optimum."""

from __future__ import annotations

import numpy as np

from bayes_scaling.baseline import (
    NAMES,
    _objective,
    bootstrap_huber,
    fit_huber,
    grid_starts,
    rank_starts,
)
from bayes_scaling.laws import log_inputs
from tests.simulate import TRUTH, simulate_runs


def test_huber_fit_recovers_dense_exponents_from_a_start_near_the_truth() -> None:
    runs = simulate_runs(seed=8, runs_per_arch=60)
    dense = runs[runs["arch"] == "dense"]
    start = np.array([6.0, 0.3, 0.0, 7.0, 0.3, 0.5])
    result = fit_huber(dense, experts=False, starts=[start])
    assert abs(result.params["alpha"] - TRUTH["dense"]["alpha"]) < 0.05
    assert abs(result.params["beta"] - TRUTH["dense"]["beta"]) < 0.05
    assert result.params["gamma"] == 0.0


def test_epoch_grid_has_4500_starts_and_ranking_puts_the_best_first() -> None:
    assert grid_starts(experts=False).shape == (4500, len(NAMES))
    assert grid_starts(experts=True).shape == (9000, len(NAMES))
    runs = simulate_runs(seed=8, runs_per_arch=30)
    dense = runs[runs["arch"] == "dense"]
    starts = grid_starts(experts=False)
    ranked = rank_starts(dense, starts, top=5)
    inputs = log_inputs(dense.assign(granularity=1.0))
    log_loss = np.log(dense["loss"].to_numpy(float))
    every = np.array([_objective(start, inputs, log_loss, 1e-3) for start in starts])
    expected = np.sort(every)[:5]
    got = [_objective(start, inputs, log_loss, 1e-3) for start in ranked]
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_default_fit_starts_from_the_32_best_ranked_grid_points() -> None:
    runs = simulate_runs(seed=8, runs_per_arch=40)
    dense = runs[runs["arch"] == "dense"]
    default = fit_huber(dense, experts=False)
    ranked = rank_starts(dense, grid_starts(experts=False), top=32)
    assert default == fit_huber(dense, experts=False, starts=ranked)
    assert default.objective < fit_huber(dense, experts=False, starts=ranked[-1:]).objective


def test_bootstrap_is_the_same_on_any_number_of_workers_and_refits_differ() -> None:
    runs = simulate_runs(seed=9, runs_per_arch=12)
    dense = runs[runs["arch"] == "dense"]
    full, serial = bootstrap_huber(dense, resamples=4, random_seed=1, experts=False, workers=1)
    _, parallel = bootstrap_huber(dense, resamples=4, random_seed=1, experts=False, workers=2)
    assert [f.params for f in serial] == [f.params for f in parallel]
    alphas = [fit.params["alpha"] for fit in serial]
    assert len(set(np.round(alphas, 8))) > 1 and set(full.params) == set(NAMES)
