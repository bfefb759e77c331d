"""Run planning: the preposterior maths against a conjugate answer, plans on real posteriors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_scaling.design import (
    DesignError,
    Question,
    _Greedy,
    auto_candidates,
    plan_runs,
    question_draws,
)
from bayes_scaling.preposterior import (
    ImportanceUpdate,
    LinearUpdate,
    ReachVariance,
    noise_variance,
    simulated_log_likelihood,
)
from bayes_scaling.spec import HyperSpec, read_spec

MODELS = Path(__file__).resolve().parents[1] / "models"


def _conjugate_search(slopes: np.ndarray, noise: float, method: str, seed: int = 0) -> _Greedy:
    """theta ~ N(0, 1) as 4,000 draws; candidate c observes slopes[c] * theta + N(0, noise^2)
    (Student-t with nu = 1e6 for the simulated outcomes); the question is theta itself."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(4000)
    mean = theta[:, None] * slopes[None, :]
    sigma, nu = np.full(4000, noise), np.full(4000, 1e6)
    if method == "importance":
        truth = rng.choice(4000, size=400, replace=False)
        update: object = ImportanceUpdate(
            theta[:, None], *simulated_log_likelihood(mean, sigma, nu, truth, rng)
        )
    else:
        assert noise_variance(sigma, nu)[0] == pytest.approx(noise**2, rel=1e-4)
        update = LinearUpdate(theta[:, None], mean, noise**2)

    class NoReach:
        def variance(self, chosen: object) -> float:
            return 0.0

    return _Greedy(update, NoReach(), np.ones(slopes.size))  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["linear", "importance"])
def test_expected_posterior_variance_matches_the_conjugate_normal_answer(method: str) -> None:
    # One observation with slope x and noise s leaves variance 1 / (1 + x^2 / s^2); two leave
    # 1 / (1 + (x1^2 + x2^2) / s^2), whatever the outcomes.
    search = _conjugate_search(np.array([1.0, 0.5, 2.0]), noise=1.0, method=method)
    assert search.variance_now == pytest.approx(1.0, rel=0.05)
    chosen, rows, after, first = search.run(k=2, budget=None, by_ratio=True)
    assert first == pytest.approx([1 - 1 / 2, 1 - 1 / 1.25, 1 - 1 / 5], abs=0.05)
    assert chosen == [2, 0]  # the steepest slope first, then the next
    assert after == pytest.approx(1 / (1 + 4 + 1), abs=0.04)
    # The second run's marginal gain is what it adds given the first, not its gain alone.
    assert rows[1]["gain"] == pytest.approx(1 / 5 - 1 / 6, abs=0.03)
    assert rows[1]["gain"] < first[0] / 2


def test_a_budget_keeps_the_plan_within_its_flops_and_per_flop_ranks_cost_in() -> None:
    search = _conjugate_search(np.array([1.0, 2.0]), noise=1.0, method="linear")
    search.flops = np.array([1.0, 10.0])  # the steep run costs 10x for 1.6x the gain
    chosen, *_ = search.run(k=1, budget=None, by_ratio=True)
    assert chosen == [0]
    chosen, *_ = search.run(k=1, budget=None, by_ratio=False)
    assert chosen == [1]
    chosen, rows, *_ = search.run(k=2, budget=5.0, by_ratio=False)
    assert chosen == [0] and sum(r["flops"] for r in rows) <= 5.0


@pytest.fixture(scope="module")
def small_chinchilla(small_fit):  # type: ignore[no-untyped-def]
    from bayes_scaling.datasets import load_dataset

    runs = load_dataset("chinchilla")
    pool = runs[runs["flops"] <= 1e21]
    fitted = pool.nsmallest(40, "flops")
    posterior = small_fit(fitted, read_spec(MODELS / "loss" / "chinchilla.toml"), draws=300)
    return posterior, pool.drop(index=fitted.index), runs[runs["flops"] > 1e21]


def _question(targets: pd.DataFrame) -> Question:
    return Question("loss", targets=targets[["n_active", "tokens"]])


