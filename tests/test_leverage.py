"""Efficiency Leverage: Tian et al.'s published constants reproduce the paper's claims, EL is
measured from runs against a dense posterior (checked on runs built with a known EL), the law's
constants are recovered from measurements, and ``decide`` reports the EL of its MoE choice."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bayes_scaling.cli import app
from bayes_scaling.decide import recommend
from bayes_scaling.frontier import DecisionError, arch_law
from bayes_scaling.leverage import (
    TIAN2025,
    LeverageLaw,
    activation_ratio,
    configuration_leverage,
    fit_leverage,
    leverage_measurements,
    published_claims,
    tian_granularity,
)
from bayes_scaling.moe import moe_vs_dense
from bayes_scaling.spec import ModelSpec
from tests.simulate import TRUTH, simulate_runs

RUNS = simulate_runs(seed=3, runs_per_arch=25)
DENSE = RUNS[RUNS["arch"] == "dense"].reset_index(drop=True)


def test_published_constants_reproduce_the_papers_claims() -> None:
    claims = published_claims()
    assert claims["el"] == pytest.approx(7.2, abs=0.1)  # A = 3.1%, G = 12, C = 1e22
    assert claims["best_granularity"] == pytest.approx(11, abs=0.5)
    grid = np.geomspace(1, 64, 2001)
    el = TIAN2025(0.031, grid, 1e22).ravel()
    assert grid[np.argmax(el)] == pytest.approx(claims["best_granularity"], rel=0.01)
    # Natural logs instead of log10 C and log2 G give a different law (REFERENCE.md's check).
    natural = (1.23 - 0.0761 * math.log(1e22) + 0.0167 * math.log(12) ** 2
               - 0.117 * math.log(12)) * math.log(TIAN2025.saturated_ratio(0.031))  # fmt: skip
    assert abs(math.exp(natural) - claims["el"]) > 2
    # Leverage grows as fewer experts are active, and saturates near A_start.
    ratios = np.array([0.5, 0.1, 0.031, 0.01])
    assert np.all(np.diff(TIAN2025(ratios, 12.0, 1e22).ravel()) > 0)
    assert TIAN2025.saturated_ratio(0.5) == pytest.approx(0.5163, rel=1e-3)


def test_law_broadcasts_over_draws_and_refuses_bad_inputs() -> None:
    draws = LeverageLaw(a=np.array([1.23, 1.0]), d=np.array([-0.0761, -0.05]),
                        gamma=np.array([0.0167, 0.02]), beta=np.array([-0.117, -0.1]))  # fmt: skip
    values = draws(np.array([0.031, 0.1, 0.25]), 12.0, 1e22)
    assert values.shape == (2, 3)
    assert values[0, 0] == pytest.approx(published_claims()["el"])
    assert draws.best_granularity()[1] == pytest.approx(2 ** (0.1 / 0.04))
    for bad, name in ((0.0, "activation ratio"), (1.5, "activation ratio")):
        with pytest.raises(DecisionError, match=name):
            TIAN2025(bad, 12.0, 1e22)
    with pytest.raises(DecisionError, match="granularity"):
        TIAN2025(0.1, -1.0, 1e22)
    with pytest.raises(DecisionError, match="compute"):
        TIAN2025(0.1, 2.0, np.nan)


def test_activation_ratio_and_granularity_from_run_columns() -> None:
    runs = pd.DataFrame({"experts": [8, 8, 64], "top_k": [1, 2, 2], "shared_experts": [0, 0, 1],
                         "d_model": [48, 48, 1024], "granularity": [1, 2, 4]})  # fmt: skip
    assert activation_ratio(runs) == pytest.approx([1 / 8, 2 / 8, 3 / 65])
    # d_ff = 8/3 d_model up to a multiple of 8 (128 for 48): G = 2 * 48 * g / 128
    assert tian_granularity(runs)[:2] == pytest.approx([0.75, 1.5])
    with pytest.raises(DecisionError, match="top_k"):
        activation_ratio(runs.drop(columns="top_k"))


def _moe_runs_with_leverage(posterior, factor: float) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """MoE runs (50 tokens per parameter, off the dense optimum) whose loss is the median over
    draws of what compute-optimal dense reaches with ``factor`` times their compute."""
    law = arch_law(posterior, "dense")
    n = np.array([1e8, 4e8, 1.6e9])
    d = 50 * n
    log_c = np.log(6 * n * d * factor)[np.newaxis, :]
    loss = np.exp(np.median(law.optimum(log_c)[2], axis=0))
    return pd.DataFrame({"run_id": ["a", "b", "c"], "arch": "moe", "n_active": n, "tokens": d,
                         "experts": 8.0, "top_k": 1, "d_model": [512, 1024, 2048],
                         "granularity": 1, "loss": loss, "eval_set": "default"})  # fmt: skip


def test_measured_leverage_recovers_a_known_factor(small_fit) -> None:  # type: ignore[no-untyped-def]
    posterior = small_fit(DENSE, ModelSpec(law="chinchilla", pooling="pooled"))
    for factor in (0.5, 3.0):
        measured = leverage_measurements(posterior, _moe_runs_with_leverage(posterior, factor))
        # The median over draws, not the median draw's law: equal to within 10%.
        assert np.exp(measured["log_el_median"].to_numpy()) == pytest.approx(factor, rel=0.1)
        assert (measured["log_el_sd"] > 0).all() and (measured["unreachable"] == 0).all()
        assert measured["activation_ratio"].tolist() == [1 / 8] * 3
    with pytest.raises(DecisionError, match="no MoE runs"):
        leverage_measurements(posterior, DENSE)
    runs = _moe_runs_with_leverage(posterior, 2.0)
    no_eval_set = leverage_measurements(posterior, runs.drop(columns="eval_set"))
    assert np.isfinite(no_eval_set["log_el_median"]).all()  # the posterior's only eval set
    with pytest.raises(DecisionError, match="did not finish"):
        leverage_measurements(posterior, runs.assign(status=["finished", "diverged", "finished"]))
    with pytest.raises(DecisionError, match="column"):
        leverage_measurements(posterior, runs.drop(columns="loss"))


def test_fit_recovers_the_constants_that_made_the_measurements() -> None:
    truth = LeverageLaw(a=0.9, d=-0.04, gamma=0.03, beta=-0.2)
    rng = np.random.default_rng(0)
    points = pd.DataFrame({
        "arch": np.repeat(["topk", "expert_choice"], 30),
        "activation_ratio": rng.choice([0.03, 0.06, 0.125, 0.25], 60),
        "tian_granularity": rng.choice([0.5, 1.0, 2.0, 4.0, 8.0, 16.0], 60),
        "flops": np.exp(rng.uniform(math.log(1e18), math.log(1e22), 60)),
    })  # fmt: skip
    log_el = truth.log_leverage(points["activation_ratio"], points["tian_granularity"],
                                points["flops"])  # fmt: skip
    points["log_el_median"] = np.asarray(log_el, float).ravel() + rng.normal(0, 0.03, 60)
    points["log_el_sd"] = 0.03
    fitted = fit_leverage(points, draws=500, tune=500)
    for name, value in (("d", -0.04), ("gamma", 0.03), ("beta", -0.2)):
        low, high = np.quantile(fitted.draws[name], [0.01, 0.99])
        assert low < value < high, name
        assert abs(np.median(fitted.draws[name]) - getattr(TIAN2025, name)) > abs(
            np.median(fitted.draws[name]) - value
        ), name  # the data moved it from the prior towards the truth
    band = fitted.predict(0.06, 4.0, 1e20, router="topk")
    true_el = float(np.ravel(truth(0.06, 4.0, 1e20))[0])
    assert band["low"][0] < true_el < band["high"][0]
    bad = points.assign(log_el_median=np.where(points.index == 7, np.inf, points["log_el_median"]))
    with pytest.raises(DecisionError, match="row 7"):
        fit_leverage(bad)
    with pytest.raises(DecisionError, match="row 3"):
        fit_leverage(points.assign(unreachable=np.where(points.index == 3, 0.2, 0.0)))
    with pytest.raises(DecisionError, match="row 0"):
        fit_leverage(points.assign(activation_ratio=np.where(points.index == 0, 0.0, 0.1)))
    with pytest.raises(DecisionError, match="unknown router"):
        fitted.law("mot")


def test_configuration_leverage_matches_moe_vs_dense_at_the_moe_optimum(small_fit) -> None:  # type: ignore[no-untyped-def]
    posterior = small_fit(RUNS, ModelSpec(law="experts", pooling="hierarchical"))
    budget = 1e22
    optimum = moe_vs_dense(posterior, [budget], "moe", experts=32.0, max_draws=200)
    law = arch_law(posterior, "moe", max_draws=200)
    log_n, log_d, _ = law.optimum(np.log([[budget]]), 32.0)
    # The per-draw MoE optimum differs by draw; at each draw's own optimum the two agree.
    for i in (0, 57, 199):
        one = configuration_leverage(posterior, "moe", float(np.exp(log_n[i, 0])),
                                     float(np.exp(log_d[i, 0])), 32.0)[i]  # fmt: skip
        assert one == pytest.approx(optimum.leverage[i, 0], rel=1e-6)
    assert TRUTH["moe"]["gamma"] > 0  # simulated: MoE truly better, so EL > 1


def test_decide_reports_the_leverage_of_an_moe_choice(small_fit, tmp_path) -> None:  # type: ignore[no-untyped-def]
    posterior = small_fit(RUNS, ModelSpec(law="experts", pooling="hierarchical"))
    path = tmp_path / "post.nc"
    posterior.save(path)
    result = CliRunner().invoke(app, ["decide", str(path), "--flops", "1e22", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    choice = recommend(posterior, 1e22)
    assert out["arch"] == choice.arch == "moe"
    draws = configuration_leverage(posterior, "moe", choice.n_active, choice.tokens,
                                   choice.experts)  # fmt: skip
    assert out["leverage"]["median"] == pytest.approx(float(np.median(draws)))
    low, high = out["leverage"]["interval"]
    assert 1.0 < low < out["leverage"]["median"] < high
    text = CliRunner().invoke(app, ["decide", str(path), "--flops", "1e22"])
    assert "Efficiency Leverage" in text.output
    dense = small_fit(DENSE, ModelSpec(law="chinchilla", pooling="pooled"))
    dense.save(tmp_path / "dense.nc")
    plain = json.loads(CliRunner().invoke(app, ["decide", str(tmp_path / "dense.nc"), "--flops",
                                                "1e22", "--json"]).output)  # fmt: skip
    assert plain["leverage"] is None
