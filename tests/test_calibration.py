"""The discrepancy in use: compute counts as a direction, within-data calibration learns the
rate from how the law errs, the rate travels with the posterior and drives the intervals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_scaling.calibration import CalibrationError, calibrate, inner_splits
from bayes_scaling.discrepancy import KAPPA_GRID, DiscrepancyRate, extrapolation, law_axes
from bayes_scaling.posterior import Posterior
from bayes_scaling.predict import predict_loss, predict_point
from bayes_scaling.runs import validate_runs
from bayes_scaling.spec import ModelSpec
from tests.simulate import simulate_runs

QUICK = {"draws": 200, "tune": 200, "chains": 2}


def test_compute_is_an_axis_so_an_isoflop_bowl_beyond_the_budget_is_extrapolation() -> None:
    assert law_axes("chinchilla") == ("flops", "n_active", "tokens")
    assert law_axes("experts") == ("flops", "n_active", "tokens", "experts")
    fitted = pd.DataFrame(
        {"arch": "dense", "n_active": [1e7, 1e9], "tokens": [1e11, 1e9], "flops": [6e18, 6e18]}
    )
    # inside the N and D ranges, 10x the largest budget
    point = pd.DataFrame({"arch": ["dense"], "n_active": [1e8], "tokens": [1e11], "flops": [6e19]})
    reach = extrapolation(fitted, point, law_axes("chinchilla"))
    assert reach["excess_n_active"].iloc[0] == 0.0 and reach["excess_tokens"].iloc[0] == 0.0
    assert reach["distance"].iloc[0] == pytest.approx(math.log(10))


def _dense(seed: int, bend: float) -> pd.DataFrame:
    """Simulated dense runs; above the median compute the loss bends away from the law by
    ``bend`` nats of ln loss per e-fold of compute (a misfit that grows with scale)."""
    runs = simulate_runs(seed=seed, runs_per_arch=36)
    runs = runs[runs["arch"] == "dense"].reset_index(drop=True)
    log_c = np.log(runs["flops"].to_numpy(float))
    excess = np.clip(log_c - np.median(log_c), 0.0, None)
    return validate_runs(runs.assign(loss=runs["loss"] * np.exp(bend * excess)))


@pytest.fixture(scope="module")
def fits(small_fit) -> dict[str, Posterior]:  # type: ignore[no-untyped-def]
    spec = ModelSpec(law="chinchilla", pooling="pooled")
    return {
        name: small_fit(_dense(3, bend), spec, random_seed=2, **QUICK)
        for name, bend in (("true law", 0.0), ("bending", 0.03))
    }


def test_calibration_learns_a_small_rate_for_the_true_law_and_a_large_one_for_a_misfit(
    fits: dict[str, Posterior], tmp_path: Path
) -> None:
    prior = DiscrepancyRate(source="flat")
    rates = {
        name: calibrate(posterior, prior=prior, random_seed=1, **QUICK)
        for name, posterior in fits.items()
    }
    # The bend is 0.03 nats per e-fold of compute: the learned rate's interval holds it and lies
    # above the true law's median (a flat prior: ~0.002; ~0.04 [0.015, 0.15] for the bend).
    low, high = rates["bending"].quantile([0.05, 0.95])
    assert low < 0.03 < high
    assert rates["true law"].quantile(0.5)[0] < 0.005 < low
    assert "within-data" in rates["bending"].source
    # The rate is stored on the posterior, saved with it, and drives its predictions.
    assert fits["bending"].discrepancy is rates["bending"]
    loaded = Posterior.load(fits["bending"].save(tmp_path / "bent.nc"))
    assert loaded.discrepancy == rates["bending"]
    far = {"n_active": [3e11], "tokens": [6e12], "arch": ["dense"]}
    a, b = predict_loss(fits["bending"], far), predict_loss(loaded, far)
    assert np.allclose(a["new_run_high_90"], b["new_run_high_90"])


def test_shares_and_extrapolation_ratio_follow_the_distance(fits: dict[str, Posterior]) -> None:
    posterior = fits["true law"]
    spike = np.abs(KAPPA_GRID - 0.02).argmin()
    posterior.discrepancy = DiscrepancyRate(
        KAPPA_GRID, np.where(np.arange(KAPPA_GRID.size) == spike, 0.0, -np.inf)
    )
    runs = posterior.fitted_runs
    inside = {"n_active": [float(runs["n_active"].median())], "arch": ["dense"]}
    inside["tokens"] = [float(runs["tokens"].median())]
    table = predict_loss(posterior, pd.DataFrame(inside))
    assert table["extrapolation"].iloc[0] == 1.0 and table["share_discrepancy"].iloc[0] == 0.0
    far = predict_point(posterior, {"n_active": 1e12, "tokens": 2e13, "arch": "dense"})
    assert far.extrapolation > 50 and far.shares is not None
    assert sum(far.shares.values()) == pytest.approx(1.0)
    assert far.shares["discrepancy"] > 0.5  # at kappa 0.02, ~4 e-folds out, it dominates
    # a rate with all its mass at zero gives the law's own intervals
    posterior.discrepancy = DiscrepancyRate(KAPPA_GRID, np.where(KAPPA_GRID == 0.0, 0.0, -np.inf))
    point = pd.DataFrame({"n_active": [1e12], "tokens": [2e13], "arch": ["dense"]})
    zero, plain = predict_loss(posterior, point), predict_loss(posterior, point, discrepancy=False)
    assert np.allclose(zero["loss_high_90"], plain["loss_high_90"])
    posterior.discrepancy = None


def test_inner_splits_cut_the_top_of_the_log_range_and_refuse_nonsense() -> None:
    runs = _dense(3, 0.0)
    ((threshold, below, above),) = inner_splits(runs, "n_active", (0.25,))
    log_n = np.log(runs["n_active"])
    assert math.log(threshold) == pytest.approx(log_n.max() - 0.25 * (log_n.max() - log_n.min()))
    assert len(below) + len(above) == len(runs) and (above["n_active"] > threshold).all()
    with pytest.raises(CalibrationError, match="fraction"):
        inner_splits(runs, "n_active", (1.5,))
    with pytest.raises(CalibrationError, match="unknown cut"):
        inner_splits(runs, "depth", (0.3,))


def test_heavy_tailed_noise_is_reported_as_misfit(small_fit) -> None:  # type: ignore[no-untyped-def]
    runs = _dense(5, 0.0)
    outliers = np.arange(len(runs)) % 5 == 0
    runs = runs.assign(loss=np.where(outliers, runs["loss"] * 1.4, runs["loss"]))
    with pytest.warns(UserWarning, match=r"degrees of freedom.*\(misfit\)"):
        small_fit(runs, ModelSpec(law="chinchilla", pooling="pooled"), random_seed=0, **QUICK)