def test_plan_for_the_loss_at_large_runs_prefers_reach_and_is_reproducible(small_chinchilla):  # type: ignore[no-untyped-def]
    posterior, candidates, targets = small_chinchilla
    question = _question(targets)
    plan = plan_runs(posterior, question, candidates, k=3, budget_flops=5e21, random_seed=1)
    again = plan_runs(posterior, question, candidates, k=3, budget_flops=5e21, random_seed=1)
    assert plan.runs["run_id"].tolist() == again.runs["run_id"].tolist()
    assert len(plan.runs) == 3 and plan.runs["run_id"].is_unique
    assert plan.flops <= 5e21
    assert plan.sd_after < plan.sd_now
    assert (np.diff(plan.runs["sd_after"]) < 0).all()
    # Runs far beyond the fitted ones teach more about the targets than runs at their edge.
    ranked = plan.ranked.dropna(subset=["gain"])
    edge = ranked.nsmallest(10, "flops")["gain"].median()
    beyond = ranked.nlargest(10, "flops")["gain"].median()
    assert beyond > 3 * edge
    record = plan.to_dict()
    assert (
        json.loads(json.dumps(record, allow_nan=False))["runs"][0]["run_id"]
        == (plan.runs["run_id"].iloc[0])
    )
    # Runs already fitted are dropped from the candidates, and said so.
    mixed = pd.concat([posterior.fitted_runs.head(5), candidates])
    assert plan_runs(posterior, question, mixed, k=1).settings["already_fitted"] == 5
    # Importance weighting on simulated outcomes agrees with the linear update on the first run.
    weighted = plan_runs(posterior, question, candidates, k=1, method="importance")
    linear = plan_runs(posterior, question, candidates, k=1)
    both = weighted.ranked.set_index("run_id")["gain"].corr(
        linear.ranked.set_index("run_id")["gain"]
    )
    assert both > 0.8


def test_questions_agree_with_the_decision_functions(small_chinchilla):  # type: ignore[no-untyped-def]
    from bayes_scaling.frontier import frontier
    from bayes_scaling.predict import law_draws

    posterior, _, targets = small_chinchilla
    loss = question_draws(posterior, _question(targets))
    assert loss == pytest.approx(law_draws(posterior, targets[["n_active", "tokens"]]))
    optimum = question_draws(posterior, Question("optimal-n", budget=1e22))
    expected = np.log(frontier(posterior, [1e22]).n_opt)
    assert optimum == pytest.approx(expected)


def test_moe_beats_dense_question_is_the_loss_gap_whose_sign_decides(small_fit):  # type: ignore[no-untyped-def]
    from bayes_scaling.moe import moe_vs_dense
    from tests.simulate import simulate_runs

    posterior = small_fit(simulate_runs(0, runs_per_arch=20))
    gap = question_draws(posterior, Question("moe-better", budget=1e21, moe_arch="moe"))
    p = moe_vs_dense(posterior, [1e21], "moe").p_moe_better[0]
    assert (gap < 0).mean() == pytest.approx(p)
    plan = plan_runs(
        posterior,
        Question("moe-better", budget=1e21, moe_arch="moe"),
        auto_candidates(posterior, Question("moe-better", budget=1e21, moe_arch="moe")),
        k=2,
    )
    assert plan.sd_now == pytest.approx(gap.std(), rel=0.1)  # 800 of the draws
    assert plan.settings["p_moe_better"] == pytest.approx(p)
    assert len(plan.runs) == 2 and plan.sd_after < plan.sd_now


def test_reach_term_falls_as_a_candidate_extends_the_data(small_chinchilla):  # type: ignore[no-untyped-def]
    posterior, candidates, targets = small_chinchilla
    copy = posterior.fitted_runs.iloc[[3]]  # a run already fitted extends nothing
    frame = pd.concat([candidates, copy], ignore_index=True)
    reach = ReachVariance(posterior, _question(targets), frame)
    largest = int(frame["flops"].to_numpy().argmax())
    assert reach.variance([largest]) < 0.5 * reach.variance([])
    assert reach.variance([len(frame) - 1]) == pytest.approx(reach.variance([]))


