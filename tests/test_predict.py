"""Prediction: intervals nest, far extrapolation works, requests are checked."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_scaling.fit import Posterior
from bayes_scaling.laws import LAWS
from bayes_scaling.predict import PredictionError, law_draws, predict_loss
from bayes_scaling.spec import ModelSpec
from tests.simulate import TRUTH, simulate_runs


@pytest.fixture(scope="module")
def posterior(small_fit) -> Posterior:  # type: ignore[no-untyped-def]
    return small_fit(
        simulate_runs(seed=4, runs_per_arch=25), ModelSpec(), random_seed=5, draws=300, tune=300
    )


def test_intervals_nest_and_new_runs_are_wider(posterior: Posterior) -> None:
    table = predict_loss(
        posterior,
        {
            "n_active": [1e8, 1e10],
            "tokens": [2e9, 2e11],
            "arch": ["dense", "moe"],
            "experts": [1, 32],
        },
    )
    assert (table["loss_low_90"] <= table["loss_low_50"]).all()
    assert (table["loss_low_50"] <= table["loss_median"]).all()
    assert (table["loss_median"] <= table["loss_high_50"]).all()
    assert (table["loss_high_50"] <= table["loss_high_90"]).all()
    # Inside the data (extrapolation 1) a new run's interval strictly holds the expected
    # loss's; far out the discrepancy dominates both, and the noise only widens the new-run
    # interval to within the Monte Carlo error of 600 draws' tail quantiles.
    inside = table["extrapolation"] == 1.0
    assert inside.iloc[0] and not inside.iloc[1]
    assert (table["new_run_low_90"][inside] < table["loss_low_90"][inside]).all()
    assert (table["new_run_high_90"][inside] > table["loss_high_90"][inside]).all()
    widths = table["new_run_high_90"] / table["new_run_low_90"]
    assert (widths >= 0.99 * table["loss_high_90"] / table["loss_low_90"]).all()


def test_prediction_recovers_the_true_law_and_extrapolates_to_1e25_flops(
    posterior: Posterior,
) -> None:
    n, d = 3e11, 1e25 / (6 * 3e11)
    table = predict_loss(posterior, {"n_active": [n], "tokens": [d], "arch": ["dense"]})
    truth = np.exp(LAWS["experts"].log_loss(
        {"log_n": np.log(n), "log_d": np.log(d), "log_experts": 0.0},
        {**TRUTH["dense"], "log_e": TRUTH["log_e"]}))  # fmt: skip
    assert table["flops"].iloc[0] == pytest.approx(1e25)
    assert table["new_run_low_90"].iloc[0] < truth < table["new_run_high_90"].iloc[0]
    # Bands widen with distance from the data.
    near = predict_loss(posterior, {"n_active": [1e9], "tokens": [2e10], "arch": ["dense"]})
    width = lambda t: float(t["loss_high_90"].iloc[0] / t["loss_low_90"].iloc[0])  # noqa: E731
    assert width(table) > width(near)


def test_more_experts_predicts_lower_moe_loss(posterior: Posterior) -> None:
    draws = law_draws(
        posterior,
        {
            "n_active": [1e9, 1e9],
            "tokens": [2e10, 2e10],
            "arch": ["moe", "moe"],
            "experts": [8, 64],
        },
    )
    assert (draws[:, 1] < draws[:, 0]).mean() > 0.95


def test_bad_requests_are_refused(posterior: Posterior) -> None:
    with pytest.raises(PredictionError, match=r"unknown arch \['gpt'\]"):
        predict_loss(posterior, {"n_active": [1e9], "tokens": [1e10], "arch": ["gpt"]})
    with pytest.raises(PredictionError, match="several archs"):
        predict_loss(posterior, {"n_active": [1e9], "tokens": [1e10]})
    with pytest.raises(PredictionError, match=r"tokens = -1 \(point 1\)"):
        predict_loss(posterior, {"n_active": [1e9], "tokens": [-1.0], "arch": ["dense"]})
    for column, value in (("n_active", np.inf), ("experts", 0.0), ("granularity", np.nan)):
        with pytest.raises(PredictionError, match=f"{column} = {value:g} \\(point 2\\)"):
            predict_loss(
                posterior,
                {"n_active": [1e9, 1e9], "tokens": [1e10] * 2, "arch": ["dense"] * 2,
                 column: [2.0, value]},
            )  # fmt: skip
    with pytest.raises(PredictionError, match=r"\(0, 1\)"):
        predict_loss(
            posterior, {"n_active": [1e9], "tokens": [1e10], "arch": ["dense"]}, probs=(1.5,)
        )
