"""Plots: returned figures carry bands and data, checked on the objects, not pixels."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from bayes_scaling.fit import Posterior
from bayes_scaling.plots import loss_curve, plot_exponents, plot_loss_vs_compute
from bayes_scaling.spec import ModelSpec
from tests.simulate import simulate_runs


@pytest.fixture(scope="module")
def posterior(small_fit) -> Posterior:  # type: ignore[no-untyped-def]
    return small_fit(simulate_runs(seed=6, runs_per_arch=15), ModelSpec(), random_seed=1, draws=100)


def test_loss_vs_compute_has_two_bands_a_line_and_the_runs_per_arch(posterior: Posterior) -> None:
    figure = plot_loss_vs_compute(posterior, extend=10.0)
    ax = figure.axes[0]
    assert len(ax.collections) == 2 * 2 + 2  # 50% and 90% bands + scatter, per arch
    labels = sorted(line.get_label() for line in ax.get_lines())
    assert labels[0] == "dense" and labels[1].startswith("moe (E = ")
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
