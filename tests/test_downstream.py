"""Downstream accuracy laws: hypothesis files are checked key by key, rows at chance are left out
with a reason, the direct law recovers the exponents that made simulated accuracies, and the
backtest scores what it predicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_scaling.downstream import (
    CHANCE,
    DownstreamError,
    accuracy_table,
    backtest_accuracy,
    fit_accuracy,
    read_downstream_spec,
)

TASKS = ("arc_easy", "piqa")
TRUTH = {"arc_easy": (-0.6, 0.35, -1.0, 0.25), "piqa": (-0.2, 0.30, -0.8, 0.30)}


def _simulated(seed: int = 0) -> pd.DataFrame:
    """Checkpoints of five model sizes whose accuracies follow -ln Q = A/N^a + B/D^b exactly,
    with small noise on ln(-ln Q)."""
    rng = np.random.default_rng(seed)
    n = np.repeat([7e7, 1.6e8, 4e8, 1e9, 2.5e9, 6e9], 6)
    d = np.tile(np.geomspace(1e10, 3e11, 6), 6)
    table = pd.DataFrame({"run_id": [f"r{i}" for i in range(len(n))], "n_active": n,
                          "tokens": d, "loss": 2.0, "model": [f"m{x:g}" for x in n]})  # fmt: skip
    for task, (log_a, alpha, log_b, beta) in TRUTH.items():
        y = np.logaddexp(log_a - alpha * np.log(n / 1e9), log_b - beta * np.log(d / 1e11))
        q = np.exp(-np.exp(y + rng.normal(0, 0.01, len(n))))
        table[f"{task}_acc"] = CHANCE[task] + (1 - CHANCE[task]) * q
    return table


def test_hypothesis_files_are_checked_key_by_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    shipped = read_downstream_spec("direct-nd")
    assert shipped.law == "direct-nd" and shipped.draws == 2000 and "piqa" in shipped.tasks
    assert read_downstream_spec("downstream/two-stage").law == "two-stage"
    head = 'kind = "downstream"\n'
    cases = {
        'kind = "loss"\nlaw = "direct-nd"': "key 'kind'",
        head + 'law = "sigmoid"': "unknown downstream law",
        head + 'law = "direct-nd"\ntasks = ["nope"]': "unknown task",
        head + 'law = "direct-nd"\nmin_tokens = "5e9"': "'min_tokens' must be a number",
        head + 'law = "direct-nd"\nextra = 1': "unknown key",
        head + 'law = "direct-c"\nratio_tolerance = 0.5': "ratio_tolerance",
        head + 'law = "direct-nd"\n[sampler]\ndraws = true': "'draws' must be a number",
        head + 'law = "direct-nd"\n[sampler]\ndraws = 1.5': "draws must be a whole number",
        head + 'law = "direct-nd"\n[sampler]\ntarget_accept = 1.2': "target_accept",
        "law = [": "not valid TOML",
    }
    for text, fragment in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(DownstreamError, match=fragment) as error:
            read_downstream_spec(path)
        assert str(path) in str(error.value)
    with pytest.raises(DownstreamError, match="neither a file"):
        read_downstream_spec("no-such-law")


def test_rows_at_chance_are_left_out_with_a_reason() -> None:
    runs = _simulated().head(3).copy()
    runs.loc[1, "piqa_acc"] = 0.49  # below chance (0.5)
    runs.loc[2, "arc_easy_acc"] = np.nan
    kept, left = accuracy_table(runs, TASKS)
    assert len(kept) + len(left) == 6
    assert set(zip(left["run_id"], left["task"], strict=True)) == {
        ("r1", "piqa"),
        ("r2", "arc_easy"),
    }
    at_chance = "accuracy at or below chance (Q <= 0) or perfect (Q >= 1)"
    assert set(left["reason"]) == {"accuracy missing", at_chance}
    q = kept.set_index(["run_id", "task"]).loc[("r0", "piqa"), "q"]
    assert q == pytest.approx((runs.loc[0, "piqa_acc"] - 0.5) / 0.5)
    with pytest.raises(DownstreamError, match="no column 'sciq_acc'"):
        accuracy_table(runs, ("sciq",))
    percent = runs.assign(piqa_acc=runs["piqa_acc"] * 100)
    with pytest.raises(
        DownstreamError, match=r"column 'piqa_acc', run r0: accuracy .* not a fraction"
    ):
        accuracy_table(percent, TASKS)
    mixed = pd.concat([_simulated().assign(num_fewshot=0), _simulated().assign(num_fewshot=5)])
    with pytest.raises(DownstreamError, match="mixes evaluation protocols"):
        fit_accuracy(mixed, "direct-nd")


SPEC = 'kind = "downstream"\nlaw = "direct-nd"\ntasks = ["arc_easy", "piqa"]\nmin_tokens = 1e9\n'


@pytest.fixture(scope="module")
def backtested(tmp_path_factory):  # type: ignore[no-untyped-def]
    spec = tmp_path_factory.mktemp("spec") / "two.toml"
    spec.write_text(SPEC)
    runs = _simulated()
    held = runs["n_active"] >= 6e9
    posterior, predicted = backtest_accuracy(runs, str(spec), held, draws=300, tune=400)
    return spec, runs, held, posterior, predicted


def test_direct_law_recovers_exponents_and_backtest_scores_held_out_models(backtested) -> None:  # type: ignore[no-untyped-def]
    spec, runs, held, posterior, predicted = backtested
    assert posterior.tasks == list(TASKS) and len(posterior.table) == 2 * (~held).sum()
    for task, (_, alpha, _, beta) in TRUTH.items():
        i = posterior.tasks.index(task)
        for name, value in (("alpha", alpha), ("beta", beta)):
            draws = posterior.idata["posterior"][name].to_numpy()[..., i].ravel()
            assert np.quantile(draws, 0.01) < value < np.quantile(draws, 0.99), (task, name)
    assert len(predicted) == 2 * held.sum()
    assert predicted["rel_error"].max() < 0.02  # the law is the truth: small error at 2.4x N
    assert predicted["covered"].mean() >= 0.75
    assert (predicted["new_low"] <= predicted["acc_low"]).all()  # noise widens the interval
    manual = (predicted["acc_median"] - predicted["acc"]).abs() / predicted["acc"]
    assert np.allclose(manual, predicted["rel_error"])
    # Same seed, same posterior.
    again = fit_accuracy(runs[~held], str(spec), draws=300, tune=400)
    assert np.array_equal(again.idata["posterior"]["alpha"].to_numpy(),
                          posterior.idata["posterior"]["alpha"].to_numpy())  # fmt: skip


def test_accuracy_posterior_file_round_trips_and_refuses_damage(backtested, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bayes_scaling.accuracy_file import is_accuracy_file
    from bayes_scaling.downstream import AccuracyPosterior

    _, _, _, posterior, predicted = backtested
    path = posterior.save(tmp_path / "acc.nc")
    assert is_accuracy_file(path) and not is_accuracy_file(tmp_path / "missing.nc")
    loaded = AccuracyPosterior.load(path)
    assert loaded.spec == posterior.spec and loaded.tasks == posterior.tasks
    points = predicted[["task", "n_active", "tokens"]]
    pd.testing.assert_frame_equal(loaded.predict(points), posterior.predict(points))
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = b"\x00" * 8
    damaged = tmp_path / "damaged.nc"
    damaged.write_bytes(bytes(data))
    with pytest.raises(DownstreamError, match=r"damaged\.nc"):
        AccuracyPosterior.load(damaged)


def test_cli_fits_and_predicts_accuracy(backtested, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from bayes_scaling.cli import app

    spec, runs, _, posterior, _ = backtested
    posterior.save(tmp_path / "acc.nc")
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(tmp_path / "acc.nc"), "--n-active", "6e9",
                                 "--tokens", "3e11", "--task", "piqa", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["predictions"]
    expected = posterior.predict(pd.DataFrame({"task": ["piqa"], "n_active": [6e9],
                                               "tokens": [3e11]}))  # fmt: skip
    assert row["acc_median"] == pytest.approx(expected["acc_median"].iloc[0])
    assert row["acc_low"] < row["acc_median"] < row["acc_high"]
    bad = runner.invoke(app, ["predict", str(tmp_path / "acc.nc"), "--n-active", "6e9",
                              "--tokens", "3e11", "--task", "mmlu"])  # fmt: skip
    assert bad.exit_code == 1 and "this posterior has ['arc_easy', 'piqa']" in bad.output
    plot = runner.invoke(app, ["predict", str(tmp_path / "acc.nc"), "--n-active", "6e9",
                               "--tokens", "3e11", "--plot", str(tmp_path / "x.png")])  # fmt: skip
    assert plot.exit_code == 1 and "--plot: not used by an accuracy posterior" in plot.output
    csv = tmp_path / "runs.csv"
    runs.assign(source="simulated", arch="dense").to_csv(csv, index=False)
    out = tmp_path / "fitted.nc"
    fitted = runner.invoke(app, ["accuracy", "fit", "--runs", str(csv), "--model", str(spec),
                                 "--out", str(out), "--draws", "100", "--tune", "100"])  # fmt: skip
    assert fitted.exit_code == 0, fitted.output
    assert "72 (run, task) rows" in fitted.output and out.exists()
    refused = runner.invoke(app, ["accuracy", "fit", "--runs", str(csv), "--model", "nope",
                                  "--out", str(out)])  # fmt: skip
    assert refused.exit_code == 1 and "neither a file nor a shipped" in refused.output


def test_report_adds_the_recommended_runs_accuracy(backtested, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from bayes_scaling.cli import app
    from tests.simulate import simulate_runs

    posterior = backtested[3]
    posterior.save(tmp_path / "acc.nc")
    loss_runs = simulate_runs(seed=3, runs_per_arch=20)
    csv = tmp_path / "loss.csv"
    loss_runs[loss_runs["arch"] == "dense"].to_csv(csv, index=False)
    out = tmp_path / "page"
    args = ["report", "--runs", str(csv), "--accuracy", str(tmp_path / "acc.nc"), "--out",
            str(out), "--target-flops", "1e22", "--draws", "100", "--tune", "100"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    best = summary["targets"][0]["recommended"]
    at = {"task": posterior.tasks, "n_active": best["n_active"], "tokens": best["tokens"]}
    expected = posterior.predict(pd.DataFrame(at))
    assert [a["task"] for a in summary["accuracy"]] == posterior.tasks
    for fact, (_, row) in zip(summary["accuracy"], expected.iterrows(), strict=True):
        assert fact["median"] == pytest.approx(row["acc_median"])
        assert fact["interval"][0] < fact["median"] < fact["interval"][1]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert '<section id="accuracy">' in page and f"{expected['acc_median'].iloc[0]:.3f}" in page
    bad = CliRunner().invoke(app, ["report", "--runs", str(csv), "--accuracy", str(csv)])
    assert bad.exit_code == 1 and "--accuracy" in bad.output and "Traceback" not in bad.output
