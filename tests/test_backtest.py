"""Leave-largest-out backtests: cuts, scores against hand-computed values, refits that reuse
the compiled model, and bad cuts refused with the cut named."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import t as student_t

from bayes_scaling.backtest import (
    BacktestError,
    backtest,
    cut_thresholds,
    interval_score,
    score_held_out,
    split_at,
)
from bayes_scaling.compiled import MODELS
from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import ModelSpec
from tests.conftest import SMALL_SAMPLING
from tests.simulate import simulate_runs

RUNS = simulate_runs(seed=3, runs_per_arch=25)
DENSE = RUNS[RUNS["arch"] == "dense"].reset_index(drop=True)
CHINCHILLA = ModelSpec(law="chinchilla", pooling="pooled", name="chinchilla")


def test_default_cuts_leave_the_top_third_half_and_two_thirds_of_the_log_range_out() -> None:
    log_flops = np.log(RUNS["flops"].to_numpy(float))
    low, high = log_flops.min(), log_flops.max()
    thresholds = cut_thresholds(RUNS, "compute", 3)
    expected = high - np.array([1 / 3, 1 / 2, 2 / 3]) * (high - low)
    assert np.allclose(np.log(thresholds), expected)
    assert np.allclose(np.log(cut_thresholds(RUNS, "n_active", 1)), [
        np.log(RUNS["n_active"]).max() - (np.log(RUNS["n_active"]).max()
                                          - np.log(RUNS["n_active"]).min()) / 3])  # fmt: skip


def test_bad_cuts_are_refused_naming_the_cut() -> None:
    with pytest.raises(BacktestError, match="nothing to fit"):
        split_at(RUNS, "compute", float(RUNS["flops"].min()) / 2)
    with pytest.raises(BacktestError, match="nothing held out"):
        split_at(RUNS, "n_active", float(RUNS["n_active"].max()))
    with pytest.raises(BacktestError, match="unknown cut 'params'"):
        cut_thresholds(RUNS, "params")
    with pytest.raises(BacktestError, match="same tokens"):
        cut_thresholds(RUNS.assign(tokens=1e10), "tokens")
    with pytest.raises(BacktestError, match="n_cuts"):
        cut_thresholds(RUNS, "compute", 0)
    moe_only_above = RUNS[(RUNS["arch"] == "dense") | (RUNS["n_active"] > 1e9)]
    fitted, held, unseen = split_at(moe_only_above, "n_active", 1e9)
    assert set(fitted["arch"]) == {"dense"} and set(held["arch"]) == {"dense"}
    assert len(unseen) and set(unseen["arch"]) == {"moe"}


def test_interval_score_is_the_width_plus_the_scaled_miss() -> None:
    score = interval_score(np.array([1.0, 1.0, 1.0]), np.array([2.0] * 3),
                           np.array([1.5, 2.5, 0.8]), 0.9)  # fmt: skip
    assert np.allclose(score, [1.0, 1.0 + 20 * 0.5, 1.0 + 20 * 0.2])


def _fixed_posterior(mu_params: dict[str, float], sigma: float, nu: float, draws: int) -> Posterior:
    """A Chinchilla "posterior" whose every draw has the same parameters."""
    data = {k: (("chain", "draw", "arch"), np.full((1, draws, 1), v)) for k, v in mu_params.items()}
    data["log_e"] = (("chain", "draw", "eval_set"), np.full((1, draws, 1), 0.5))
    data["sigma"] = (("chain", "draw"), np.full((1, draws), sigma))
    data["nu"] = (("chain", "draw"), np.full((1, draws), nu))
    dataset = xr.Dataset(data, coords={"arch": ["dense"], "eval_set": ["default"]})
    runs = pd.DataFrame({"arch": ["dense"], "eval_set": ["default"], "experts": [1]})
    return Posterior(CHINCHILLA, runs, xr.DataTree.from_dict({"posterior": dataset}))


def test_held_out_scores_are_the_student_t_density_coverage_and_error() -> None:
    params = {"log_a": 6.0, "alpha": 0.34, "log_b": 7.0, "beta": 0.3}
    posterior = _fixed_posterior(params, sigma=0.02, nu=5.0, draws=20000)
    log_n, log_d = math.log(1e9), math.log(2e10)
    mu = float(np.logaddexp(np.logaddexp(6.0 - 0.34 * log_n, 7.0 - 0.3 * log_d), 0.5))
    # one run 1 sigma above the law (inside the 80% and 90% new-run intervals, outside 50%)
    loss = math.exp(mu + 0.02)
    held = pd.DataFrame({"run_id": ["a"], "arch": ["dense"], "eval_set": ["default"],
                         "n_active": [1e9], "tokens": [2e10], "experts": [1],
                         "loss": [loss]})  # fmt: skip
    row = score_held_out(posterior, held).iloc[0]
    assert row["lpd"] == pytest.approx(student_t.logpdf(math.log(loss), 5.0, mu, 0.02))
    assert row["predicted"] == pytest.approx(math.exp(mu))
    assert row["rel_error"] == pytest.approx((math.exp(mu) - loss) / loss)
    assert not row["new_run_covered_50"] and row["new_run_covered_80"]
    assert row["new_run_covered_90"] and not row["expected_covered_90"]  # no parameter spread
    half = 0.02 * student_t.ppf(0.95, 5.0)
    width = math.exp(mu + half) - math.exp(mu - half)
    assert row["interval_score_90"] == pytest.approx(width, rel=0.02)


def test_backtest_refits_reuse_the_compiled_model_and_score_only_larger_runs() -> None:
    hits = MODELS.hits
    result = backtest(DENSE, CHINCHILLA, cut="n_active", n_cuts=2, extend=0, **SMALL_SAMPLING)
    assert MODELS.hits - hits >= 1  # the second cut at least reuses the first's compilation
    assert len(result.thresholds) == 2
    for threshold in result.thresholds:
        assert result.fits[threshold].runs["n_active"].max() <= threshold
        part = result.scores[result.scores["threshold"] == threshold]
        assert (part["value"] > threshold).all() and (part["extrapolation"] > 1).all()
        assert len(part) == int((DENSE["n_active"] > threshold).sum())
    summary = result.summary()
    # the true law fitted: extrapolation errors stay within a few percent, coverage is high
    assert summary["median_abs_rel_error"] < 0.03
    assert summary["coverage_new_run_90"] >= 0.7
    assert json.loads(json.dumps(result.to_dict()))["cut"] == "n_active"
