"""MoE against dense: total parameters from real runs, leverage and data gain in closed form,
unreachable equal-loss solves, eval sets."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bayes_scaling.datasets import load_dataset
from bayes_scaling.frontier import DecisionError, frontier, published_posterior
from bayes_scaling.moe import UnreachableWarning, expert_share, moe_vs_dense
from bayes_scaling.plots import plot_p_moe_better
from bayes_scaling.posterior import Posterior
from bayes_scaling.spec import ModelSpec

DENSE = {"log_a": math.log(480.0), "alpha": 0.34, "gamma": 0.0, "log_b": math.log(2000.0),
         "beta": 0.36}  # fmt: skip


LOG_E = math.log(1.8)


def _two_arch(
    gamma: float = 0.12, experts: float = 32.0, log_e: float | dict[str, float] = LOG_E
) -> Posterior:
    posterior = published_posterior(
        "experts", {"dense": DENSE, "moe": {**DENSE, "gamma": gamma}}, log_e
    )
    posterior.runs.loc[posterior.runs["arch"] == "moe", "experts"] = experts
    return posterior


def test_total_parameters_match_deepmind_runs_of_the_arch_shape() -> None:
    runs = load_dataset("deepmind-routing")
    posterior = Posterior(ModelSpec(), runs, None)  # type: ignore[arg-type]  # runs suffice
    routed = runs[runs["experts"] > 1]
    # Clark et al. route every other layer in the main sweep; a routing-frequency sweep (every
    # layer to every 12th) at the same (arch, E, n_active) has other totals, which no function
    # of (arch, E, n_active) can give: the run table does not record the routing frequency.
    typical = routed[routed["routing_frequency"] == 0.5]
    assert len(typical) > 150
    for (arch, top_k), group in typical.groupby(["arch", "top_k"]):
        share = expert_share(posterior, str(arch), top_k=float(top_k))
        predicted = share.n_total(group["n_active"], group["experts"])
        np.testing.assert_allclose(predicted, group["n_total"], rtol=0.01, err_msg=str(arch))
    naive = typical["n_active"] * typical["experts"] / typical["n_total"]
    assert naive.min() > 1.4 and naive.max() > 3.0  # what n_active * E claimed
    dense = runs[runs["experts"] == 1].iloc[0]
    assert share.n_total(dense["n_active"], 1.0) == dense["n_active"]


def test_total_parameters_are_refused_without_a_basis() -> None:
    posterior = _two_arch()  # published coefficients: no run records an n_total
    with pytest.raises(DecisionError, match=r"arch 'moe'.*lacks \['n_active', 'n_total'"):
        expert_share(posterior, "moe")
    runs = load_dataset("deepmind-routing")
    with pytest.raises(DecisionError, match="arch 'dense': no runs with experts > top_k"):
        expert_share(Posterior(ModelSpec(), runs, None), "dense")  # type: ignore[arg-type]
    broken = runs.copy()
    broken.loc[broken["experts"] > 1, "n_total"] = 1.0
    with pytest.raises(DecisionError, match=r"moe-hash.*outside \[n_active"):
        expert_share(Posterior(ModelSpec(), broken, None), "moe-hash")  # type: ignore[arg-type]


def test_efficiency_leverage_and_data_gain_match_closed_forms() -> None:
    posterior = _two_arch()
    budgets = np.array([1e20, 1e22, 1e24])
    table = moe_vs_dense(posterior, budgets, "moe", experts=32.0).summary()
    # Same exponents: MoE is dense with A scaled by s = E^-gamma. The excess loss over E at the
    # optimum scales as A^(beta/(alpha+beta)) C^-p, p = alpha beta / (alpha + beta), so
    # EL = s^(-beta / (alpha+beta) / p) = s^(-1/alpha) at every budget.
    s = 32.0**-0.12
    np.testing.assert_allclose(table["leverage_median"], s ** (-1 / 0.34), rtol=1e-6)
    assert (table["p_moe_better"] == 1.0).all() and (table["leverage_unreachable"] == 0).all()
    # Data gain: at the dense optimum (N, D), MoE reaches the same loss with D' tokens where
    # B / D'^beta = B / D^beta + A N^-alpha (1 - s).
    optimum = frontier(posterior, budgets, "dense")
    n, d = optimum.n_opt[0], optimum.d_opt[0]
    d_moe = (2000.0 / (2000.0 / d**0.36 + 480.0 * n**-0.34 * (1 - s))) ** (1 / 0.36)
    np.testing.assert_allclose(table["data_gain_median"], 1 - d_moe / d, rtol=1e-6)


def test_leverage_beyond_any_fixed_grid_is_solved_not_clamped() -> None:
    # gamma = 1, E = 32: EL = 32^(1/0.34) = 2.7e4, past the 1e4 x budget where the old
    # interpolation grid ended (it returned 1e4 at the largest budget).
    comparison = moe_vs_dense(_two_arch(gamma=1.0), [1e20, 1e24], "moe", experts=32.0)
    np.testing.assert_allclose(comparison.leverage[0], 32.0 ** (1 / 0.34), rtol=1e-6)


def test_unreachable_leverage_is_nan_with_a_warning_naming_the_budget() -> None:
    # Dense with alpha = 0.01 gains almost nothing from size: reaching MoE's loss at 1e22 needs
    # far more than e^230 x the budget.
    slow = {**DENSE, "alpha": 0.01}
    posterior = published_posterior(
        "experts", {"dense": slow, "moe": {**DENSE, "gamma": 0.12}}, 0.5
    )
    with pytest.warns(
        UnreachableWarning, match=r"no dense budget reaches MoE's loss at C = 1e\+22"
    ):
        comparison = moe_vs_dense(posterior, [1e22], "moe", experts=32.0)
    assert np.isnan(comparison.leverage).all()
    table = comparison.summary()
    assert table.loc[0, "leverage_unreachable"] == 1.0 and table.loc[0, "leverage_median"] == np.inf
    assert comparison.to_dict()["leverage"]["interval"] == [[None, None]]  # JSON: no infinity
    assert comparison.p_moe_better[0] == 1.0 and np.isfinite(comparison.data_gain).all()


def test_no_gain_when_the_expert_exponent_is_zero() -> None:
    table = moe_vs_dense(_two_arch(gamma=0.0), [1e21, 1e23], "moe", experts=32.0).summary()
    assert np.allclose(table["leverage_median"], 1.0, atol=1e-6)
    assert np.allclose(table["data_gain_median"], 0.0, atol=1e-6)


def test_moe_vs_dense_threads_the_eval_set() -> None:
    posterior = _two_arch(log_e={"c4": math.log(1.8), "pile": math.log(2.1)})
    with pytest.raises(DecisionError, match="several eval_sets"):
        moe_vs_dense(posterior, [1e22], "moe", experts=32.0)
    comparison = moe_vs_dense(posterior, [1e22], "moe", experts=32.0, eval_set="pile")
    single = moe_vs_dense(_two_arch(log_e=math.log(2.1)), [1e22], "moe", experts=32.0)
    assert comparison.eval_set == "pile"
    np.testing.assert_allclose(comparison.leverage, single.leverage, rtol=1e-9)
    np.testing.assert_allclose(comparison.data_gain, single.data_gain, rtol=1e-9)
    out = comparison.to_dict()
    assert out["leverage"]["median"][0] == pytest.approx(32.0 ** (0.12 / 0.34), rel=1e-6)
    assert out["leverage"]["unreachable"] == [0.0]


def test_p_moe_better_plot_has_one_line_per_comparison() -> None:
    posterior = _two_arch()
    comparisons = [moe_vs_dense(posterior, [1e20, 1e22], "moe", experts=e) for e in (8.0, 32.0)]
    figure = plot_p_moe_better(comparisons)
    lines = [line for line in figure.axes[0].get_lines() if line.get_label()[0] != "_"]
    assert [line.get_label() for line in lines] == ["moe (E = 8)", "moe (E = 32)"]
    np.testing.assert_array_equal(lines[1].get_ydata(), comparisons[1].p_moe_better)
    plt.close(figure)
