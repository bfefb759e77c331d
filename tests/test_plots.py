"""Plots: returned figures carry bands and data, checked on the objects, not pixels."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bayes_scaling.fit import Posterior
from bayes_scaling.plots import loss_curve, plot_exponents, plot_loss_vs_compute
from bayes_scaling.spec import ModelSpec
from tests.simulate import simulate_runs


@pytest.fixture(scope="module")
def posterior(small_fit) -> Posterior:  # type: ignore[no-untyped-def]
    return small_fit(simulate_runs(seed=6, runs_per_arch=15), ModelSpec(), random_seed=1, draws=100)


def test_loss_vs_compute_draws_runs_and_curves_on_one_x(posterior: Posterior) -> None:
    runs = posterior.runs.copy()
    runs["flops"] = 2.0 * 6.0 * runs["n_active"] * runs["tokens"]  # a study's own FLOP count
    shifted = Posterior(posterior.spec, runs, posterior.idata)
    target = pd.DataFrame([{"arch": "dense", "flops": 1e23, "loss_median": 2.0,
                            "new_run_low_90": 1.9, "new_run_high_90": 2.1}])  # fmt: skip
    figure = plot_loss_vs_compute(shifted, extend=10.0, targets=target)
    ax = figure.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert "dense" in lines and any(k.startswith("moe (E = ") for k in lines)
    dense = runs[(runs["arch"] == "dense")]
    expected = 6.0 * dense["n_active"] * dense["tokens"]
    xs = [np.asarray(c.get_offsets())[:, 0] for c in ax.collections if c.get_offsets().shape[0]]
    # the dense runs sit at 6 N D, the x of the dense curve, not at the table's own flops
    assert any(np.allclose(np.sort(x), np.sort(expected)) for x in xs)
    curve_x = lines["dense"].get_xdata()
    assert curve_x.min() < expected.max() < curve_x.max()  # through the data and beyond
    # two bands per arch (90% expected loss inside the wider 90% new-run band)
    bands = [c for c in ax.collections if type(c).__name__ == "FillBetweenPolyCollection"]
    assert len(bands) == 2 * 2
    # the target is drawn with its interval, and the x axis reaches it
    assert ax.get_xlim()[1] > 1e23
    assert ax.get_xscale() == "log"
    plt.close(figure)


def test_loss_curve_extends_tenfold_beyond_the_largest_model(posterior: Posterior) -> None:
    curve = loss_curve(posterior, "dense", extend=10.0)
    largest = posterior.runs.loc[posterior.runs["arch"] == "dense", "n_active"].max()
    assert curve["n_active"].max() == pytest.approx(10 * largest, rel=1e-6)
    assert curve["loss_median"].is_monotonic_decreasing


def test_exponent_plot_has_one_panel_per_exponent(posterior: Posterior) -> None:
    figure = plot_exponents(posterior)
    assert [ax.get_xlabel() for ax in figure.axes] == ["alpha", "beta", "gamma"]
    plt.close(figure)
