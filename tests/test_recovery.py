"""Slow tier: parameter recovery from data simulated with known dense and MoE parameters."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_scaling.fit import fit
from bayes_scaling.spec import ModelSpec
from tests.simulate import TRUTH, simulate_runs


@pytest.mark.slow
def test_every_true_value_lies_in_its_94_percent_interval() -> None:
    runs = simulate_runs(seed=21, runs_per_arch=60)
    posterior = fit(
        runs, ModelSpec(law="experts", pooling="hierarchical"), random_seed=3, progressbar=False
    )
    assert posterior.convergence().ok, str(posterior.convergence())
    draws = posterior.idata["posterior"]
    for arch in ("dense", "moe"):
        for name in ("alpha", "beta", "log_a", "log_b") + (("gamma",) if arch == "moe" else ()):
            values = draws[name].sel(arch=arch).to_numpy().ravel()
            low, high = np.quantile(values, [0.03, 0.97])
            assert low <= TRUTH[arch][name] <= high, (arch, name, low, high, TRUTH[arch][name])
    log_e = draws["log_e"].to_numpy().ravel()
    assert np.quantile(log_e, 0.03) <= TRUTH["log_e"] <= np.quantile(log_e, 0.97)
