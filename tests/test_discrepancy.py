"""The extrapolation discrepancy: distances, the rate's likelihood, the population prior."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from bayes_scaling.discrepancy import (
    KAPPA_GRID,
    DiscrepancyRate,
    default_rate,
    extrapolation,
    population_rate,
    task_log_likelihood,
)

FITTED = pd.DataFrame(
    {
        "arch": ["dense", "dense", "moe", "moe"],
        "n_active": [1e6, 1e8, 1e6, 1e7],
        "tokens": [1e9, 1e10, 1e9, 1e9],
    }
)


def test_distance_is_zero_inside_and_the_log_excess_outside_per_arch() -> None:
    points = pd.DataFrame(
        {
            "arch": ["dense", "dense", "moe", "new"],
            "n_active": [1e7, 1e9, 1e8, 1e9],
            "tokens": [5e9, 1e11, 1e9, 1e8],
        }
    )
    reach = extrapolation(FITTED, points, ("n_active", "tokens"))
    assert reach["distance"].iloc[0] == 0.0 and reach["ratio"].iloc[0] == 1.0
    # 10x beyond in N and in D: sqrt(2) ln 10
    assert reach["distance"].iloc[1] == pytest.approx(math.sqrt(2) * math.log(10))
    # the moe runs reach only 1e7 parameters, although dense runs reach 1e8
    assert reach["excess_n_active"].iloc[2] == pytest.approx(math.log(10))
    # an arch the fit never saw is measured against every fitted run; below the data counts
    assert reach["excess_n_active"].iloc[3] == pytest.approx(math.log(10))
    assert reach["excess_tokens"].iloc[3] == pytest.approx(math.log(10))


def test_likelihood_of_one_gaussian_run_is_the_convolution() -> None:
    # nu -> infinity: Student-t noise is Normal, and b * e adds kappa^2 e^2 to its variance.
    sigma, distance, residual = 0.01, 2.0, 0.03
    values = task_log_likelihood(
        np.zeros((1, 1)), np.array([sigma]), np.array([1e7]), np.array([residual]),
        np.array([distance]), KAPPA_GRID,
    )  # fmt: skip
    expected = norm.logpdf(residual, scale=np.sqrt(sigma**2 + (KAPPA_GRID * distance) ** 2))
    assert values == pytest.approx(expected, abs=2e-3)


def test_shared_slope_learns_the_rate_that_made_the_errors() -> None:
    rng = np.random.default_rng(0)
    distance = np.linspace(0.5, 3.0, 12)
    total = np.zeros(KAPPA_GRID.size)
    for _ in range(40):  # 40 studies whose law errs with a slope of sd 0.02 per e-fold
        slope = rng.normal(0.0, 0.02)
        observed = slope * distance + rng.normal(0.0, 0.005, distance.size)
        draws = rng.normal(0.0, 0.002, (200, 1)) + np.zeros((200, distance.size))
        total += task_log_likelihood(
            draws, np.full(200, 0.005), np.full(200, 50.0), observed, distance
        )
    best = KAPPA_GRID[np.argmax(total)]
    assert 0.013 < best < 0.03
    # a one-run-at-a-time model would see independent errors; the shared slope does not
    assert total[0] < total.max() - 50


def test_population_prior_centres_on_the_families_rates_and_keeps_their_spread() -> None:
    def family(kappa: float) -> np.ndarray:  # a sharp likelihood peaked at kappa
        return -0.5 * ((np.log(np.maximum(KAPPA_GRID, 1e-12)) - math.log(kappa)) / 0.1) ** 2

    tight = population_rate({f: family(0.01) for f in "abcdef"})
    spread = population_rate(
        {
            f: family(k)
            for f, k in zip("abcdef", (0.002, 0.005, 0.01, 0.02, 0.05, 0.01), strict=True)
        }
    )
    assert tight.quantile(0.5)[0] == pytest.approx(0.01, rel=0.3)
    low, high = spread.quantile([0.05, 0.95])
    assert low < 0.004 and high > 0.03
    assert tight.weights[0] == 0.0  # no family fits its law exactly beyond its data


def test_slopes_have_the_rate_s_scale_and_the_rate_round_trips() -> None:
    rate = DiscrepancyRate(np.array([0.0, 0.01, 0.04]), np.log([0.2, 0.5, 0.3]), "test")
    slopes = rate.slopes(200_000, np.random.default_rng(1))
    assert slopes.std() == pytest.approx(rate.scale(), rel=0.01)
    assert DiscrepancyRate.from_dict(rate.to_dict()) == rate
    with pytest.raises(ValueError, match="kappa"):
        DiscrepancyRate(np.array([-0.1]), np.array([0.0]))


def test_the_shipped_population_prior_is_a_proper_learned_rate() -> None:
    rate = default_rate()
    assert rate.weights.sum() == pytest.approx(1.0)
    assert "population" in rate.source
    assert 1e-4 < rate.quantile(0.5)[0] < 0.1
