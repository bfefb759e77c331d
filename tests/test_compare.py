"""Comparing hypotheses: LOO from the stored log likelihood, stacking weights, the stacked
predictive through predict and recommend, refusals, the CLI, and the rival dense laws."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import arviz as az
import numpy as np
import pytest
import xarray as xr
from scipy.stats import t as student_t
from typer.testing import CliRunner

from bayes_scaling.backtest import backtest, marginal_lpd
from bayes_scaling.cli import app
from bayes_scaling.compare import CompareError, StackedPosterior, compare, stacked_backtest
from bayes_scaling.compiled import MODELS
from bayes_scaling.decide import recommend
from bayes_scaling.discrepancy import DiscrepancyRate
from bayes_scaling.laws import LAWS
from bayes_scaling.posterior import Posterior
from bayes_scaling.predict import law_draws, predict_loss
from bayes_scaling.priors import LOG_D_REF, LOG_N_REF
from bayes_scaling.spec import ModelSpec
from bayes_scaling.stacking import extrapolation_weights
from tests.simulate import simulate_runs

RUNS = simulate_runs(seed=3, runs_per_arch=25)
DENSE = RUNS[RUNS["arch"] == "dense"].reset_index(drop=True)
SPECS = {
    "chinchilla": ModelSpec(law="chinchilla", pooling="pooled", name="chinchilla"),
    "kaplan": ModelSpec(law="kaplan", pooling="pooled", name="kaplan"),
}
TINY = ["--draws", "150", "--tune", "150", "--chains", "2"]
SMALL = {"draws": 150, "tune": 150, "chains": 2}


@pytest.fixture(scope="module")
def fitted(small_fit):  # type: ignore[no-untyped-def]
    return {name: small_fit(DENSE, spec) for name, spec in SPECS.items()}


def test_stored_log_likelihood_is_the_models_student_t_density(fitted) -> None:  # type: ignore[no-untyped-def]
    posterior = fitted["chinchilla"]
    stored = posterior.idata["log_likelihood"]["log_loss"].to_numpy()
    assert stored.shape == (2, 150, len(DENSE))
    post = posterior.idata["posterior"]
    draw = {k: float(post[k].to_numpy()[1, 7].ravel()[0])
            for k in ("log_a", "alpha", "log_b", "beta", "log_e", "sigma", "nu")}  # fmt: skip
    run = DENSE.iloc[4]
    model_term = draw["log_a"] - draw["alpha"] * math.log(run["n_active"])
    data_term = draw["log_b"] - draw["beta"] * math.log(run["tokens"])
    mean = np.logaddexp(np.logaddexp(model_term, data_term), draw["log_e"])
    expected = student_t.logpdf(math.log(run["loss"]), draw["nu"], mean, draw["sigma"])
    assert stored[1, 7, 4] == pytest.approx(expected, rel=1e-9)


def test_table_has_loo_and_stacking_weights(fitted) -> None:  # type: ignore[no-untyped-def]
    result = compare(fitted)
    table = result.table
    for name, posterior in fitted.items():
        assert table.loc[name, "elpd_loo"] == pytest.approx(az.loo(posterior.idata).elpd)
    assert table["weight_loo"].sum() == pytest.approx(1.0)
    assert table["elpd_loo"].is_monotonic_decreasing
    assert set(json.loads(json.dumps(result.to_dict()))["hypotheses"][0]) >= {
        "hypothesis", "elpd_loo", "se", "weight_loo", "high_pareto_k"}  # fmt: skip


def test_high_pareto_k_is_warned_with_the_runs_and_advice(fitted) -> None:  # type: ignore[no-untyped-def]
    posterior = fitted["kaplan"]  # its short fit has an influential run at this seed
    k = az.loo(posterior.idata, pointwise=True).pareto_k
    high = [str(r) for r in k["run"].to_numpy()[k.to_numpy() > 0.7]]
    assert high, "the fixture no longer has a run with k > 0.7: pick another check"
    with pytest.warns(UserWarning, match=rf"{len(high)} run\(s\) with Pareto k > 0.7") as caught:
        result = compare({"kaplan": posterior})
    message = str(caught[0].message)
    assert all(run in message for run in high) and "backtest" in message
    assert result.table.loc["kaplan", "high_pareto_k"] == len(high)


def test_stacked_predictive_mixes_members_by_weight(fitted) -> None:  # type: ignore[no-untyped-def]
    points = {"n_active": [3e10, 1e8], "tokens": [6e11, 2e9]}
    only = StackedPosterior(fitted, {"chinchilla": 1.0, "kaplan": 0.0})
    # The law's draws alone: the same draws in another order, so the same quantiles.
    alone = predict_loss(fitted["chinchilla"], points, discrepancy=False)
    stacked = predict_loss(only, points, discrepancy=False)
    assert np.allclose(stacked["loss_median"], alone["loss_median"])
    assert np.allclose(stacked["loss_high_90"], alone["loss_high_90"])
    # With the discrepancy the slopes pair with other draws: equal to Monte Carlo error.
    alone = predict_loss(fitted["chinchilla"], points)
    stacked = predict_loss(only, points)
    assert np.allclose(stacked["loss_high_90"], alone["loss_high_90"], rtol=0.01)
    assert np.allclose(stacked["extrapolation"], alone["extrapolation"])
    mixed = StackedPosterior(fitted, {"chinchilla": 0.25, "kaplan": 0.75}, random_seed=1)
    assert {k: len(v) for k, v in mixed.picks.items()} == {"chinchilla": 75, "kaplan": 225}
    draws = law_draws(mixed, points)
    members = {n: law_draws(p, points) for n, p in fitted.items()}
    # every mixture draw is one of a member's draws (rows of the (draw, point) matrix)
    rows = {tuple(np.round(r, 12)) for m in members.values() for r in m}
    assert all(tuple(np.round(r, 12)) in rows for r in draws)
    a = recommend(only, 1e22, max_draws=100)
    b = recommend(fitted["chinchilla"], 1e22)
    assert a.n_active == pytest.approx(b.n_active, rel=0.1)


def test_extrapolation_weights_stack_the_runs_beyond_an_inner_cut(fitted, small_fit) -> None:  # type: ignore[no-untyped-def]
    # A hypothesis whose data exponent is pinned far from the truth (0.36) extrapolates badly
    # along the token axis: the within-data backtest by tokens must give it ~no weight.
    pinned = ModelSpec(law="chinchilla", pooling="pooled", name="pinned",
                       priors={"beta": {"median": 0.12, "sigma": 0.005}})  # fmt: skip
    posteriors = {"chinchilla": fitted["chinchilla"], "pinned": small_fit(DENSE, pinned)}
    weights, densities = extrapolation_weights(posteriors, "tokens", **SMALL)
    log_d = np.log(DENSE["tokens"])
    above = log_d > log_d.max() - (log_d.max() - log_d.min()) / 3
    assert list(densities) == ["chinchilla", "pinned"] and len(densities) == above.sum()
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["chinchilla"] > 0.9
    assert densities["chinchilla"].sum() > densities["pinned"].sum()
    result = compare(posteriors, extrapolation_cut="tokens", **SMALL)
    assert result.weights("extrapolation") == pytest.approx(weights, abs=1e-6)
    assert result.to_dict()["stacked_by"] == "extrapolation"
    with pytest.raises(CompareError, match="extrapolation_cut"):
        compare(posteriors).weights("extrapolation")


def test_calibrated_backtests_share_their_inner_refits_with_extrapolation_stacking() -> None:
    backtests = {
        name: backtest(DENSE, spec, "tokens", thresholds=[DENSE["tokens"].quantile(0.7)],
                       calibrated=True, **SMALL)
        for name, spec in SPECS.items()
    }  # fmt: skip
    for result in backtests.values():
        (refit,) = result.fits.values()
        assert refit.discrepancy is not None and "within-data" in refit.discrepancy.source
        assert ("tokens", (1 / 3,)) in refit.within
    fits_before = MODELS.hits + MODELS.misses
    scores = stacked_backtest(backtests, "extrapolation")
    assert MODELS.hits + MODELS.misses == fits_before  # no refit: calibration's are reused
    assert len(scores) == len(next(iter(backtests.values())).scores)
    with pytest.raises(CompareError, match="expected loo or extrapolation"):
        stacked_backtest(backtests, "backtest")


def test_stacked_predictive_keeps_each_members_own_discrepancy_rate(fitted) -> None:  # type: ignore[no-untyped-def]
    # chinchilla calibrated to no discrepancy at all, kaplan to a large one: a mixture that
    # puts all its weight on chinchilla must predict (and score) as chinchilla does, not with
    # the population prior that a single shared rate would fall back to.
    none = DiscrepancyRate(np.array([0.0, 0.05]), np.array([0.0, -np.inf]), source="none")
    large = DiscrepancyRate(np.array([0.0, 0.05]), np.array([-np.inf, 0.0]), source="large")
    members = {"chinchilla": replace(fitted["chinchilla"], discrepancy=none),
               "kaplan": replace(fitted["kaplan"], discrepancy=large)}  # fmt: skip
    far = {"n_active": [1e11], "tokens": [2e12]}
    only = StackedPosterior(members, {"chinchilla": 1.0, "kaplan": 0.0})
    alone = predict_loss(members["chinchilla"], far, discrepancy=False)
    stacked = predict_loss(only, far)
    assert stacked["loss_high_90"][0] == pytest.approx(alone["loss_high_90"][0], rel=1e-9)
    assert stacked["share_discrepancy"][0] == 0.0
    held = DENSE.nlargest(5, "tokens")
    assert np.allclose(only.log_density(held), marginal_lpd(members["chinchilla"], held))
    mixed = StackedPosterior(members, {"chinchilla": 0.5, "kaplan": 0.5})
    expected = np.logaddexp(marginal_lpd(members["chinchilla"], held),
                            marginal_lpd(members["kaplan"], held)) - np.log(2)  # fmt: skip
    assert np.allclose(mixed.log_density(held), expected)


def test_bad_comparisons_are_refused_saying_why(fitted) -> None:  # type: ignore[no-untyped-def]
    first = fitted["chinchilla"]
    other = Posterior(first.spec, first.runs.iloc[:-1], first.idata, first.sampler)
    with pytest.raises(CompareError, match=r"different run tables .*25 runs vs 24"):
        compare({"a": first, "b": other})
    with pytest.raises(CompareError, match="non-negative"):
        StackedPosterior(fitted, {"chinchilla": -1.0, "kaplan": 2.0})
    with pytest.raises(CompareError, match="non-negative"):
        StackedPosterior(fitted, {"nope": 1.0})


def test_cli_compare_and_backtest_json_plot_and_refusals(fitted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    files = []
    for name, posterior in fitted.items():
        files.append(str(posterior.save(tmp_path / f"{name}.nc")))
    plot = tmp_path / "compare.png"
    args = ["compare", *files, "--backtest", "--cut", "n_active", "--n-cuts", "1", *TINY,
            "--json", "--plot", str(plot)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.splitlines()[0])
    names = {row["hypothesis"] for row in payload["hypotheses"]}
    assert names == {"chinchilla", "kaplan"}
    for row in payload["hypotheses"]:
        for key in ("elpd_loo", "se", "weight_loo", "weight_backtest",
                    "backtest_coverage_new_run_90", "backtest_interval_score_90",
                    "backtest_median_abs_rel_error"):  # fmt: skip
            assert row[key] is not None and math.isfinite(row[key])
    assert payload["stacked_backtest"]["held_out"] > 0
    assert plot.stat().st_size > 10_000
    csv = tmp_path / "runs.csv"
    DENSE.to_csv(csv, index=False)
    result = runner.invoke(app, ["backtest", "--runs", str(csv), "--model",
                                 "loss/chinchilla", "--n-cuts", "2", *TINY, "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["cuts"]) == 2
    other = Posterior(fitted["kaplan"].spec, DENSE.iloc[:-1], fitted["kaplan"].idata)
    bad = {
        "--stack-by 'bma'": ["compare", *files, "--stack-by", "bma"],
        "different run tables": ["compare", files[0], str(other.save(tmp_path / "o.nc"))],
        "neither a file nor a shipped": ["compare", "--runs", str(csv), "--model", "nope"],
        "nothing to fit": ["backtest", "--runs", str(csv), "--model", "chinchilla",
                           "--below", "10", *TINY],
        "nothing held out": ["backtest", "--runs", str(csv), "--model", "chinchilla",
                             "--cut", "n_active", "--below", "1e12", *TINY],
        "unknown cut": ["backtest", "--runs", str(csv), "--model", "chinchilla",
                        "--cut", "params", *TINY],
        "exactly one of --runs": ["backtest", "--model", "chinchilla"],
    }  # fmt: skip
    for fragment, command in bad.items():
        result = runner.invoke(app, command)
        assert result.exit_code == 1, (fragment, result.output)
        assert fragment in result.output and "Traceback" not in result.output


def test_kaplan_law_is_kaplans_published_form_at_the_reference_scales() -> None:
    # Kaplan et al. 2020, eq. 1.5: L = ((N_c / N)^(a_N / a_D) + D_c / D)^a_D.
    n_c, d_c, a_n, a_d = 8.8e13, 5.4e13, 0.076, 0.095
    rho = a_n / a_d
    log_a_ref = rho * a_d * (math.log(n_c) - LOG_N_REF)
    log_r_ref = math.log(d_c) - rho * math.log(n_c) + rho * LOG_N_REF - LOG_D_REF
    params = {"log_a_ref": log_a_ref, "rho": rho, "log_r_ref": log_r_ref, "beta": a_d,
              "log_e": -60.0}  # fmt: skip
    for n, d in ((1e9, 1e10), (1e7, 3e11), (3e11, 1e9)):
        inputs = {"log_n": np.array([math.log(n)]), "log_d": np.array([math.log(d)])}
        published = ((n_c / n) ** rho + d_c / d) ** a_d
        assert math.exp(LAWS["kaplan"].log_loss(inputs, params)[0]) == pytest.approx(published)


def test_shifted_law_is_chinchilla_above_n0_and_flat_below() -> None:
    params = {"log_a": 6.0, "alpha": 0.34, "log_b": 7.0, "beta": 0.3, "log_e": 0.5}
    big = {"log_n": np.log([1e9, 1e10]), "log_d": np.log([1e10, 1e11])}
    tiny_n0 = LAWS["shifted"].log_loss(big, {**params, "log_n0": math.log(1.0)})
    assert np.allclose(tiny_n0, LAWS["chinchilla"].log_loss(big, params), rtol=1e-9)
    small = {"log_n": np.log([1e3, 1e4]), "log_d": np.log([1e10, 1e10])}
    flat = LAWS["shifted"].log_loss(small, {**params, "log_n0": math.log(1e7)})
    assert abs(flat[1] - flat[0]) < 1e-3 * abs(
        LAWS["chinchilla"].log_loss(small, params)[1]
        - LAWS["chinchilla"].log_loss(small, params)[0]
    )


def test_loo_pit_is_near_uniform_when_calibrated_and_piles_in_the_tails_when_too_sure(
    fitted,
) -> None:  # type: ignore[no-untyped-def]
    from bayes_scaling.compare import loo_pit

    posterior = fitted["chinchilla"]  # the law and noise the runs were simulated from
    pit = loo_pit(posterior)
    assert pit.shape == (len(DENSE),) and ((pit >= 0) & (pit <= 1)).all()
    assert np.array_equal(pit, loo_pit(posterior))  # seeded
    tails = np.mean((pit < 0.05) | (pit > 0.95))
    assert tails <= 0.25
    # The same draws with the run noise 4x too small: intervals far too narrow.
    tree = posterior.idata.copy()
    post = tree["posterior"].to_dataset()
    tree["posterior"] = xr.DataTree(post.assign(sigma=post["sigma"] / 4))
    del tree["log_likelihood"]  # recomputed from the narrowed noise
    narrow = loo_pit(replace(posterior, idata=tree))
    assert np.mean((narrow < 0.05) | (narrow > 0.95)) >= 0.45
    assert np.mean((narrow < 0.05) | (narrow > 0.95)) > tails + 0.3
