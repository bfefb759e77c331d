"""The compute-optimal frontier: literature checks, eval sets, labelled results, plots."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bayes_scaling.frontier import (
    DecisionError,
    arch_law,
    frontier,
    isoflop,
    published_posterior,
)
from bayes_scaling.laws import chinchilla_optimal
from bayes_scaling.plots import plot_frontier, plot_isoflop
from bayes_scaling.posterior import Posterior
from tests.test_laws import HOFFMANN, JOINT

GOPHER = 5.76e23
CHINCHILLA = {k: HOFFMANN[k] for k in ("log_a", "alpha", "log_b", "beta")}


def _hoffmann() -> Posterior:
    return published_posterior("chinchilla", {"dense": CHINCHILLA}, HOFFMANN["log_e"])


def _two_eval_sets() -> Posterior:
    return published_posterior(
        "chinchilla", {"dense": CHINCHILLA}, {"c4": math.log(1.69), "pile": math.log(2.0)}
    )


def test_frontier_reproduces_chinchilla_closed_form() -> None:
    budgets = np.array([1e20, GOPHER, 1e25])
    optimum = frontier(_hoffmann(), budgets)
    n, d = chinchilla_optimal(budgets, HOFFMANN["log_a"], 0.34, HOFFMANN["log_b"], 0.28)
    np.testing.assert_allclose(optimum.n_opt[0], n, rtol=1e-9)
    np.testing.assert_allclose(optimum.d_opt[0], d, rtol=1e-9)
    exponents = optimum.exponents()
    assert exponents.loc[0, "median"] == pytest.approx(0.28 / 0.62, rel=1e-6)
    assert exponents.loc[1, "median"] == pytest.approx(0.34 / 0.62, rel=1e-6)


@pytest.mark.parametrize(
    ("flops", "experts", "n_opt", "d_opt"),
    [(1e21, 1, 5.7e9, 29.3e9), (1e21, 8, 3.8e9, 44.3e9), (1e22, 1, 18.8e9, 88.6e9),
     (1e22, 8, 14.4e9, 115.8e9), (1e22, 32, 12.2e9, 136.9e9)],
)  # fmt: skip
def test_frontier_reproduces_ludziejewski_per_expert_count(
    flops: float, experts: int, n_opt: float, d_opt: float
) -> None:
    params = {k: v for k, v in JOINT.items() if k != "log_e"}
    posterior = published_posterior("joint", {"moe": params}, JOINT["log_e"])
    optimum = frontier(posterior, [flops], experts=experts)
    assert optimum.n_opt[0, 0] == pytest.approx(n_opt, rel=0.02)
    assert optimum.d_opt[0, 0] == pytest.approx(d_opt, rel=0.02)


def test_to_dict_carries_medians_and_intervals_without_column_names() -> None:
    optimum = frontier(_hoffmann(), [1e21, GOPHER])
    out = json.loads(json.dumps(optimum.to_dict(prob=0.8)))
    n, _ = chinchilla_optimal(GOPHER, HOFFMANN["log_a"], 0.34, HOFFMANN["log_b"], 0.28)
    assert out["n_opt"]["median"][1] == pytest.approx(float(n), rel=1e-9)
    low, high = out["n_opt"]["interval"][1]
    assert low == pytest.approx(float(n), rel=1e-9) and high == pytest.approx(float(n), rel=1e-9)
    assert out["prob"] == 0.8 and out["flops"] == [1e21, GOPHER] and out["eval_set"] == "published"
    ratio = out["tokens_per_param"]["median"][1]
    assert ratio == pytest.approx(out["d_opt"]["median"][1] / out["n_opt"]["median"][1])


def test_eval_sets_are_named_or_refused() -> None:
    posterior = _two_eval_sets()
    with pytest.raises(DecisionError, match=r"several eval_sets; name one of \['c4', 'pile'\]"):
        frontier(posterior, [1e22])
    with pytest.raises(DecisionError, match="unknown eval_set 'wiki'"):
        frontier(posterior, [1e22], eval_set="wiki")
    c4 = frontier(posterior, [1e22], eval_set="c4")
    pile = frontier(posterior, [1e22], eval_set="pile")
    # Same allocation (E_irr does not move the optimum), losses apart by the floors' difference.
    assert pile.n_opt[0, 0] == pytest.approx(c4.n_opt[0, 0], rel=1e-12)
    assert pile.loss[0, 0] - c4.loss[0, 0] == pytest.approx(2.0 - 1.69, rel=1e-9)
    assert pile.eval_set == "pile"


def test_isoflop_minimum_is_the_frontier_optimum() -> None:
    n = np.geomspace(1e9, 1e12, 2001)
    loss = isoflop(_hoffmann(), GOPHER, n)
    optimum = frontier(_hoffmann(), [GOPHER])
    assert n[np.argmin(loss[0])] == pytest.approx(optimum.n_opt[0, 0], rel=0.01)
    assert loss[0].min() == pytest.approx(optimum.loss[0, 0], rel=1e-6)


def test_arch_law_reads_the_noise_when_present() -> None:
    assert arch_law(_hoffmann()).sigma is None
    noisy = published_posterior("chinchilla", {"dense": CHINCHILLA}, 0.5, sigma=0.05, nu=4.0)
    law = arch_law(noisy)
    assert law.sigma is not None and law.nu is not None
    assert law.sigma[0] == 0.05 and law.nu[0] == 4.0
    with pytest.raises(DecisionError, match="both sigma and nu"):
        published_posterior("chinchilla", {"dense": CHINCHILLA}, 0.5, sigma=0.05)


def test_frontier_and_isoflop_plots_take_an_eval_set() -> None:
    posterior = _two_eval_sets()
    figure = plot_frontier(posterior, budgets=(1e20, 1e24), mark=1e22, eval_set="pile")
    n_axis, d_axis = figure.axes
    median = n_axis.get_lines()[0].get_ydata()
    expected = frontier(posterior, np.geomspace(1e20, 1e24, 40), eval_set="pile").n_opt[0]
    np.testing.assert_allclose(median, expected, rtol=1e-9)
    assert len(n_axis.collections) == 1 and d_axis.get_yscale() == "log"
    plt.close(figure)
    figure = plot_isoflop(posterior, [1e21, 1e22], eval_set="pile")
    lines = figure.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["C = 1e+21", "C = 1e+22"]
    assert min(lines[0].get_ydata()) > 2.0  # the pile floor, not c4's
    plt.close(figure)


def test_a_law_without_a_tokens_term_is_refused_for_budget_questions() -> None:
    # Clark et al.'s law has no D: a frontier search would run to its bound and say nothing.
    clark = published_posterior(
        "clark", {"moe": {"a": -0.08, "b": -0.02, "c": 0.001, "d": 3.0}}, log_e=0.0
    )
    with pytest.raises(DecisionError, match=r"clark law has no tokens term.*'chinchilla'"):
        frontier(clark, [1e21], "moe")


def test_a_best_size_on_the_grid_edge_is_refused_not_clamped() -> None:
    from bayes_scaling.decide import recommend

    posterior = published_posterior("chinchilla", {"dense": CHINCHILLA}, HOFFMANN["log_e"])
    assert 1e6 < recommend(posterior, 1e24).n_active < 1e12  # the default grid brackets it
    # Candidate sizes far below the compute-optimal one: the best is the grid's upper end.
    with pytest.raises(DecisionError, match="end of the candidate grid"):
        recommend(posterior, 1e24, sizes=(1e6, 1e7))