def test_bad_questions_and_candidates_are_refused_naming_what(small_chinchilla):  # type: ignore[no-untyped-def]
    posterior, candidates, targets = small_chinchilla
    with pytest.raises(DesignError, match="not one of"):
        Question("speed")
    with pytest.raises(DesignError, match="needs a target"):
        Question("loss")
    with pytest.raises(DesignError, match="budget"):
        Question("optimal-n", budget=-1.0)
    with pytest.raises(DesignError, match="moe_arch"):
        Question("moe-better", budget=1e21)
    with pytest.raises(DesignError, match="hyperparameter posterior"):
        question_draws(posterior, Question("lr-batch", targets=targets[["n_active", "tokens"]]))
    bad = candidates.head(3).reset_index(drop=True)
    bad.loc[1, "tokens"] = -5.0
    with pytest.raises(DesignError, match=r"row 2 \(chinchilla-\d+\), column 'tokens': -5.0 is"):
        plan_runs(posterior, _question(targets), bad)
    with pytest.raises(DesignError, match="cheapest costs"):
        plan_runs(posterior, _question(targets), candidates, budget_flops=1.0)
    with pytest.raises(DesignError, match="already among the fitted runs"):
        plan_runs(posterior, _question(targets), posterior.fitted_runs)
    with pytest.raises(DesignError, match="method 'exact'"):
        plan_runs(posterior, _question(targets), candidates, method="exact")
    with pytest.raises(DesignError, match="with itself"):
        Question("moe-better", budget=1e21, moe_arch="dense")
    with pytest.raises(DesignError, match="k must be"):
        plan_runs(posterior, _question(targets), candidates, k=0)
    with pytest.raises(DesignError, match="no candidate"):
        plan_runs(posterior, _question(targets), candidates.iloc[:0])


def test_lr_batch_plan_values_runs_in_the_target_cell(small_fit):  # type: ignore[no-untyped-def]
    from tests.simulate import simulate_grid

    grid = simulate_grid(0)
    cells = grid.groupby(["n_active", "tokens"]).ngroup()
    target_cell = grid[cells == cells.max()]
    fitted = grid[cells != cells.max()]
    posterior = small_fit(fitted, HyperSpec(form="steplaw"), draws=200)
    target = target_cell.iloc[[0]][["arch", "n_active", "n_total", "tokens"]]
    question = Question("lr-batch", targets=target)
    draws = question_draws(posterior, question)
    assert draws.shape[1] == 2 and np.isfinite(draws).all()
    near = fitted[fitted["n_active"] == fitted["n_active"].min()].iloc[:5]
    near = near.assign(run_id=near["run_id"] + "-again")  # new runs in a fitted cell
    candidates = pd.concat([target_cell, near])[
        ["run_id", "arch", "n_active", "n_total", "tokens", "lr", "batch_tokens"]
    ]
    candidates["flops"] = 1.0  # equal cost: only what each run teaches differs
    for seed in (0, 1):  # the target cell's deviation is shared with its candidates either way
        plan = plan_runs(posterior, question, candidates, k=2, random_seed=seed)
        # Runs in the never-run target cell teach its optimum; runs in a fitted cell barely do.
        in_target = plan.ranked["run_id"].isin(target_cell["run_id"])
        gains = plan.ranked["gain"]
        assert gains[in_target].max() > 5 * gains[~in_target].max(), seed
        assert plan.runs["run_id"].isin(target_cell["run_id"]).all()
        assert plan.sd_after < plan.sd_now
    # Automatic candidates: the target cell (arch filled in) and the fitted cells on a grid.
    auto = auto_candidates(posterior, Question("lr-batch", targets=target[["n_active", "tokens"]]))
    assert set(auto["arch"]) == {"dense"} and (auto["n_active"] == target["n_active"].iloc[0]).any()
