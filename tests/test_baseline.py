"""The Huber + L-BFGS baseline recovers a known law and bootstraps from its optimum."""

from __future__ import annotations

import numpy as np

from bayes_scaling.baseline import NAMES, bootstrap_huber, fit_huber
from tests.simulate import TRUTH, simulate_runs


def test_huber_fit_recovers_dense_exponents_from_a_start_near_the_truth() -> None:
    runs = simulate_runs(seed=8, runs_per_arch=60)
    dense = runs[runs["arch"] == "dense"]
    start = np.array([6.0, 0.3, 0.0, 7.0, 0.3, 0.5])
    result = fit_huber(dense, experts=False, starts=[start])
    assert abs(result.params["alpha"] - TRUTH["dense"]["alpha"]) < 0.05
    assert abs(result.params["beta"] - TRUTH["dense"]["beta"]) < 0.05
    assert result.params["gamma"] == 0.0


def test_bootstrap_refits_differ_and_start_from_the_full_optimum(monkeypatch) -> None:
    runs = simulate_runs(seed=9, runs_per_arch=20)
    starts_seen = []
    import bayes_scaling.baseline as baseline

    original = baseline.fit_huber

    def spy(table, experts=True, starts=None, delta=1e-3):
        starts_seen.append(None if starts is None else len(starts))
        if starts is None:  # the full-data fit: a small grid keeps the test fast
            starts = [
                np.array([6.0, 0.3, 0.1, 7.0, 0.3, 0.5]),
                np.array([5.0, 0.5, 0.0, 5.0, 0.5, 0.0]),
            ]
        return original(table, delta=delta, experts=experts, starts=starts)

    monkeypatch.setattr(baseline, "fit_huber", spy)
    full, fits = bootstrap_huber(runs, resamples=5, random_seed=1)
    assert starts_seen == [None] + [1] * 5
    alphas = [fit.params["alpha"] for fit in fits]
    assert len(set(np.round(alphas, 8))) > 1 and set(full.params) == set(NAMES)
